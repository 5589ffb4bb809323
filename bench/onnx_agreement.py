"""Does int8 ONNX keep a trained model's predictions? Top-1 agreement with torch fp32.

For a trained model (a run dir or model folder), its SynthToL species list and test
images: export it (fp32 + int8), build the tree-of-life index with torch, and predict
every test image at species rank with torch fp32, ONNX fp32 and ONNX int8 (the library
classes ``predict`` uses). Reports top-1 agreement with torch and the largest difference
of any top-5 score (same image, same rank position).

    python bench/onnx_agreement.py --model RUN_OR_MODEL --synth SYNTH_ROOT [--images 600]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--synth", required=True, help="SynthToL root (species.csv, test/)")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from taxoclip.predict import TreeOfLifeClassifier, build_index, read_taxa
    from taxoclip.runtime import open_text_encoder
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    synth = Path(args.synth)
    images = sorted(str(p) for p in (synth / "test").rglob("*.jpg"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        out, index_dir = Path(tmp) / "x", Path(tmp) / "index"
        text = open_text_encoder(args.model, "torch")
        build_index(text, read_taxa(synth / "species.csv")).save(index_dir)
        export_onnx(ExportOnnxConfig(model=args.model, out=str(out), int8=True, text=False,
                                     index=str(index_dir)))  # fmt: skip
        runs, seconds = {}, {}
        start = time.perf_counter()
        runs["torch"] = TreeOfLifeClassifier(model_str=str(out), index=str(index_dir)).predict(
            images, "species", k=5, batch_size=32)  # fmt: skip
        seconds["torch"] = time.perf_counter() - start
        for runtime in ("onnx", "onnx-int8"):
            start = time.perf_counter()
            classifier = TreeOfLifeClassifier(
                model_str=str(out), index=str(index_dir), runtime=runtime
            )
            runs[runtime] = classifier.predict(images, "species", k=5, batch_size=32)
            seconds[runtime] = time.perf_counter() - start
        export_record = json.loads((out / "export.json").read_text())["agreement"]

    def by_image(rows):
        grouped = {}
        for row in rows:
            grouped.setdefault(row["file_name"], []).append(row)
        return grouped

    reference = by_image(runs["torch"])
    report = {"model": args.model, "images": len(images), "taxa": None, "seconds": seconds,
              "export_record": export_record}  # fmt: skip
    report["taxa"] = len(read_taxa(synth / "species.csv"))
    for runtime in ("onnx", "onnx-int8"):
        other = by_image(runs[runtime])
        same = sum(reference[k][0]["species"] == other[k][0]["species"] for k in reference)
        top1_diff = max(abs(reference[k][0]["score"] - other[k][0]["score"]) for k in reference)
        any_diff = max(abs(a["score"] - b["score"]) for k in reference
                       for a, b in zip(reference[k], other[k], strict=True))  # fmt: skip
        report[runtime] = {"top1_agreement": same / len(reference), "same": same,
                           "max_top1_score_diff": top1_diff, "max_top5_score_diff": any_diff}  # fmt: skip
    print(json.dumps(report, indent=2))
    name = args.name or Path(args.model).name
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / f"onnx_agreement_{name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

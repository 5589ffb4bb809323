"""MegaDetector round trip on SynthToL composites: species accuracy on crops vs single images.

Builds a camera-trap folder from a SynthToL folder's test images (several animals per
picture, scaled, at known boxes) and its MegaDetector batch output, runs
``taxoclip predict --detections`` on it, and the same test images one by one through
``taxoclip predict``; prints top-1 species accuracy of both, detections classified, and
the time each took. Needs a trained model (e.g. a ``taxoclip demo`` run) and its index::

    python bench/megadetector_roundtrip.py --synth demo_out/synth --model demo_out/run \
        --index demo_out/index [--pictures 100] [--per-picture 3] [--scale 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.predict.composites: the builder the tests use

from tests.predict.composites import make_camera_trap  # noqa: E402

from taxoclip.cli import main  # noqa: E402


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    code = main(argv)
    if code not in (0, 3):
        raise SystemExit(f"taxoclip {' '.join(argv)} exited {code}")
    return time.perf_counter() - start


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--pretrained")
    parser.add_argument("--index", required=True)
    parser.add_argument("--pictures", type=int, default=100)
    parser.add_argument("--per-picture", type=int, default=3)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="md-bench-"))
    md_path, truth_path = make_camera_trap(
        args.synth, out / "camera", args.pictures, args.per_picture, args.scale, seed=0
    )
    truth = list(csv.DictReader(truth_path.open()))
    model = ["--model", args.model, "--index", args.index, "-q"]
    if args.pretrained:
        model += ["--pretrained", args.pretrained]
    run(
        [
            "predict",
            str(args.synth / "test" / truth[0]["source"]),
            "--output",
            str(out / "warm.csv"),
            *model,
        ]
    )  # imports and first model load: not timed below
    result = out / "md_taxoclip.json"
    crops_s = run(
        [
            "predict",
            str(out / "camera"),
            "--detections",
            str(md_path),
            "--output",
            str(result),
            *model,
        ]
    )
    rows = {
        (r["file"], r["detection"]): r for r in csv.DictReader(result.with_suffix(".csv").open())
    }
    crop_hits = sum(rows[(t["file"], t["detection"])]["label"] == t["species"] for t in truth)
    singles = [str(args.synth / "test" / t["source"]) for t in truth]
    single_csv = out / "single.csv"
    single_s = run(["predict", *singles, "--k", "1", "--output", str(single_csv), *model])
    single = {r["file_name"]: r for r in csv.DictReader(single_csv.open())}
    with (args.synth / "test" / "metadata.csv").open(newline="") as handle:
        meta = {r["filepath"]: r for r in csv.DictReader(handle)}
    lines = []
    for rank in ("species", "genus", "family"):
        crop = sum(
            rows[(t["file"], t["detection"])][rank] == meta[t["source"]][rank] for t in truth
        )
        alone = sum(
            single[s][rank] == meta[t["source"]][rank] for s, t in zip(singles, truth, strict=True)
        )
        lines.append(
            f"{rank}: crops {crop / len(truth):.3f}, single images {alone / len(truth):.3f}"
        )
    doc = json.loads(result.read_text())
    n_classified = sum("classifications" in d for i in doc["images"] for d in i["detections"])
    n = len(truth)
    print(
        f"pictures {args.pictures} x {args.per_picture} animals (scale {args.scale}), "
        f"{sum(len(i['detections']) for i in doc['images'])} detections, "
        f"{n_classified} classified"
    )
    print(f"top-1 species accuracy: crops {crop_hits}/{n} = {crop_hits / n:.3f}")
    print("top-1 (the best species' taxon) accuracy by rank: " + "; ".join(lines))
    print(f"time: --detections {crops_s:.1f} s; single images {single_s:.1f} s; folder {out}")


if __name__ == "__main__":
    main_bench()

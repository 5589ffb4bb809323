"""int8 that agrees (issue #20): int8 ONNX image towers against torch fp32 on trained models.

For each trained model (a run dir or model folder) and its SynthToL world: build the
species index with torch, export the image tower to ONNX fp32, quantise it to int8 with
each method, and predict the species of the SynthToL test images (tree-of-life top-1).
Prints one row per model and method: top-1 agreement of int8 with torch fp32, top-1
accuracy against the truth (fp32 and int8), images/s of the image tower (torch fp32,
ONNX fp32, ONNX int8, on the same preprocessed pixels, batch 32; every runtime in turn,
``--repeats`` rounds, medians) and the int8 speed ratio over ONNX fp32 (what `auto` runs
on an exported folder) and over torch fp32.
Calibration images come from the world's *train* split (never the test images).

    python bench/int8_agreement.py --synth SYNTH --model t32=RUN [--model b16=RUN ...]
        [--images 1344] [--calibration 64] [--methods static,static-attn,dynamic,dynamic-old]

Methods: ``static`` (the export's default: QDQ, MinMax, per-channel weights, only the MLP
MatMuls int8, sensitive nodes fp32), ``static-attn`` (the attention's qkv and out
projections int8 too), ``static-sym`` (int8 symmetric activations), ``static-entropy``,
``static-all`` (static, nothing kept fp32), ``dynamic`` (per-channel, the same nodes as
``static`` fp32), ``dynamic-old`` (quantize_dynamic as before: QInt8, per-tensor, every node).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 32


def _quantize(method: str, source: Path, target: Path, pixels: np.ndarray) -> dict:
    from taxoclip.runtime import quantize as q

    if method == "static":
        return q.quantize_image(source, target, pixels, "bench calibration")
    roles = q.sensitive_nodes(source)
    exclude = [name for names in roles.values() for name in names]
    if method == "static-sym":
        return q.quantize_static_file(
            source, target, pixels, exclude=exclude, symmetric_activations=True
        )
    if method == "static-entropy":
        return q.quantize_static_file(source, target, pixels, exclude=exclude, calibrate="Entropy")
    if method == "static-attn":  # the attention projections int8 as well
        keep = roles["patch_embed"] + roles["projection"] + roles["attention_logits"]
        return q.quantize_static_file(source, target, pixels, exclude=keep)
    if method == "static-all":
        return q.quantize_static_file(source, target, pixels, op_types=("MatMul", "Gemm", "Conv"))
    if method == "dynamic":
        return q.quantize_dynamic_file(source, target, exclude=exclude, per_channel=True)
    if method == "dynamic-old":
        return q.quantize_dynamic_file(source, target)
    raise SystemExit(f"unknown method {method}")


def _spread(rows: list[dict], n: int) -> list[dict]:
    if n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def _features(fn, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])


def _rate(fn, pixels: np.ndarray) -> float:
    fn(pixels[:BATCH])  # warm-up
    start = time.perf_counter()
    _features(fn, pixels)
    return len(pixels) / (time.perf_counter() - start)


def run_model(
    name: str,
    model: str,
    synth: Path,
    n_images: int,
    n_calib: int,
    methods: list[str],
    repeats: int = 3,
    time_images: int = 512,
) -> list[dict]:
    import torch
    from PIL import Image

    from taxoclip.models import load_model
    from taxoclip.predict import build_index, read_taxa
    from taxoclip.runtime import open_text_encoder
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx
    from taxoclip.runtime.onnx import IMAGE_ONNX, OnnxImageEncoder, open_session
    from taxoclip.runtime.preprocess import l2_normalize

    def read(split: str, n: int) -> tuple[list[Path], list[str]]:
        with (synth / split / "metadata.csv").open(newline="", encoding="utf-8") as handle:
            rows = _spread(list(csv.DictReader(handle)), n)
        return [synth / split / r["filepath"] for r in rows], [r["species"] for r in rows]

    test_files, truth = read("test", n_images)
    calib_files, _ = read("train", n_calib)
    index = build_index(open_text_encoder(model, "torch"), read_taxa(synth / "species.csv"))
    species = np.array([f"{ranks[5]} {ranks[6]}" for ranks, _ in index.names])
    matrix = index.embeddings.astype(np.float32)
    truth = np.array(truth)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x"
        export_onnx(ExportOnnxConfig(model=model, out=str(out), text=False))
        fp32 = OnnxImageEncoder(out)

        def load(files):
            images = []
            for f in files:
                with Image.open(f) as im:
                    images.append(im.convert("RGB"))
            return fp32._pre.batch(images)

        pixels, calibration = load(test_files), load(calib_files)
        loaded = load_model(str(out))
        tower = loaded.model.eval()
        torch.set_num_threads(torch.get_num_threads())

        def torch_fn(batch):
            with torch.inference_mode():
                return tower.encode_image(torch.from_numpy(batch)).float().numpy()

        def top1(features):
            return (l2_normalize(features) @ matrix).argmax(1)

        runners = {"torch": torch_fn, "onnx": lambda b: fp32.encode_pixels(b, normalize=False)}
        records, quant_s = {}, {}
        for method in methods:
            start = time.perf_counter()
            target = out / f"int8-{method}.onnx"
            records[method] = _quantize(method, out / IMAGE_ONNX, target, calibration)
            quant_s[method] = time.perf_counter() - start
            session = open_session(target)
            runners[method] = lambda b, s=session: s.run(None, {"pixels": b})[0]
        features = {key: _features(fn, pixels) for key, fn in runners.items()}
        # speed: every runtime in turn, `repeats` rounds, medians (a shared machine's load
        # drifts; interleaving exposes each runtime to the same drift)
        rates: dict[str, list[float]] = {key: [] for key in runners}
        timed = pixels[: min(len(pixels), time_images)]
        for _ in range(repeats):
            for key, fn in runners.items():
                rates[key].append(_rate(fn, timed))
        rate = {key: float(np.median(values)) for key, values in rates.items()}

        ref = features["torch"]
        ref_top = top1(ref)
        fp32_acc = float((species[ref_top] == truth).mean())
        onnx_same = float((top1(features["onnx"]) == ref_top).mean())
        for method in methods:
            feats = features[method]
            top = top1(feats)
            cos = (l2_normalize(feats) * l2_normalize(ref)).sum(1)
            row = {
                "model": name,
                "method": method,
                "images": len(pixels),
                "taxa": len(species),
                "onnx_fp32_agreement": onnx_same,
                "int8_agreement": float((top == ref_top).mean()),
                "fp32_accuracy": fp32_acc,
                "int8_accuracy": float((species[top] == truth).mean()),
                "min_cosine": float(cos.min()),
                "mean_cosine": float(cos.mean()),
                "torch_img_s": rate["torch"],
                "onnx_fp32_img_s": rate["onnx"],
                "int8_img_s": rate[method],
                "int8_over_onnx_fp32": rate[method] / rate["onnx"],
                "int8_over_torch": rate[method] / rate["torch"],
                "timed_images": len(timed),
                "rounds": {key: rates[key] for key in ("torch", "onnx", method)},
                "quantize_s": quant_s[method],
                "record": records[method],
                "size_mb": (out / f"int8-{method}.onnx").stat().st_size / 1e6,
                "fp32_size_mb": (out / IMAGE_ONNX).stat().st_size / 1e6,
            }
            print(json.dumps({k: v for k, v in row.items() if k != "record"}), flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict], load: str) -> str:
    lines = [
        f"load: {load}",
        "| model | method | int8 top-1 = torch | fp32 acc | int8 acc | Δ acc (pts) | min cos "
        "| torch img/s | ONNX fp32 img/s | int8 img/s | int8 / ONNX fp32 | int8 / torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {100 * r['int8_agreement']:.1f} % "
            f"| {100 * r['fp32_accuracy']:.1f} % | {100 * r['int8_accuracy']:.1f} % "
            f"| {100 * (r['int8_accuracy'] - r['fp32_accuracy']):+.1f} | {r['min_cosine']:.4f} "
            f"| {r['torch_img_s']:.0f} | {r['onnx_fp32_img_s']:.0f} | {r['int8_img_s']:.0f} "
            f"| {r['int8_over_onnx_fp32']:.2f}× | {r['int8_over_torch']:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", required=True, help="SynthToL root (species.csv, train/, test/)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=RUN")
    parser.add_argument("--images", type=int, default=100000, help="test images (spread)")
    parser.add_argument("--calibration", type=int, default=64, help="train images to calibrate")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (medians)")
    parser.add_argument("--time-images", type=int, default=512, help="test images timed")
    parser.add_argument("--methods", default="static,static-attn,dynamic,dynamic-old")
    parser.add_argument("--out", default=str(HERE / "out" / "int8_agreement.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = []
    for spec in args.model:
        name, _, model = spec.partition("=")
        rows += run_model(
            name,
            model or name,
            Path(args.synth),
            args.images,
            args.calibration,
            args.methods.split(","),
            args.repeats,
            args.time_images,
        )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(table(rows, load))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"load": load, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

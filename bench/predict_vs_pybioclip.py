"""``taxoclip predict`` against pybioclip, side by side on the same model, index and images.

A tiny 224-px open_clip model and a tree-of-life index built by ``taxoclip index`` are
staged in a local Hugging Face cache as ``hf-hub:imageomics/bioclip-2`` and its
TreeOfLife-200M embeddings (pybioclip's tree-of-life mode accepts no other model), and
both tools run offline on the same SynthToL images:

(a) CLI wall time of the whole command (start-up, model load, every image, CSV written),
    each tool's default settings (pybioclip: batch 10 and torch.compile, timed with its
    compile cache warm and cold; taxoclip: batch 32, no decoding workers on 2 cores);
(b) API images/s of ``TreeOfLifeClassifier.predict`` after construction and a warm-up
    call, batch 10 for both;
(c) agreement: top-1 species identical for every image, every score within 1e-4.

Runs alternate between the tools; each figure is the best of ``--repeats``.

    python bench/predict_vs_pybioclip.py [--images 500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "predict"

API = r"""
import json, sys, time

images, mode, index = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "pybioclip":
    from bioclip import Rank, TreeOfLifeClassifier
    classifier = TreeOfLifeClassifier(device="cpu")
else:
    from taxoclip.predict import Rank, TreeOfLifeClassifier
    classifier = TreeOfLifeClassifier(model_str="hf-hub:imageomics/bioclip-2", workers=0)
classifier.predict(images[:20], Rank.SPECIES, k=5)  # warm-up (pybioclip compiles here)
start = time.perf_counter()
classifier.predict(images, Rank.SPECIES, k=5)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def prepare(n_images: int) -> tuple[list[str], dict[str, str]]:
    from taxoclip.models import create_model, load_model, save_model
    from taxoclip.models.hubcache import stage_index, stage_model_folder
    from taxoclip.predict import build_index, read_taxa
    from taxoclip.synth import SynthConfig, generate

    data = OUT / "synth"
    if not (data / "synth.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        generate(
            data,
            SynthConfig(species=100, images_per_species=10, image_size=64, seed=1),
            progress=False,
        )
    images = sorted(str(p) for p in data.rglob("*.jpg"))[:n_images]
    model_dir, index_dir, hf_home = OUT / "t224", OUT / "index", OUT / "hf"
    if not model_dir.exists():
        loaded = create_model("taxoclip-vit-t224", seed=0)
        save_model(loaded.model, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
    if not index_dir.exists():
        loaded = load_model(model_dir)
        build_index(loaded.model, loaded.tokenizer, read_taxa(data / "species.csv")).save(index_dir)
    stage_model_folder(hf_home, "imageomics/bioclip-2", model_dir)
    stage_index(hf_home, "imageomics/TreeOfLife-200M", index_dir)
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(OUT / "inductor"),
    }
    return images, env


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return elapsed


def read_predictions(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["file_name"], []).append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    images, env = prepare(args.images)
    bin_dir = Path(sys.executable).parent
    ours_csv, theirs_csv = OUT / "taxoclip.csv", OUT / "pybioclip.csv"
    cli = {"taxoclip": [], "pybioclip": [], "pybioclip (cold compile cache)": []}
    api = {"taxoclip": [], "pybioclip": []}
    for _ in range(args.repeats):
        # A first run, or any run in a fresh container: torch.compile starts from nothing.
        cold = {**env, "TORCHINDUCTOR_CACHE_DIR": str(OUT / f"inductor-cold-{time.time_ns()}")}
        cli["pybioclip (cold compile cache)"].append(
            timed([str(bin_dir / "bioclip"), "predict", *images, "--output", str(theirs_csv)], cold)
        )
        shutil.rmtree(cold["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
        cli["pybioclip"].append(
            timed([str(bin_dir / "bioclip"), "predict", *images, "--output", str(theirs_csv)], env)
        )
        cli["taxoclip"].append(
            timed(
                [
                    str(bin_dir / "taxoclip"),
                    "predict",
                    *images,
                    "--output",
                    str(ours_csv),
                    "--offline",
                    "-q",
                ],
                env,
            )  # fmt: skip
        )
        for tool in ("pybioclip", "taxoclip"):
            done = subprocess.run([sys.executable, "-c", API, json.dumps(images), tool, ""],
                                  capture_output=True, text=True, env=env, check=True)  # fmt: skip
            api[tool].append(
                len(images) / json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
            )

    ours, theirs = read_predictions(ours_csv), read_predictions(theirs_csv)
    same_top1 = sum(ours[k][0]["species"] == theirs[k][0]["species"] for k in theirs)
    max_diff = max(
        abs(float(a["score"]) - float(b["score"]))
        for k in theirs
        for a, b in zip(ours[k], theirs[k], strict=True)
    )
    import torch

    cpu = cpu_name()
    best_cli = {tool: min(times) for tool, times in cli.items()}
    best_api = {tool: max(rates) for tool, rates in api.items()}
    print(
        f"command: python bench/predict_vs_pybioclip.py --images {len(images)} --repeats {args.repeats}"
    )
    print(f"machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"model taxoclip-vit-t224 staged as hf-hub:imageomics/bioclip-2; index of 100 taxa")  # fmt: skip
    print()
    print("| measure | pybioclip 2.1.6 | taxoclip | ratio |")
    print("|---|---:|---:|---:|")
    for label, key in (("warm", "pybioclip"), ("cold", "pybioclip (cold compile cache)")):
        print(f"| CLI wall time, {len(images)} images, pybioclip compile cache {label} (s) | "
              f"{best_cli[key]:.1f} | {best_cli['taxoclip']:.1f} | "
              f"{best_cli[key] / best_cli['taxoclip']:.2f}× faster |")  # fmt: skip
    print(f"| API images/s | {best_api['pybioclip']:.0f} | {best_api['taxoclip']:.0f} | "
          f"{best_api['taxoclip'] / best_api['pybioclip']:.2f}× |")  # fmt: skip
    print(f"| identical top-1 | | {same_top1}/{len(theirs)} | |")
    print(f"| largest score difference | | {max_diff:.2e} | |")


if __name__ == "__main__":
    main()

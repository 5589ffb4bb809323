"""Training throughput: ``taxoclip train`` against open_clip's own trainer (and, with
``--old-src``, against an older taxoclip's data path), side by side.

Same shards (SynthToL), same model config and initial weights (a saved
``taxoclip-vit-t32`` folder), same batch size, one CPU process each, the same number of
DataLoader workers; the two runs alternate so load on the shared machine hits both.
Each tool's steady-state images/s comes from its own log (ours: ``metrics.jsonl``
windows; open_clip: the ``Batch (t)`` average of each logging window), first window
dropped as warm-up.

Stock open_clip training cannot read WebDataset shards with current webdataset (see
docs/reference.md#measured-here), so its subprocess gets webdataset 0.2.86 first on ``PYTHONPATH``
(``.venv/compat/webdataset-0.2.86``, installed by the Makefile).

``--old-src DIR`` adds a third trainer: ``taxoclip train`` from another checkout's
``src/`` on ``PYTHONPATH`` (e.g. the random-access data path of git fcddbec, extracted
with ``git archive fcddbec src | tar -x -C /tmp/old``), same arguments, same shards.

    python bench/train_throughput.py [--steps 40] [--batch-size 128] [--workers 1] [--rounds 2]
        [--old-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "train"
COMPAT = Path(sys.prefix) / "compat" / "webdataset-0.2.86"


def prepare(args) -> tuple[str, Path, int]:
    from taxoclip.models import create_model, save_model
    from taxoclip.synth import SynthConfig, generate

    data = OUT / "synth"
    if not (data / "synth.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        generate(data, SynthConfig(species=300, images_per_species=40, shards=8), progress=False)
    n_train = json.loads((data / "synth.json").read_text())["counts"]["train_images"]
    model_dir = OUT / "t32-init"
    if not model_dir.exists():
        loaded = create_model("taxoclip-vit-t32", seed=0)
        save_model(loaded.model, model_dir, loaded.model_cfg, loaded.preprocess_cfg)
    return str(data / "shards" / "shard-{000000..000007}.tar"), model_dir, n_train


def run_ours(shards: str, model: Path, args, tag: str, src: str | None = None) -> list[float]:
    run = OUT / f"ours-{tag}" if src is None else OUT / f"old-{tag}"
    shutil.rmtree(run, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "taxoclip",
        "train",
        "--data",
        shards,
        "--model",
        str(model),
        "--out",
        str(run),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--log-every",
        str(args.log_every),
        "--warmup",
        "100",
        "--lr",
        "5e-4",
        "-q",
    ]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # The first record is step 0 alone (start-up); the next window includes warm-up.
    return [r["samples_per_second"] for r in records if "loss" in r][2:]


def run_open_clip(shards: str, model: Path, args, tag: str) -> list[float]:
    logs = OUT / f"open_clip-{tag}"
    shutil.rmtree(logs, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "open_clip_train.main",
        "--train-data",
        shards,
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        str(args.steps * args.batch_size),
        "--model",
        f"local-dir:{model}",
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",
        "--workers",
        str(args.workers),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--log-every-n-steps",
        str(args.log_every),
        "--logs",
        str(logs),
        "--name",
        "bench",
        "--save-frequency",
        "0",
        "--report-to",
        "",
        "--lr",
        "5e-4",
        "--warmup",
        "100",
        "--wd",
        "0.2",
        "--seed",
        "0",
    ]
    env = {**os.environ, "PYTHONPATH": f"{COMPAT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"open_clip_train.main failed:\n{done.stderr[-3000:]}")
    text = (logs / "bench" / "out.log").read_text()
    times = [float(t) for t in re.findall(r"Batch \(t\): ([0-9.]+)", text)]
    return [args.batch_size / t for t in times[2:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-src", default=None, help="another taxoclip's src/ to compare")
    args = parser.parse_args()
    if not COMPAT.exists():
        raise SystemExit(f"missing {COMPAT}: run `make venv` first")
    OUT.mkdir(parents=True, exist_ok=True)
    shards, model, n_train = prepare(args)

    ours, theirs, old = [], [], []
    started = time.perf_counter()
    for round_ in range(args.rounds):
        ours += run_ours(shards, model, args, str(round_))
        if args.old_src:
            old += run_ours(shards, model, args, str(round_), src=args.old_src)
        theirs += run_open_clip(shards, model, args, str(round_))
    ours_rate, theirs_rate = statistics.median(ours), statistics.median(theirs)

    import torch

    cpu = cpu_name()
    print(
        f"command: python bench/train_throughput.py --steps {args.steps} --batch-size "
        f"{args.batch_size} --workers {args.workers} --rounds {args.rounds}"
        + (f" --old-src {args.old_src}" if args.old_src else "")
    )
    print(
        f"machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, one process, "
        f"fp32; SynthToL {n_train} training images in 8 shards; {time.perf_counter() - started:.0f} s"
    )
    print()
    print("| trainer | images/s (median of windows) | windows | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| taxoclip train | {ours_rate:.0f} | {len(ours)} | {ours_rate / theirs_rate:.2f}× |")
    if old:
        old_rate = statistics.median(old)
        print(
            f"| taxoclip train ({args.old_src}) | {old_rate:.0f} | {len(old)} | "
            f"{old_rate / theirs_rate:.2f}× |"
        )
    print(f"| open_clip_train.main | {theirs_rate:.0f} | {len(theirs)} | 1.00× |")


if __name__ == "__main__":
    main()

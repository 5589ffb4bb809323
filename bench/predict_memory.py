"""Peak memory of ``taxoclip predict`` and ``embed`` over N and 10·N images (issue #20, part 6).

Generates 10·N small images (16 px PNGs) and a tiny random model (taxoclip-vit-t32) in a
temporary folder, then runs each command in a fresh child process over the first N and
over all 10·N images, and reports the child's own peak resident memory — ``VmHWM`` from
``/proc/self/status``, read by the child at its end (``ru_maxrss`` of a child is not
used: Linux carries the forking parent's peak over into it) — with the wall time and
the load average. Beside the streamed runs, "rows kept" runs ``predict`` in-process with
``keep_rows=True`` (every row held in memory, as ``predict`` did before streaming) for
the same inputs: the growth streaming removes.

    python bench/predict_memory.py [--n 2000] [--factor 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
started = time.perf_counter()
from taxoclip.cli import main
spec = json.loads(sys.argv[1])
if spec["keep_rows"]:
    from taxoclip.predict import PredictConfig
    from taxoclip.predict.run import run_predict
    result = run_predict(PredictConfig(**spec["config"], keep_rows=True))
    rc = result.exit_code
else:
    rc = main(spec["argv"])
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"rc": rc, "vmhwm_kb": int(peak), "seconds": time.perf_counter() - started}))
"""


def make_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    from taxoclip.models import create_model, save_model

    loaded = create_model("taxoclip-vit-t32", seed=0)
    model = save_model(loaded.model, folder / "model", loaded.model_cfg, loaded.preprocess_cfg)
    rng = np.random.default_rng(0)
    images = folder / "images"
    for i in range(n):
        shard = images / f"{i // 1000:04d}"
        shard.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(shard / f"im{i:07d}.png")
    return model, images


def run(spec: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        folder = Path(tmp)
        model, images = make_inputs(folder, args.n * args.factor)
        shards = sorted(images.iterdir())
        sizes = {
            args.n: [str(s) for s in shards[: max(1, args.n // 1000)]],
            args.n * args.factor: [str(s) for s in shards],
        }
        labels = "fish,bird,lizard,frog,snail,beetle"
        print(f"load average before: {os.getloadavg()}")
        print("| command | images | peak RSS (VmHWM) | seconds | load average (1 min) |")
        print("|---|---:|---:|---:|---:|")
        for n, inputs in sizes.items():
            common = ["--model", str(model), "--runtime", "torch", "--batch-size", "64", "-q"]
            cases = {
                "predict --cls (6 labels, k 5), streamed": {
                    "argv": [
                        "predict",
                        *inputs,
                        "--cls",
                        labels,
                        "--k",
                        "5",
                        *common,
                        "--output",
                        str(folder / f"p{n}.csv"),
                    ],
                    "keep_rows": False,
                },
                "predict --cls, rows kept (as before)": {
                    "config": {
                        "images": inputs,
                        "model": str(model),
                        "runtime": "torch",
                        "batch_size": 64,
                        "cls": labels,
                        "k": 5,
                        "progress": False,
                        "output": str(folder / f"k{n}.csv"),
                    },
                    "keep_rows": True,
                },
                "embed .npy, streamed": {
                    "argv": ["embed", *inputs, *common, "--output", str(folder / f"e{n}.npy")],
                    "keep_rows": False,
                },
            }
            for name, spec in cases.items():
                started = time.perf_counter()
                out = run(spec)
                wall = time.perf_counter() - started
                print(
                    f"| {name} | {n:,} | {out['vmhwm_kb'] / 1024:.0f} MB | {wall:.1f} | "
                    f"{os.getloadavg()[0]:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

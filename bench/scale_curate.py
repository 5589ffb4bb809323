"""Curation at growing sizes: driver peak memory and throughput of ``taxoclip curate``.

For each SynthToL raw source given (e.g. 1x, 4x and 16x records), one curation run in a
fresh child process; the child reports its own peak resident memory (``VmHWM`` of the
driver process only — Ray's workers are other processes), the wall time and the records
per second (per worker: divided by ``--workers``). ``--baseline-src DIR`` runs the same
sources with another checkout's ``src`` (e.g. the code before the Ray Data pipeline,
unpacked read-only with ``git archive <commit> src | tar -x -C DIR``) for comparison.

    taxoclip synth x1 --species 100 --images-per-species 24 --raw-source --image-size 32
    taxoclip synth x4 --species 400 --images-per-species 24 --raw-source --image-size 32
    taxoclip synth x16 --species 1600 --images-per-species 24 --raw-source --image-size 32
    python bench/scale_curate.py x1 x4 x16 --out /tmp/scale --workers 2 \\
        [--baseline-src /tmp/old/src --baseline-only x1] [--markdown results.md]

Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def child(source: str, out: str, workers: int, image_size: int) -> None:
    """One curation in this process; prints a JSON line with what was measured."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from taxoclip.curate import CurateConfig, curate

    source_path = Path(source)
    config = CurateConfig(
        sources=[source],
        backbone=str(source_path / "raw" / "backbone"),
        out=out,
        exclude_eval=[str(source_path / "test")],
        image_size=image_size,
        samples_per_shard=1000,
        workers=workers,
    )
    started = time.perf_counter()
    result = curate(config, progress=False)
    wall = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
    )
    print(
        json.dumps(
            {
                "records": result.stats["records_in"],
                "kept": result.stats["kept"],
                "driver_peak_rss_mb": round(peak_kb / 1024, 1),
                "wall_s": round(wall, 2),
                "stage_seconds": result.stats["stage_seconds"],
            }
        )
    )


def run_one(source: str, out: Path, workers: int, image_size: int, src: str | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        __file__,
        "--child",
        source,
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--image-size",
        str(image_size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"curate failed on {source}:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["records_per_s_per_worker"] = round(row["records"] / row["wall_s"] / workers, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--out", default="/tmp/scale_curate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--baseline-src", help="src folder of the code to compare with")
    parser.add_argument(
        "--baseline-only",
        nargs="*",
        default=None,
        help="sources to run the baseline on (default: all)",
    )
    parser.add_argument("--markdown", help="append the table to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.sources[0], args.out, args.workers, args.image_size)
        return
    out = Path(args.out)
    rows = []
    for source in args.sources:
        row = run_one(source, out / Path(source).name, args.workers, args.image_size, None)
        rows.append(("ray-data pipeline", source, row))
        print(json.dumps(rows[-1]), flush=True)
    if args.baseline_src:
        for source in args.baseline_only if args.baseline_only is not None else args.sources:
            row = run_one(
                source,
                out / f"baseline-{Path(source).name}",
                args.workers,
                args.image_size,
                args.baseline_src,
            )
            rows.append(("baseline", source, row))
            print(json.dumps(rows[-1]), flush=True)
    first = rows[0][2]["driver_peak_rss_mb"]
    lines = [
        f"workers {args.workers}, image size {args.image_size} px, machine load shared",
        "",
        "| code | source | records | driver peak RSS MB | vs first | wall s | records/s/worker |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for code, source, row in rows:
        growth = (row["driver_peak_rss_mb"] / first - 1) * 100
        lines.append(
            f"| {code} | {Path(source).name} | {row['records']} | "
            f"{row['driver_peak_rss_mb']} | {growth:+.1f} % | {row['wall_s']} | "
            f"{row['records_per_s_per_worker']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()

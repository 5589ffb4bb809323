"""SynthToL generation speed on one core (issue target: ≥ 2,000 images/s at 32 px).

Three figures side by side in one run, so their ratios hold on a noisy shared machine:
render only (numpy), render + JPEG encode (in memory), and ``generate`` end to end
(render, encode, files, CSVs, splits) as ``taxoclip synth`` runs it.

    python bench/synth_throughput.py [--species 300] [--images-per-species 40] [--size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import cpu_name  # bench/ is on sys.path when a script here runs
from taxoclip.synth import SynthConfig, build_tree, generate
from taxoclip.synth.dataset import encode_jpeg, species_rng
from taxoclip.synth.render import render, sample_image_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=300)
    parser.add_argument("--images-per-species", type=int, default=40)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each figure")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(__file__).parent / "out",
        help="where the end-to-end run writes (default bench/out; file creation speed "
        "differs a lot between file systems)",
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    config = SynthConfig(
        species=args.species, images_per_species=args.images_per_species, image_size=args.size
    )
    n_images = config.species * config.images_per_species
    rows = [s.as_row() for s in build_tree(config.species, species_rng(0, 0))]

    def render_only(encode: bool) -> float:
        start = time.perf_counter()
        for index, row in enumerate(rows):
            rng = species_rng(0, 1, index)
            pixels = render(
                sample_image_params(row, config.images_per_species, rng), args.size, rng
            )
            if encode:
                for image in pixels:
                    encode_jpeg(image, config.jpeg_quality)
        return time.perf_counter() - start

    def end_to_end() -> float:
        args.workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="synth-bench-", dir=args.workdir))
        try:
            start = time.perf_counter()
            generate(tmp / "out", config, progress=False)
            return time.perf_counter() - start
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    results = {}
    for label, fn in (
        ("render (numpy)", lambda: render_only(False)),
        ("render + JPEG encode", lambda: render_only(True)),
        ("taxoclip synth end to end (files, CSVs)", end_to_end),
    ):
        best = min(fn() for _ in range(args.repeats))
        results[label] = n_images / best

    print(
        f"SynthToL throughput, {config.species} species × {config.images_per_species} images "
        f"at {args.size} px, one core, best of {args.repeats}"
    )
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}")
    print(f"end-to-end output under {args.workdir.resolve()}")
    print()
    print("| stage | images/s | vs end to end |")
    print("|---|---:|---:|")
    reference = results["taxoclip synth end to end (files, CSVs)"]
    for label, rate in results.items():
        print(f"| {label} | {rate:,.0f} | {rate / reference:.2f}× |")


if __name__ == "__main__":
    main()

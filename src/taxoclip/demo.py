"""``taxoclip demo``: every stage that exists so far, on the embedded SynthToL default.

Today: SynthToL (images, ground truth, splits, contact sheet) and its training shards.
Training, prediction, evaluation and analysis join as they land.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from taxoclip.errors import EXIT_OK, UsageError
from taxoclip.synth import SynthConfig, generate

FULL = SynthConfig(
    species=300, images_per_species=40, image_size=32, seed=0, shards=8, preview=True
)
QUICK = SynthConfig(
    species=60, images_per_species=12, image_size=32, seed=0, shards=2, preview=True
)


def run_demo(out: str | os.PathLike, quick: bool = False, progress: bool = True) -> int:
    """Run the demo into ``out`` (a new or empty directory) and print where results are."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"demo output {out} is not empty; remove it or pass --out NEW_DIR")
    config = QUICK if quick else FULL
    started = time.perf_counter()
    print(
        f"[1/1] synth: {config.species} species × {config.images_per_species} images at "
        f"{config.image_size} px, seed {config.seed}"
    )
    result = generate(out / "synth", config, progress=progress)
    elapsed = time.perf_counter() - started
    print()
    print(f"demo finished in {elapsed:.1f} s; results in {out}/")
    print(
        f"  SynthToL          {result.out}/  ({result.n_species} species, "
        f"{result.n_unseen_species} unseen; {result.n_train} train / {result.n_test} test images)"
    )
    print(f"  ground truth      {result.out}/species.csv, {result.out}/images.csv")
    print(f"  eval folders      {result.out}/train/metadata.csv, {result.out}/test/metadata.csv")
    print(f"  training shards   {result.shard_pattern}")
    print(f"  contact sheet     {result.preview}")
    print("  next stages (train, index, predict, eval, analyze, report) are planned; see README")
    return EXIT_OK

"""Config and result of ``taxoclip study scaling`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import StageConfig, StageResult, command, option, shared
from taxoclip.errors import UsageError

BUDGETS = ("steps", "epochs")
DEFAULT_SIZES = (0.25, 0.5, 1.0)
MIN_SIZES = 3


def parse_sizes(text: str) -> list[float]:
    """``"0.25,0.5,1"`` → ``[0.25, 0.5, 1.0]`` (UsageError on anything else)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--sizes must be comma-separated fractions (got {text!r})") from None


@command(
    "study scaling",
    help="train on >= 3 data sizes of SynthToL; every metric and zero-shot against size",
    description=(
        "Train the same model on at least three data sizes of one SynthToL (nested "
        "subsets of its training images, same species and test split), measure "
        "zero-shot top-1 (the protocol of taxoclip eval --suite synth) and every analysis "
        "metric for each beside the untrained baseline (analysed once) and the nulls, and "
        "plot them against size. --ablation adds a flat-label run (scientific name only) on "
        "the largest size. Writes study.json, scaling.png, runs/ and analysis/ into --out."
    ),
    run="taxoclip.study:run",
)
@dataclass(kw_only=True)
class ScalingConfig(StageConfig):
    """Parameters of one scaling study (the CLI flags of ``taxoclip study scaling``)."""

    out: str | Path = option(metavar="DIR", help="output directory")
    data: str | Path | None = option(
        None, metavar="SYNTH_ROOT", help="an existing SynthToL root (default: generate one)"
    )
    species: int = option(300, metavar="N", help="species of the generated SynthToL")
    images_per_species: int = option(
        40, metavar="M", help="images per species of the generated SynthToL"
    )
    image_size: int = option(32, metavar="S", help="image side of the generated SynthToL")
    sizes: list[float] = option(
        list(DEFAULT_SIZES),
        metavar="F,F,F",
        parse=parse_sizes,
        help="fractions of the training images per species, at least 3 (default 0.25,0.5,1)",
    )
    epochs: int = option(15, metavar="E", help="epochs over the largest size")
    batch_size: int = shared.batch_size(128, what="training batch size")
    budget: str = option(
        "steps",
        choices=BUDGETS,
        help="steps: every run takes the steps of --epochs over the largest size (default; "
        "data at fixed compute); epochs: --epochs over each run's own data",
    )
    warmup: int | None = option(
        None, metavar="STEPS", help="warm-up steps (default a tenth of the steps, at most 100)"
    )
    ablation: bool = option(
        False, help="add a flat-label run (scientific name only) on the largest size"
    )
    model: str = shared.model("taxoclip-vit-t32", help="architecture to train")
    seed: int = shared.seed(help="seed of data, subsets, runs, nulls")
    device: str = shared.device()
    progress: bool = shared.progress()

    def check(self) -> list[str]:
        problems = []
        sizes = list(self.sizes)
        if len(sizes) < MIN_SIZES:
            problems.append(f"--sizes needs at least {MIN_SIZES} data sizes (got {len(sizes)})")
        if any(not (0.0 < f <= 1.0) for f in sizes):
            problems.append(f"--sizes are fractions in (0, 1] of the training images (got {sizes})")
        if len(set(sizes)) != len(sizes):
            problems.append(f"--sizes must be distinct (got {sizes})")
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.budget not in BUDGETS:
            problems.append(f"--budget must be one of {', '.join(BUDGETS)} (got {self.budget!r})")
        if self.warmup is not None and self.warmup < 0:
            problems.append(f"--warmup must be 0 or more (got {self.warmup})")
        if self.seed < 0:
            problems.append(f"--seed must be non-negative (got {self.seed})")
        return problems


@dataclass
class ScalingResult(StageResult):
    out: Path
    study: dict[str, Any]
    plot: Path | None
    table: str
    runs: dict[str, Path] = field(default_factory=dict)  # run name -> model dir

    def lines(self) -> list[str]:
        study = self.study
        lines = self.table.splitlines()
        lines.append(f"study of {len(study['runs'])} runs ({', '.join(study['runs'])}) in "
                     f"{study['seconds']['total']:.1f} s; same {study['budget']} per run")  # fmt: skip
        lines.append(f"results: {self.out}/study.json, runs/, analysis/")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return lines

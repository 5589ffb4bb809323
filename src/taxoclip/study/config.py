"""Config and result of ``taxoclip study scaling`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.errors import UsageError

from .record import StudyRecord

BUDGETS = ("steps", "epochs")
RECIPES = ("two-stage", "scratch")
DEFAULT_SIZES = (0.125, 0.25, 0.5, 1.0)
MIN_SIZES = 3


def parse_sizes(text: str) -> list[float]:
    """``"0.25,0.5,1"`` → ``[0.25, 0.5, 1.0]`` (UsageError on anything else)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--sizes must be comma-separated fractions (got {text!r})") from None


def parse_seeds(text: str) -> list[int]:
    """``"0,1"`` → ``[0, 1]`` (UsageError on anything else)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--world-seeds must be comma-separated integers (got {text!r})") from None


@command(
    "study scaling",
    help="the paper's claims over data sizes, seeds and worlds, with every baseline",
    description=(
        "Reproduce BioCLIP 2's emergent properties on SynthToL. For each world seed, "
        "generate a SynthToL with its web corpus, train the general model on the web "
        "captions (stage 1), then for each model seed run BioCLIP 2's recipe from it on "
        "nested subsets of the taxonomic training images (stage 2, with experience replay "
        "of the web corpus), plus a flat-label run (scientific names only) and a no-replay "
        "run at the largest size. Every model, the general one and the untrained twin "
        "are measured the same way (taxoclip analyze, eval's zero-shot protocol, web "
        "retrieval). study.json holds the claims table (mean and sd over replicates, each "
        "baseline, the null, a verdict) and the trends with data; scaling.png plots them "
        "with error bars. --recipe scratch trains from scratch on the taxonomic shards "
        "instead (the first study's design)."
    ),
    run="taxoclip.study:run",
)
@dataclass(kw_only=True)
class ScalingConfig(CommandConfig):
    """Parameters of one scaling study (the CLI flags of ``taxoclip study scaling``)."""

    out: str | Path = option(metavar="DIR", help="output directory")
    data: str | Path | None = option(
        None,
        metavar="SYNTH_ROOT",
        help="an existing SynthToL root (one world; with --recipe two-stage it needs its "
        "web/ corpus: synth --web N). Default: generate one per world seed",
    )
    recipe: str = option(
        "two-stage",
        choices=RECIPES,
        help="two-stage: general pretraining on the web corpus, then BioCLIP 2's recipe "
        "with replay (default, as the paper); scratch: the recipe from random weights",
    )
    species: int = option(160, metavar="N", help="species of each generated SynthToL")
    images_per_species: int = option(
        32, metavar="M", help="images per species of each generated SynthToL"
    )
    image_size: int = option(32, metavar="S", help="image side of the generated SynthToL")
    web: int = option(
        16000, metavar="N", help="web image-caption pairs per generated world (two-stage)"
    )
    sizes: list[float] = option(
        list(DEFAULT_SIZES),
        metavar="F,F,...",
        parse=parse_sizes,
        help="fractions of the training images per species, at least 3; a trend wants 4 "
        "or more (default 0.125,0.25,0.5,1)",
    )
    seeds: int = option(
        3, metavar="K", help="model seeds per world (the spread of every verdict; default 3)"
    )
    world_seeds: list[int] = option(
        [0, 1],
        metavar="S,S,...",
        parse=parse_seeds,
        help="seeds of the generated SynthToL worlds (default 0,1: two different trees)",
    )
    epochs: int = option(6, metavar="E", help="stage-2 epochs over the largest size")
    stage1_epochs: int = option(
        6, metavar="E", help="stage-1 epochs over the web corpus (two-stage)"
    )
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
        False,
        help="with --recipe scratch, add a flat-label run on the largest size (two-stage "
        "always runs the flat and no-replay baselines)",
    )
    resume: bool = option(
        False,
        help="continue a study cut short in --out: its worlds, general models and every run "
        "already measured (OUT/runs.json) are kept, the rest is run",
    )
    model: str = shared.model("taxoclip-vit-t32", help="architecture to train")
    seed: int = shared.seed(help="first model seed (seeds are SEED .. SEED+K-1)")
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
        if self.recipe not in RECIPES:
            problems.append(f"--recipe must be one of {', '.join(RECIPES)} (got {self.recipe!r})")
        if self.seeds < 1:
            problems.append(f"--seeds must be at least 1 (got {self.seeds})")
        worlds = list(self.world_seeds)
        if not worlds or len(set(worlds)) != len(worlds) or any(w < 0 for w in worlds):
            problems.append(f"--world-seeds must be distinct non-negative seeds (got {worlds})")
        if self.data is not None and len(worlds) > 1:
            problems.append("--data is one world: pass a single --world-seeds value with it")
        if self.epochs < 1 or self.stage1_epochs < 1:
            problems.append("--epochs and --stage1-epochs must be at least 1")
        if self.recipe == "two-stage" and self.data is None and self.web < 20:
            problems.append(f"--web must be at least 20 for the two-stage recipe (got {self.web})")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.budget not in BUDGETS:
            problems.append(f"--budget must be one of {', '.join(BUDGETS)} (got {self.budget!r})")
        if self.warmup is not None and self.warmup < 0:
            problems.append(f"--warmup must be 0 or more (got {self.warmup})")
        if self.seed < 0:
            problems.append(f"--seed must be non-negative (got {self.seed})")
        return problems

    @property
    def model_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))


@dataclass
class ScalingResult(CommandResult):
    out: Path
    study: StudyRecord  # what study.json holds
    plot: Path | None
    table: str
    runs: dict[str, Path] = field(default_factory=dict)  # run name -> model dir

    def lines(self) -> list[str]:
        study = self.study
        lines = self.table.splitlines()
        seconds = (study.seconds or {}).get("total", 0.0)
        lines.append(
            f"study of {len(study.runs)} runs over {len(study.worlds)} world(s) × "
            f"{len(study.model_seeds)} seed(s) in {seconds:.1f} s; same {study.budget} per run"
        )
        lines.append(f"results: {self.out}/study.json (claims, trends, runs)")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return lines

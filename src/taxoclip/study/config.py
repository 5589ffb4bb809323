"""Config and result of ``taxoclip study scaling`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.errors import UsageError
from taxoclip.train.config import PRECISIONS

from .record import StudyRecord

BUDGETS = ("steps", "epochs")
RECIPES = ("two-stage", "scratch")
DEFAULT_SIZES = (0.125, 0.25, 0.5, 1.0)
MIN_SIZES = 3

# The default world and training of a study, shared by ``study scaling`` and ``study
# sweep`` so that a sweep chooses the recipe on the worlds the study then runs.
SPECIES = 160
IMAGES_PER_SPECIES = 32
IMAGE_SIZE = 32
WEB_PAIRS = 16000
STAGE1_EPOCHS = 6
BATCH_SIZE = 128
MODEL = "taxoclip-vit-t32"
WORLD_SEEDS = (0, 1)
# Stage 2's recipe, chosen by ``taxoclip study sweep`` under SWEEP_CRITERION (below) on
# 2026-12-07 (docs/training.md, "The sweep, measured"): of 18 configurations on worlds 0
# and 1, six kept >= 90 % of the general model's web recall@5, and of those lr 1e-4 for
# 12 epochs with a third replayed had the best mean seen-species top-1 (0.149). Every
# study before it ran lr 5e-4, 6 epochs, replay 0.2 (top-1 0.172, recall kept 81 %).
#: Stage 2's peak learning rate (stage 1 keeps train's default); BioCLIP 2's is also 1e-4.
STAGE2_LR = 1e-4
#: Stage-2 epochs over the largest size (with ``--budget steps`` every run's steps).
STAGE2_EPOCHS = 12
#: Share of each step's images replayed from the web corpus: 0.33 is 63 web pairs beside
#: 128 taxonomic images. BioCLIP 2 replays ~10 % of a 10,240-pair global batch; at a
#: 128-image batch 10 % is a 14-pair contrast, nearly trivial.
REPLAY_RATIO = 0.33

#: ``--preset NAME``: the values a preset gives the fields left at their defaults (a flag
#: given explicitly keeps its value, except one given *at* its default value, which cannot
#: be told from an absent flag). ``gpu``: a world this CPU cannot reach, for one H100;
#: its estimated cost (about 27 minutes, most of it analyze's statistics on the CPU) and
#: the assumptions behind it are in docs/training.md ("The study on one GPU").
PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {
        "species": 1000,
        "images_per_species": 16,
        "image_size": 64,
        "web": 32000,
        "model": "ViT-S-32",  # open_clip's ViT-S/32, random weights (images resized to 224)
        "precision": "bf16",
        "batch_size": 256,
        "workers": 6,
        "stage1_epochs": 10,
        "world_seeds": [0],
        "seeds": 2,
        "device": "cuda",
    },
}


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


def _floats(flag: str):
    """A parser of ``flag``'s comma-separated numbers (UsageError naming the flag)."""

    def parse(text: str) -> list[float]:
        try:
            return [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"{flag} must be comma-separated numbers (got {text!r})") from None

    return parse


def _ints(flag: str):
    """A parser of ``flag``'s comma-separated integers (UsageError naming the flag)."""

    def parse(text: str) -> list[int]:
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"{flag} must be comma-separated integers (got {text!r})") from None

    return parse


def apply_preset(config: ScalingConfig) -> ScalingConfig:
    """``config`` with its ``--preset``'s values in the fields left at their defaults
    (:data:`PRESETS`); unchanged without a preset."""
    if config.preset is None:
        return config
    defaults = {f.name: _default(f) for f in fields(config)}
    chosen = {
        name: value
        for name, value in PRESETS[config.preset].items()
        if getattr(config, name) == defaults[name]
    }
    return replace(config, **chosen)


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


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
    species: int = option(SPECIES, metavar="N", help="species of each generated SynthToL")
    images_per_species: int = option(
        IMAGES_PER_SPECIES, metavar="M", help="images per species of each generated SynthToL"
    )
    image_size: int = option(IMAGE_SIZE, metavar="S", help="image side of the generated SynthToL")
    web: int = option(
        WEB_PAIRS, metavar="N", help="web image-caption pairs per generated world (two-stage)"
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
        list(WORLD_SEEDS),
        metavar="S,S,...",
        parse=parse_seeds,
        help="seeds of the generated SynthToL worlds (default 0,1: two different trees)",
    )
    epochs: int = option(STAGE2_EPOCHS, metavar="E", help="stage-2 epochs over the largest size")
    lr: float = option(STAGE2_LR, metavar="LR", help="stage-2 peak learning rate (cosine)")
    replay_ratio: float = option(
        REPLAY_RATIO,
        metavar="R",
        help="stage 2's share of each step's images replayed from the web corpus (two-stage)",
    )
    stage1_epochs: int = option(
        STAGE1_EPOCHS, metavar="E", help="stage-1 epochs over the web corpus (two-stage)"
    )
    batch_size: int = shared.batch_size(BATCH_SIZE, what="training batch size")
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
    model: str = shared.model(MODEL, help="architecture to train")
    precision: str = option(
        "fp32", choices=PRECISIONS, help="training precision of both stages (bf16: autocast)"
    )
    workers: int = option(
        1, metavar="N", help="DataLoader workers of each training run (1 suits 2 cores)"
    )
    preset: str | None = option(
        None,
        choices=tuple(PRESETS),
        help="gpu: a larger world (1,000 species at 64 px), open_clip's ViT-S-32 in bf16, "
        "a longer stage 2, for one H100 (docs/training.md: its values and estimated cost); "
        "flags given with it override it",
    )
    seed: int = shared.seed(help="first model seed (seeds are SEED .. SEED+K-1)")
    device: str = shared.device()
    progress: bool = shared.progress()

    def check(self) -> list[str]:
        problems = []
        if self.lr <= 0:
            problems.append(f"--lr must be positive (got {self.lr})")
        if not 0.0 < self.replay_ratio < 1.0:
            problems.append(f"--replay-ratio must be in (0, 1) (got {self.replay_ratio})")
        if self.workers < 0:
            problems.append(f"--workers must be 0 or more (got {self.workers})")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.preset is not None and self.preset not in PRESETS:
            problems.append(f"--preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
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


#: How ``taxoclip study sweep`` chooses the stage-2 recipe: written before any sweep ran,
#: printed with every result and stored in sweep.json. Never the claims' verdicts.
SWEEP_CRITERION = (
    "the configuration with the best mean held-out seen-species top-1 over worlds 0 and 1 "
    "among those that keep >= 90 % of the general model's web recall@5; ties -> fewer steps"
)
#: What each word of the criterion is in the files (sweep.py implements exactly this).
SWEEP_CRITERION_TERMS = (
    "held-out seen-species top-1: zero_shot.seen_top1, eval's zero-shot protocol on the "
    "test images of the species stage 2 trained on; the mean is over the sweep's worlds "
    "(--world-seeds, default 0 and 1) and a configuration missing a world is not eligible. "
    "keeps >= 90 %: the mean over worlds of web.retrieval_r5 / that world's general model's "
    "(study/claims.py's KEEP_SHARE, as the replay claim reads it). Ties: equal means to 9 "
    "decimals; fewer steps = fewer stage-2 epochs (the steps of every world are epochs x "
    "its steps per epoch); then the first in grid order (learning rates, epochs, replay "
    "shares as given). When no configuration keeps 90 %, none is chosen and the study's "
    "defaults stay"
)
SWEEP_LRS = (5e-4, 2e-4, 1e-4)
SWEEP_EPOCHS = (6, 12, 24)
SWEEP_REPLAY = (0.2, 0.33)
SWEEP_CURVE_EPOCHS = (1, 2, 3, 6, 12, 18)


@command(
    "study sweep",
    help="choose the stage-2 recipe (learning rate, steps, replay) by a criterion fixed in advance",
    description=(
        "Learning curves and a small grid of stage 2 of the two-stage study: per world seed "
        "the study's own world and general model, then one stage-2 run (one model seed) per "
        "learning rate x stage-2 epochs x replay share, measured like every study run "
        "(analyze, eval's zero-shot, web retrieval); the longest run of each learning rate "
        "and replay share is also measured at the epoch ends of --curve-epochs. The recipe "
        "is chosen by the criterion written in the code before any run: "
        + SWEEP_CRITERION
        + ". Writes sweep.json (every configuration's numbers per world, the curves, the "
        "criterion, the choice) and sweep.md; --resume skips what was measured."
    ),
    run="taxoclip.study.sweep:run",
)
@dataclass(kw_only=True)
class SweepConfig(CommandConfig):
    """Parameters of one recipe sweep (the CLI flags of ``taxoclip study sweep``)."""

    out: str | Path = option(metavar="DIR", help="output directory")
    lrs: list[float] = option(
        list(SWEEP_LRS),
        metavar="LR,LR,...",
        parse=_floats("--lrs"),
        help="stage-2 peak learning rates (default 5e-4,2e-4,1e-4)",
    )
    epochs: list[int] = option(
        list(SWEEP_EPOCHS),
        metavar="E,E,...",
        parse=_ints("--epochs"),
        help="stage-2 epochs over the training images; the steps are E x (images // batch) "
        "(default 6,12,24)",
    )
    replay_ratios: list[float] = option(
        list(SWEEP_REPLAY),
        metavar="R,R,...",
        parse=_floats("--replay-ratios"),
        help="shares of each step's images replayed from the web corpus (default 0.2,0.33)",
    )
    curve_epochs: list[int] = option(
        list(SWEEP_CURVE_EPOCHS),
        metavar="E,E,...",
        parse=_ints("--curve-epochs"),
        help="epoch ends at which the longest run of each learning rate and replay share is "
        "also measured (zero-shot and web; default 1,2,3,6,12,18)",
    )
    species: int = option(SPECIES, metavar="N", help="species of each generated SynthToL")
    images_per_species: int = option(
        IMAGES_PER_SPECIES, metavar="M", help="images per species of each generated SynthToL"
    )
    image_size: int = option(IMAGE_SIZE, metavar="S", help="image side of the generated SynthToL")
    web: int = option(WEB_PAIRS, metavar="N", help="web image-caption pairs per world")
    world_seeds: list[int] = option(
        list(WORLD_SEEDS),
        metavar="S,S,...",
        parse=parse_seeds,
        help="seeds of the generated SynthToL worlds (default 0,1: the study's)",
    )
    stage1_epochs: int = option(STAGE1_EPOCHS, metavar="E", help="stage-1 epochs")
    batch_size: int = shared.batch_size(BATCH_SIZE, what="training batch size")
    warmup: int | None = option(
        None, metavar="STEPS", help="warm-up steps (default a tenth of the steps, at most 100)"
    )
    model: str = shared.model(MODEL, help="architecture to train")
    precision: str = option("fp32", choices=PRECISIONS, help="training precision")
    workers: int = option(1, metavar="N", help="DataLoader workers of each training run")
    resume: bool = option(
        False,
        help="continue a sweep cut short in --out: its worlds, general models and every "
        "configuration already measured (OUT/sweep-runs.json) are kept",
    )
    seed: int = shared.seed(help="the model seed of every stage-2 run")
    device: str = shared.device()
    progress: bool = shared.progress()

    def check(self) -> list[str]:
        problems = []
        for flag, values in (
            ("--lrs", self.lrs),
            ("--epochs", self.epochs),
            ("--replay-ratios", self.replay_ratios),
            ("--curve-epochs", self.curve_epochs),
        ):
            if len(set(values)) != len(list(values)):
                problems.append(f"{flag} must be distinct (got {list(values)})")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            problems.append(f"--lrs must be positive learning rates (got {list(self.lrs)})")
        if not self.epochs or any(e < 1 for e in self.epochs):
            problems.append(f"--epochs must be at least 1 each (got {list(self.epochs)})")
        if not self.replay_ratios or any(not 0.0 < r < 1.0 for r in self.replay_ratios):
            problems.append(f"--replay-ratios must be in (0, 1) (got {list(self.replay_ratios)})")
        if any(e < 1 for e in self.curve_epochs):
            problems.append(f"--curve-epochs must be at least 1 (got {list(self.curve_epochs)})")
        worlds = list(self.world_seeds)
        if not worlds or len(set(worlds)) != len(worlds) or any(w < 0 for w in worlds):
            problems.append(f"--world-seeds must be distinct non-negative seeds (got {worlds})")
        if self.web < 20:
            problems.append(f"--web must be at least 20 (got {self.web})")
        if self.stage1_epochs < 1 or self.batch_size < 1 or self.seed < 0:
            problems.append("--stage1-epochs and --batch-size must be at least 1, --seed >= 0")
        if self.warmup is not None and self.warmup < 0:
            problems.append(f"--warmup must be 0 or more (got {self.warmup})")
        if self.precision not in PRECISIONS or self.workers < 0:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, --workers >= 0")
        return problems


@dataclass
class SweepResult(CommandResult):
    out: Path
    sweep: dict[str, Any]  # what sweep.json holds
    table: str  # sweep.md

    def lines(self) -> list[str]:
        chosen = self.sweep.get("chosen")
        lines = self.table.splitlines()
        lines.append(f"criterion (fixed before the sweep): {self.sweep['criterion']}")
        if chosen:
            lines.append(
                f"chosen: lr {chosen['lr']:g}, {chosen['epochs']} stage-2 epochs, replay "
                f"{chosen['replay_ratio']:g} (mean seen-species top-1 "
                f"{chosen['mean_seen_top1']:.3f}, web recall@5 kept "
                f"{chosen['mean_web_share']:.1%})"
            )
        else:
            lines.append(f"chosen: none ({self.sweep.get('why', '')})")
        lines.append(f"results: {self.out}/sweep.json and {self.out}/sweep.md")
        return lines

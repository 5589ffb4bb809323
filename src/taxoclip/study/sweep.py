"""``taxoclip study sweep``: the stage-2 recipe chosen by a criterion fixed before any run.

The criterion (:data:`~taxoclip.study.config.SWEEP_CRITERION`, with what each of its words
is in the files in ``SWEEP_CRITERION_TERMS``) was written into study/config.py before the
first sweep ran; it is printed with every result and stored in sweep.json. It reads the
held-out seen-species zero-shot top-1 and the share of the general model's web
recall@5 kept, never a claim's verdict.

The design, built only of the study's own pieces (study/scaling.py):

1. Per **world seed** (default 0 and 1, the study's), the study's world and general
   model (``_prepare_world``: ``synth --web``, stage 1), with the largest size's shards
   only, and the general model measured like every study model (``_measured_baseline``).
2. Per **configuration** of the grid — learning rate x stage-2 epochs x replay share, in
   that order — one stage-2 run of the study's recipe at the largest size (one model seed,
   ``_train_and_measure``: the same training and the same measuring as ``study
   scaling``'s ``size-<n>`` runs). Its steps are epochs x (training images // batch), the
   warm-up a tenth of them (at most 100), the cosine over its own steps.
3. **Learning curves**: the longest run of each learning rate and replay share is also
   measured at the epoch ends of ``curve_epochs`` below its own (zero-shot and web scores
   only, through a checkpoint hook of ``train``; the torch RNG is forked around it). These
   points lie inside a cosine over the longest run's steps; the grid's shorter runs give
   the same steps each with a schedule of its own, and both are in the tables.
4. :func:`choose` applies the criterion to the configurations measured on every world.

Outputs in OUT: ``world-<w>/`` as the study's (``synth/``, ``data/``, ``stage1/``,
``analysis/general/``, ``seed-<s>/runs/<configuration>/``,
``seed-<s>/analysis/<configuration>/``), ``sweep-runs.json`` (the runs and curve points
measured so far: ``--resume`` skips them), ``sweep.json`` and ``sweep.md``.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from taxoclip import __version__
from taxoclip.errors import UsageError

from .config import (
    DEFAULT_SIZES,
    SWEEP_CRITERION,
    SWEEP_CRITERION_TERMS,
    ScalingConfig,
    SweepConfig,
    SweepResult,
)
from .record import StudyRun, run_key, runs_from_json

TOP1 = "zero_shot.seen_top1"  # the criterion's statistic
RECALL = "web.retrieval_r5"  # the general ability it must keep
CONTEXT = ("taxonomic.spearman",)  # shown beside, never chosen by
RUNS_FILE = "sweep-runs.json"
TIE_DECIMALS = 9  # means equal to this many decimals are a tie (SWEEP_CRITERION_TERMS)


@dataclass(frozen=True)
class Recipe:
    """One configuration of stage 2."""

    lr: float
    epochs: int  # over the largest size's training images
    replay_ratio: float

    @property
    def name(self) -> str:
        """Its run folder's name: ``lr0.0005-e6-r0.2``."""
        return f"lr{self.lr:g}-e{self.epochs}-r{self.replay_ratio:g}"


@dataclass(frozen=True)
class WorldScore:
    """One configuration's numbers on one world."""

    world: int
    steps: int | None
    seen_top1: float | None
    web_r5: float | None
    web_share: float | None  # web_r5 / the world's general model's
    context: dict[str, float | None]  # CONTEXT statistics: shown, not chosen by


@dataclass(frozen=True)
class Scored:
    """A configuration over the sweep's worlds, as the criterion reads it."""

    recipe: Recipe
    index: int  # its place in the grid's order (the last tie-break)
    worlds: tuple[WorldScore, ...]
    mean_seen_top1: float | None  # None unless measured on every world
    mean_web_share: float | None
    eligible: bool  # measured on every world and keeps the required share


@dataclass(frozen=True)
class CurvePoint:
    """One point of a learning curve: a model after ``steps`` steps of a run of
    ``run_epochs`` epochs (``final``: the run's end, measured by the full protocol)."""

    world: int
    lr: float
    replay_ratio: float
    run_epochs: int
    epochs: int
    steps: int
    seen_top1: float | None
    web_r5: float | None
    web_share: float | None
    final: bool
    seconds: float | None = None


def grid(config: SweepConfig) -> list[Recipe]:
    """The configurations in grid order: learning rates, then epochs, then replay shares."""
    return [
        Recipe(float(lr), int(epochs), float(ratio))
        for lr, epochs, ratio in itertools.product(config.lrs, config.epochs, config.replay_ratios)
    ]


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _share(value: float | None, general: float | None) -> float | None:
    return value / general if value is not None and general else None


def score(
    recipe: Recipe,
    index: int,
    runs: dict[int, StudyRun | None],
    general_r5: dict[int, float | None],
    required_share: float,
) -> Scored:
    """``recipe``'s numbers on each world (``runs``: world → its run, None when not
    measured) and whether the criterion may choose it."""
    worlds = []
    for world, run in runs.items():
        r5 = run.value(RECALL) if run else None
        worlds.append(
            WorldScore(
                world=world,
                steps=run.steps if run else None,
                seen_top1=run.value(TOP1) if run else None,
                web_r5=r5,
                web_share=_share(r5, general_r5.get(world)),
                context={k: run.value(k) if run else None for k in CONTEXT},
            )
        )
    tops = [w.seen_top1 for w in worlds]
    shares = [w.web_share for w in worlds]
    complete = bool(worlds) and None not in tops and None not in shares
    mean_top1 = sum(tops) / len(tops) if complete else None
    mean_share = sum(shares) / len(shares) if complete else None
    eligible = complete and mean_share >= required_share
    return Scored(recipe, index, tuple(worlds), mean_top1, mean_share, eligible)


def choose(scored: Sequence[Scored]) -> Scored | None:
    """The criterion (SWEEP_CRITERION): the best mean seen-species top-1 among the eligible
    configurations; ties (to TIE_DECIMALS) to fewer epochs, then to the grid's order.
    None when none is eligible."""
    eligible = [s for s in scored if s.eligible]
    if not eligible:
        return None
    return min(
        eligible,
        key=lambda s: (-round(s.mean_seen_top1, TIE_DECIMALS), s.recipe.epochs, s.index),
    )


# --------------------------------------------------------------------------- running


def study_config(config: SweepConfig) -> ScalingConfig:
    """The study's config for the sweep's worlds and runs (one model seed; ``resume`` so
    that a world and its general model, once made, are reused)."""
    return ScalingConfig(
        out=config.out,
        species=config.species,
        images_per_species=config.images_per_species,
        image_size=config.image_size,
        web=config.web,
        sizes=list(DEFAULT_SIZES),  # unused: the sweep trains at the largest size only
        seeds=1,
        world_seeds=list(config.world_seeds),
        stage1_epochs=config.stage1_epochs,
        batch_size=config.batch_size,
        budget="steps",
        warmup=config.warmup,
        model=config.model,
        precision=config.precision,
        workers=config.workers,
        seed=config.seed,
        device=config.device,
        progress=config.progress,
        resume=True,
    )


def run(config: SweepConfig) -> SweepResult:
    """Run the sweep of ``config``; write OUT (see the module docstring) and return it."""
    from taxoclip.analyze import write_json

    from .scaling import _device, _measured_baseline, _prepare_world, _train_and_measure

    out = Path(config.out)
    runs, curves = _earlier(out, config.resume)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = study_config(config)
    device = _device(config.device)
    recipes = grid(config)
    longest = {}
    for recipe in recipes:
        pair = (recipe.lr, recipe.replay_ratio)
        longest[pair] = max(longest.get(pair, 0), recipe.epochs)
    worlds = []
    for world_seed in config.world_seeds:
        world = _prepare_world(base, world_seed, out, [1.0])
        worlds.append(world)
        general_key = run_key(world.seed, "general")
        if general_key not in runs:
            runs[general_key] = _measured_baseline(
                "general",
                world,
                None,
                world.general,
                world.root / "analysis" / "general",
                device,
                config.progress,
            )
            _save(out, runs, curves, write_json)
        stage2 = world.specs[0]  # the study's stage-2 run at the largest size
        steps_per_epoch = stage2.n_train // config.batch_size
        for recipe in recipes:
            key = run_key(world.seed, recipe.name, config.seed)
            if key in runs:
                continue
            points: list[CurvePoint] = []
            hooks = []
            if recipe.epochs == longest[(recipe.lr, recipe.replay_ratio)]:
                wanted = {e for e in config.curve_epochs if e < recipe.epochs}
                general_r5 = runs[general_key].value(RECALL)
                hooks.append(
                    _curve_hook(world, recipe, steps_per_epoch, wanted, general_r5, device, points)
                )
            if config.progress:
                print(f"[sweep] world {world.seed}: {recipe.name}", flush=True)
            measured = _train_and_measure(
                replace(base, lr=recipe.lr, epochs=recipe.epochs, replay_ratio=recipe.replay_ratio),
                world,
                replace(stage2, name=recipe.name),
                config.seed,
                device,
                hooks,
            )
            if points:  # the curve's measuring ran inside training: not the run's cost
                curve_seconds = sum(p.seconds or 0.0 for p in points)
                seconds = dict(measured.seconds or {})
                seconds["train"] = round(seconds.get("train", 0.0) - curve_seconds, 2)
                seconds["curve"] = round(curve_seconds, 2)
                measured.seconds = seconds
            runs[key], curves[key] = measured, points
            _save(out, runs, curves, write_json)

    sweep = sweep_record(config, recipes, runs, curves, time.perf_counter() - started)
    table = format_table(sweep)
    write_json(out / "sweep.json", sweep)
    (out / "sweep.md").write_text(table + "\n" + format_curves(sweep), encoding="utf-8")
    return SweepResult(out, sweep, table)


def _curve_hook(
    world: Any,
    recipe: Recipe,
    steps_per_epoch: int,
    wanted: set[int],
    general_r5: float | None,
    device: str,
    points: list[CurvePoint],
) -> Callable[[int, Path], None]:
    """train's checkpoint hook that measures the checkpoint at the epoch ends ``wanted``:
    the eval protocol's zero-shot and the web scores, as study/scaling.py's ``measure``."""
    import torch

    from taxoclip.models import load_model

    from .scaling import web_values, zero_shot_loaded

    def hook(step: int, checkpoint: Path) -> None:
        epoch, rest = divmod(step, steps_per_epoch)
        if rest or epoch not in wanted:
            return
        tick = time.perf_counter()
        # Forked, so that the measuring leaves the run's random state as it found it.
        with torch.random.fork_rng(devices=[]):
            loaded = load_model(str(world.general), pretrained=str(checkpoint), device=device)
            scores = zero_shot_loaded(loaded, world.synth, device)
            scores.update(web_values(loaded, world.web, device))
        r5 = _finite(scores.get(RECALL))
        points.append(
            CurvePoint(
                world=world.seed,
                lr=recipe.lr,
                replay_ratio=recipe.replay_ratio,
                run_epochs=recipe.epochs,
                epochs=epoch,
                steps=step,
                seen_top1=_finite(scores.get(TOP1)),
                web_r5=r5,
                web_share=_share(r5, general_r5),
                final=False,
                seconds=round(time.perf_counter() - tick, 2),
            )
        )

    return hook


def _earlier(out: Path, resume: bool) -> tuple[dict[str, StudyRun], dict[str, list[CurvePoint]]]:
    """The runs and curve points a sweep cut short measured (``resume``), whose models are
    still there; without ``resume`` an OUT holding a sweep is refused."""
    path = out / RUNS_FILE
    if not resume:
        if path.exists() or (out / "sweep.json").exists() or any(out.glob("world-*")):
            raise UsageError(
                f"--out {out} already holds a sweep; pass --resume to continue it, remove it "
                "or pass a new folder"
            )
        return {}, {}
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text(encoding="utf-8"))
    runs = {
        name: run
        for name, run in runs_from_json(data.get("runs") or {}).items()
        if run.model and Path(run.model).is_dir()
    }
    curves = {
        name: [CurvePoint(**point) for point in points]
        for name, points in (data.get("curves") or {}).items()
        if name in runs
    }
    return runs, curves


def _save(
    out: Path,
    runs: dict[str, StudyRun],
    curves: dict[str, list[CurvePoint]],
    write_json: Callable[[Path, dict], None],
) -> None:
    """What is measured so far (``OUT/sweep-runs.json``), so a sweep cut short keeps it."""
    write_json(
        out / RUNS_FILE,
        {
            "runs": {name: run.to_json() for name, run in runs.items()},
            "curves": {name: [asdict(p) for p in points] for name, points in curves.items()},
        },
    )


# --------------------------------------------------------------------------- the record


def sweep_record(
    config: SweepConfig,
    recipes: list[Recipe],
    runs: dict[str, StudyRun],
    curves: dict[str, list[CurvePoint]],
    seconds: float,
) -> dict[str, Any]:
    """sweep.json: the criterion, every configuration's numbers per world, the curves and
    the choice."""
    from .claims import KEEP_SHARE

    worlds = list(config.world_seeds)
    general = {w: runs.get(run_key(w, "general")) for w in worlds}
    general_r5 = {w: run.value(RECALL) if run else None for w, run in general.items()}
    scored = [
        score(
            recipe,
            index,
            {w: runs.get(run_key(w, recipe.name, config.seed)) for w in worlds},
            general_r5,
            KEEP_SHARE,
        )
        for index, recipe in enumerate(recipes)
    ]
    chosen = choose(scored)
    points = [p for recipe in recipes for w in worlds for p in _curve(recipe, w, config, runs)]
    for recipe in recipes:
        for w in worlds:
            points.extend(curves.get(run_key(w, recipe.name, config.seed), []))
    points.sort(key=lambda p: (p.world, p.lr, p.replay_ratio, p.steps, p.run_epochs))
    return {
        "kind": "sweep",
        "taxoclip_version": __version__,
        "criterion": SWEEP_CRITERION,
        "criterion_terms": SWEEP_CRITERION_TERMS,
        "statistic": TOP1,
        "kept": RECALL,
        "required_share": KEEP_SHARE,
        "config": config.to_json(),
        "worlds": [
            {
                "seed": w,
                "general": general[w].model if general[w] else None,
                "general_seen_top1": general[w].value(TOP1) if general[w] else None,
                "general_web_r5": general_r5[w],
            }
            for w in worlds
        ],
        "configurations": [_configuration_json(s, chosen) for s in scored],
        "curves": [asdict(p) for p in points],
        "chosen": _configuration_json(chosen, chosen) if chosen else None,
        "why": _why(scored, chosen),
        "seconds": {
            "total": round(seconds, 2),
            "runs": {name: run.seconds for name, run in runs.items() if run.seconds is not None},
        },
    }


def _curve(recipe: Recipe, world: int, config: SweepConfig, runs: dict[str, StudyRun]):
    """The end point of ``recipe``'s run on ``world`` as a curve point (its own schedule)."""
    run = runs.get(run_key(world, recipe.name, config.seed))
    general = runs.get(run_key(world, "general"))
    if run is None or run.steps is None:
        return []
    r5 = run.value(RECALL)
    return [
        CurvePoint(
            world=world,
            lr=recipe.lr,
            replay_ratio=recipe.replay_ratio,
            run_epochs=recipe.epochs,
            epochs=recipe.epochs,
            steps=run.steps,
            seen_top1=run.value(TOP1),
            web_r5=r5,
            web_share=_share(r5, general.value(RECALL) if general else None),
            final=True,
        )
    ]


def _configuration_json(entry: Scored, chosen: Scored | None) -> dict[str, Any]:
    return {
        "name": entry.recipe.name,
        "lr": entry.recipe.lr,
        "epochs": entry.recipe.epochs,
        "replay_ratio": entry.recipe.replay_ratio,
        "steps": {str(w.world): w.steps for w in entry.worlds},
        "worlds": {str(w.world): asdict(w) for w in entry.worlds},
        "mean_seen_top1": entry.mean_seen_top1,
        "mean_web_share": entry.mean_web_share,
        "eligible": entry.eligible,
        "chosen": chosen is not None and entry.recipe == chosen.recipe,
    }


def _why(scored: list[Scored], chosen: Scored | None) -> str:
    complete = [s for s in scored if s.mean_seen_top1 is not None]
    eligible = [s for s in complete if s.eligible]
    counts = (
        f"{len(eligible)} of {len(complete)} configurations measured on every world keep "
        f"the share ({len(scored)} in the grid)"
    )
    if chosen is None:
        return counts + "; none chosen, the study's defaults stay"
    tied = [
        s
        for s in eligible
        if round(s.mean_seen_top1, TIE_DECIMALS) == round(chosen.mean_seen_top1, TIE_DECIMALS)
    ]
    tie = f"; {len(tied)} tied at the best top-1, fewest epochs taken" if len(tied) > 1 else ""
    return f"{counts}; {chosen.recipe.name} has the best mean seen-species top-1{tie}"


# --------------------------------------------------------------------------- tables


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def format_table(sweep: dict[str, Any]) -> str:
    """The grid as a Markdown table: per configuration its numbers per world and means."""
    worlds = [str(w["seed"]) for w in sweep["worlds"]]
    per_world = " / ".join(f"w{w}" for w in worlds)
    lines = [
        f"| lr | epochs | steps ({per_world}) | replay | seen top-1 ({per_world}) | mean | "
        f"web r@5 kept ({per_world}) | mean | taxonomic ρ (mean) | keeps "
        f"{sweep['required_share']:.0%} | chosen |",
        "|---:|---:|---|---:|---|---:|---|---:|---:|---|---|",
    ]
    for c in sweep["configurations"]:
        cells = [c["worlds"].get(w) or {} for w in worlds]
        rhos = [(cell.get("context") or {}).get(CONTEXT[0]) for cell in cells]
        rho = sum(rhos) / len(rhos) if rhos and None not in rhos else None
        lines.append(
            f"| {c['lr']:g} | {c['epochs']} | "
            + " / ".join(str(cell.get("steps") or "–") for cell in cells)
            + f" | {c['replay_ratio']:g} | "
            + " / ".join(_num(cell.get("seen_top1")) for cell in cells)
            + f" | {_num(c['mean_seen_top1'])} | "
            + " / ".join(_pct(cell.get("web_share")) for cell in cells)
            + f" | {_pct(c['mean_web_share'])} | {_num(rho)} | "
            + f"{'yes' if c['eligible'] else 'no'} | {'**chosen**' if c['chosen'] else ''} |"
        )
    general = ", ".join(
        f"w{w['seed']} seen top-1 {_num(w['general_seen_top1'])}, web r@5 "
        f"{_num(w['general_web_r5'])}"
        for w in sweep["worlds"]
    )
    lines += [
        "",
        f"General model: {general}.",
        f"Criterion (fixed before the sweep): {sweep['criterion']}.",
        f"Choice: {sweep['why']}.",
    ]
    return "\n".join(lines) + "\n"


def format_curves(sweep: dict[str, Any]) -> str:
    """The learning curves as a Markdown table (one row per point)."""
    lines = [
        "| world | lr | replay | epochs | steps | seen top-1 | web r@5 kept | schedule |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in sweep["curves"]:
        schedule = (
            "its own (the run's end)"
            if p["final"]
            else f"inside the {p['run_epochs']}-epoch run's cosine"
        )
        lines.append(
            f"| {p['world']} | {p['lr']:g} | {p['replay_ratio']:g} | {p['epochs']} | "
            f"{p['steps']} | {_num(p['seen_top1'])} | {_pct(p['web_share'])} | {schedule} |"
        )
    return "\n".join(lines) + "\n"

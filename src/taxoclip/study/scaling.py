"""``taxoclip study scaling``: the paper's claims over data sizes, model seeds and worlds.

The design (``recipe="two-stage"``, the default, as BioCLIP 2 is made):

1. Per **world seed**, one SynthToL with its web corpus (``synth --web``): a tree, its
   taxonomic images and a general image–caption corpus of the same world.
2. **Stage 1**, once per world: a CLIP trained from scratch on the web captions (the
   stand-in for CLIP on LAION): the *general* model.
3. **Stage 2**, per model seed and data size: BioCLIP 2's recipe (a caption type per
   step) from the stage-1 weights on nested subsets of the taxonomic training images
   (study/subsets.py), with experience replay of the web corpus. At the largest size two
   more runs per seed, the same steps each: *flat* (scientific names only) and
   *no_replay* (the recipe without replay).
4. Every model — each run, the general model, the untrained twin per seed — is measured
   the same way (:func:`measure`): ``taxoclip analyze`` (values and nulls), the zero-shot
   of ``taxoclip eval --suite synth`` and the web scores (evaluate/web.py).
5. study/summary.py turns the replicate values into the claims table and the trends
   (the rule in study/claims.py) and the plot.

Budget: ``budget="steps"`` (the default) gives every stage-2 run the steps of ``epochs``
epochs over the largest size, so the curve measures data at a fixed compute. Stage 2's
peak learning rate (``lr``) and replay share (``replay_ratio``) are settings of their own
(``taxoclip study sweep``, study/sweep.py, chooses them and the epochs by a criterion
fixed in advance); ``preset="gpu"`` sizes the study for one GPU (``PRESETS`` in
study/config.py). ``recipe="scratch"`` skips the web corpus and stage 1 (the first
study's design): runs start from random weights, there is no general or no-replay
baseline, and ``ablation`` adds the flat run.

Outputs in OUT: ``world-<w>/`` per world (``synth/``, ``data/size-<n>/`` shards,
``stage1/`` run, ``analysis/general/``, ``seed-<s>/runs/<run>/``,
``seed-<s>/analysis/<run>/`` and ``seed-<s>/analysis/untrained/``), ``study.json`` and
``scaling.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxoclip import __version__
from taxoclip.errors import UsageError

from .claims import RULE
from .config import (
    BUDGETS,
    DEFAULT_SIZES,
    MIN_SIZES,
    REPLAY_RATIO,
    ScalingConfig,
    ScalingResult,
    apply_preset,
    parse_sizes,
)
from .record import (
    FORMAT_VERSION,
    Statistic,
    StudyRecord,
    StudyRun,
    StudyWorld,
    run_key,
    runs_from_json,
)
from .subsets import (
    SUBSET_RULE,
    check_counts,
    read_train_rows,
    select_subsets,
    subset_count,
    write_subset_shards,
)
from .summary import format_table, plot_study, summarise

__all__ = [
    "BUDGETS",
    "DEFAULT_SIZES",
    "MIN_SIZES",
    "REPLAY_RATIO",
    "ScalingConfig",
    "ScalingResult",
    "format_table",
    "measure",
    "parse_sizes",
    "plot_study",
    "run",
    "select_subsets",
    "subset_count",
    "zero_shot_loaded",
]

log = logging.getLogger(__name__)

HIERARCHICAL_TEXT = "random"  # BioCLIP 2's recipe: a caption type drawn per step (train/data.py)
FLAT_TEXT = "sci"  # scientific name only
ZERO_SHOT_LABEL_TEXT = "index"  # taxoclip eval's default class text
ZERO_SHOT_PROTOCOL = (
    "taxoclip eval --suite synth's zero-shot (evaluate.synth_zero_shot): test images of "
    "seen species (seen_top1) and of unseen species (unseen_top1, and unseen_genus_top1: "
    "the predicted species' genus right), every SynthToL species a candidate, classes "
    f"described by the {ZERO_SHOT_LABEL_TEXT!r} label text (7 ranks + common name) through "
    "the 80 templates"
)
BUDGET_WHY = {
    "steps": "every stage-2 run takes the optimisation steps of `epochs` epochs over the "
    "largest size, so the curve measures the number of distinct training images at a fixed "
    "compute rather than how long each model trained",
    "epochs": "every stage-2 run trains `epochs` epochs over its own data, so compute grows "
    "with the data (smaller sizes also get fewer steps)",
}


@dataclass
class RunSpec:
    name: str  # size-<n>, flat-<n>, no-replay-<n>
    kind: str  # "stage2", "flat", "no_replay"
    fraction: float
    n_train: int
    text_type: str
    replay: bool
    shards: str = ""


@dataclass
class World:
    seed: int
    root: Path  # OUT/world-<seed>
    synth: Path
    web: Path | None  # the web corpus folder (two-stage)
    counts: list[int]  # training images per size
    specs: list[RunSpec]  # the stage-2 runs of every model seed
    general: Path | None = None  # the stage-1 model


# --------------------------------------------------------------------------- measuring


def zero_shot_loaded(loaded, synth_root: Path, device: str = "cpu") -> dict[str, float | None]:
    """Zero-shot by the eval protocol (:data:`ZERO_SHOT_PROTOCOL`)."""
    from taxoclip.evaluate import EvalContext, read_synth_splits, synth_zero_shot

    loaded.model.to(device).eval()
    ctx = EvalContext(loaded, "trained", None, device=device, label_text=ZERO_SHOT_LABEL_TEXT)
    splits = read_synth_splits(synth_root)
    rows = {(r.task, r.metric): r.value for r in synth_zero_shot(ctx, splits)}
    unseen = len(splits.unseen) > 0
    return {
        "zero_shot.seen_top1": rows.get(("seen species", "zero-shot top-1")),
        "zero_shot.unseen_top1": rows.get(("unseen species", "zero-shot top-1"))
        if unseen
        else None,
        "zero_shot.unseen_genus_top1": (
            rows.get(("unseen species", "zero-shot top-1 genus")) if unseen else None
        ),
    }


def measure(
    model_dir: Path,
    synth: Path,
    web: Path | None,
    out: Path,
    seed: int,
    device: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Every statistic of one model: ``{"values": {statistic: {"value", "null_mean",
    "null_sd", "n_species", "n_images"}}, "analysis": dir, "seconds": {...}}``.

    ``taxoclip analyze`` without baseline or plots (the baselines are models of their
    own here), the eval protocol's zero-shot and, with a web corpus, the web scores.
    """
    from taxoclip.analyze import AnalyzeConfig
    from taxoclip.analyze import run as analyze
    from taxoclip.models import load_model

    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    result = analyze(
        AnalyzeConfig(
            model=str(model_dir),
            data=synth,
            out=out,
            baseline="none",
            seed=seed,
            device=device,
            plots=False,
            progress=progress,
        )
    )
    seconds["analysis"] = time.perf_counter() - tick
    values = values_from_analysis(json.loads((result.out / "metrics.json").read_text()))
    tick = time.perf_counter()
    loaded = load_model(str(model_dir), device=device)
    scores = zero_shot_loaded(loaded, synth, device)
    if web is not None:
        scores.update(web_values(loaded, web, device))
    seconds["zero_shot_web"] = time.perf_counter() - tick
    values.update(plain_values(scores))
    return {
        "values": values,
        "analysis": str(result.out),
        "skipped": result.skipped,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def values_from_analysis(metrics: dict, part: str = "model") -> dict[str, dict[str, Any]]:
    """``{"<metric>.<statistic>": {"value", "value_sd", "null_mean", "null_sd",
    "n_species", "n_images", "detectable"}}`` of an analysis' metrics.json, for its model
    (``part="model"``) or its untrained baseline (``part="baseline"``); ``value_sd`` is
    the value's own sampling sd where the metric gives one (a bootstrap over species), the
    counts are what the metric used (images only where the metric reads images rather than
    centroids); ``detectable`` is the model's one-seed margin (none for the baseline,
    which analyze gives no verdict)."""
    values: dict[str, dict[str, Any]] = {}
    prefix = "" if part == "model" else "baseline_"
    for name, entry in (metrics.get("metrics") or {}).items():
        used = entry.get("n_used") or {}
        result = entry.get(part) or {}
        for stat, cell in (entry.get("stats") or {}).items():
            null = cell.get(f"{prefix}null") or {}
            values[f"{name}.{stat}"] = {
                "value": cell.get(f"{prefix}value"),
                "value_sd": result.get(f"{stat}_sd"),
                "null_mean": null.get("mean"),
                "null_sd": null.get("sd"),
                "n_species": used.get("species"),
                "n_images": used.get("images"),
                "detectable": cell.get("detectable") if part == "model" else None,
            }
    return values


def plain_values(scores: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Scores without a null (zero-shot, web) in the shape of :func:`values_from_analysis`."""
    return {
        k: {"value": v, "null_mean": None, "null_sd": None, "n_species": None, "n_images": None}
        for k, v in scores.items()
    }


def web_values(loaded, web: Path, device: str = "cpu") -> dict[str, float | None]:
    """The web scores a claim reads (evaluate/web.py)."""
    from taxoclip.evaluate.web import WEB_KEYS, web_scores

    scores = web_scores(loaded, web, device)
    return {k: scores.get(k) for k in WEB_KEYS}


# --------------------------------------------------------------------------- the study


def run(config: ScalingConfig) -> ScalingResult:
    """Run the study of ``config`` (its ``--preset`` applied); write OUT (see the module
    docstring) and return it."""
    config = apply_preset(config)
    out = Path(config.out)
    runs = _earlier_runs(out, config.resume)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = _device(config.device)
    fractions = sorted(float(f) for f in config.sizes)
    worlds = []
    for world_seed in config.world_seeds:
        world = _prepare_world(config, world_seed, out, fractions)
        worlds.append(world)
        name = run_key(world.seed, "general")
        if world.general is not None and name not in runs:
            where = world.root / "analysis" / "general"
            runs[name] = _measured_baseline(
                "general", world, None, world.general, where, device, config.progress
            )
        for seed in config.model_seeds:
            for spec in world.specs:
                name = run_key(world.seed, spec.name, seed)
                if name not in runs:
                    runs[name] = _train_and_measure(config, world, spec, seed, device)
                    _log_runs(out, runs)
            name = run_key(world.seed, "untrained", seed)
            if name not in runs:
                trained = Path(runs[run_key(world.seed, world.specs[0].name, seed)].model)
                where = world.root / f"seed-{seed}" / "analysis" / "untrained"
                twin = _save_untrained(trained, where, seed)
                runs[name] = _measured_baseline(
                    "untrained", world, seed, twin, twin.parent, device, config.progress
                )
                _log_runs(out, runs)

    study = _study_record(config, worlds, runs, fractions)
    study.seconds = {"total": round(time.perf_counter() - started, 2)}
    from taxoclip.analyze import write_json

    write_json(out / "study.json", study.to_json())
    plot = None
    try:
        plot = plot_study(study, out / "scaling.png")
    except ImportError as exc:  # matplotlib missing
        log.warning("scaling.png skipped: %s", exc)
    models = {name: Path(r.model) for name, r in runs.items() if r.model}
    return ScalingResult(out, study, plot, format_table(study), runs=models)


def _study_record(
    config: ScalingConfig, worlds: list[World], runs: dict[str, StudyRun], fractions
) -> StudyRecord:
    """study.json: the design, the claims and trends, and every run's values."""
    summary = StudyRecord.from_json(
        summarise(runs, worlds=[w.seed for w in worlds], seeds=config.model_seeds)
    )
    n_max = worlds[0].counts[-1]
    return StudyRecord(
        format_version=FORMAT_VERSION,
        kind="scaling",
        taxoclip_version=__version__,
        recipe=config.recipe,
        config={**config.to_json(), "sizes": fractions},
        worlds=[
            StudyWorld(
                seed=w.seed,
                synth=str(w.synth),
                web=str(w.web) if w.web else None,
                general=str(w.general) if w.general else None,
                sizes=w.counts,
            )
            for w in worlds
        ],
        model_seeds=config.model_seeds,
        sizes=worlds[0].counts,
        subset_rule=SUBSET_RULE,
        budget=config.budget,
        budget_why=BUDGET_WHY[config.budget],
        steps_per_run=(
            config.epochs * (n_max // config.batch_size) if config.budget == "steps" else None
        ),
        text={
            "stage2": f"text_type={HIERARCHICAL_TEXT!r} (BioCLIP 2: a caption type per step)",
            "flat": f"text_type={FLAT_TEXT!r} (scientific name only), on the largest size",
            "stage1": "text_type='caption' (the web corpus' alt-text), identical captions "
            "in a batch counted as positives",
        },
        replay_ratio=config.replay_ratio if config.recipe == "two-stage" else None,
        zero_shot_protocol=ZERO_SHOT_PROTOCOL,
        verdict_rule=RULE,
        claims=summary.claims,
        trends=summary.trends,
        statistics=summary.statistics,
        runs=runs,
    )


def _earlier_runs(out: Path, resume: bool) -> dict[str, StudyRun]:
    """The runs a study cut short measured (``resume``), whose models are still there;
    without ``resume`` an OUT holding a study is refused."""
    holds_study = (out / "study.json").exists() or any(out.glob("world-*"))
    if not resume:
        if holds_study:
            raise UsageError(
                f"--out {out} already holds a study; pass --resume to continue it, remove it "
                "or pass a new folder"
            )
        return {}
    path = out / "runs.json"
    if not path.is_file():
        return {}
    runs = runs_from_json(json.loads(path.read_text()))
    return {name: run for name, run in runs.items() if run.model and Path(run.model).is_dir()}


def _log_runs(out: Path, runs: dict[str, StudyRun]) -> None:
    """The runs measured so far (``OUT/runs.json``), so a study cut short keeps them."""
    from taxoclip.analyze import write_json

    write_json(out / "runs.json", {name: run.to_json() for name, run in runs.items()})


def _prepare_world(config: ScalingConfig, world_seed: int, out: Path, fractions) -> World:
    """Generate (or read) the world, write its size shards, train its stage 1."""
    root = out / f"world-{world_seed}"
    root.mkdir(parents=True, exist_ok=True)
    two_stage = config.recipe == "two-stage"
    synth = _synth_root(config, world_seed, root, two_stage)
    web = synth / "web" if two_stage else None
    if web is not None and not (web / "web.json").is_file():
        raise UsageError(
            f"--data {synth} has no web corpus (web/web.json); the two-stage recipe needs one: "
            "generate it with taxoclip synth --web N, or pass --recipe scratch"
        )
    rows = read_train_rows(synth)
    subsets = select_subsets(rows, fractions, world_seed)
    counts = check_counts([len(subsets[f]) for f in fractions], fractions, config.batch_size)
    n_max = counts[-1]
    specs = [
        RunSpec(f"size-{n}", "stage2", f, n, HIERARCHICAL_TEXT, two_stage)
        for f, n in zip(fractions, counts, strict=True)
    ]
    if two_stage or config.ablation:
        specs.append(RunSpec(f"flat-{n_max}", "flat", fractions[-1], n_max, FLAT_TEXT, two_stage))
    if two_stage:
        specs.append(
            RunSpec(
                f"no-replay-{n_max}", "no_replay", fractions[-1], n_max, HIERARCHICAL_TEXT, False
            )
        )
    shards_for: dict[float, str] = {}
    for spec in specs:
        if spec.fraction not in shards_for:
            shards_for[spec.fraction] = write_subset_shards(
                synth,
                rows,
                subsets[spec.fraction],
                root / "data" / f"size-{spec.n_train}",
                world_seed,
            )
        spec.shards = shards_for[spec.fraction]
    world = World(world_seed, root, synth, web, counts, specs)
    if two_stage:
        world.general = _train_stage1(config, world)
    return world


def _synth_root(config: ScalingConfig, world_seed: int, root: Path, two_stage: bool) -> Path:
    if config.data is not None:
        return Path(config.data).resolve()
    if config.resume and (root / "synth" / "synth.json").is_file():
        return (root / "synth").resolve()
    from taxoclip.synth import SynthConfig, generate

    synth_config = SynthConfig(
        species=config.species,
        images_per_species=config.images_per_species,
        image_size=config.image_size,
        seed=world_seed,
        web=config.web if two_stage else 0,
    )
    return generate(root / "synth", synth_config, progress=config.progress).out.resolve()


def _web_shards(web: Path) -> str:
    from taxoclip.data import ShardSet

    return ShardSet.load(web / "shards", prefix="web").pattern


def _train_stage1(config: ScalingConfig, world: World) -> Path:
    """The general model: a CLIP from scratch on the web captions, once per world."""
    from taxoclip.train import TrainConfig, train

    shards = _web_shards(world.web)
    done = world.root / "stage1" / "model"
    if config.resume and (done / "open_clip_model.safetensors").is_file():
        return done
    if config.progress:
        print(f"[study] world {world.seed}: stage 1 (general) on {shards}", flush=True)
    result = train(
        TrainConfig(
            data=shards,
            out=str(world.root / "stage1"),
            model=config.model,
            text_type="caption",
            caption_positives=True,
            epochs=config.stage1_epochs,
            batch_size=config.batch_size,
            warmup=100 if config.warmup is None else config.warmup,
            precision=config.precision,
            workers=config.workers,
            seed=world.seed,
            device=config.device,
            progress=config.progress,
        )
    )
    _drop_checkpoints(result.run)
    return result.model_dir


def _drop_checkpoints(run: Path) -> None:
    """A study measures each run's exported ``model/``; the training checkpoints go. (A
    432-image run at the steps of 6 epochs over 3,744 images passes 52 epoch boundaries:
    4.7 GB of checkpoints, and the default study would hold over 50 GB.)"""
    import shutil

    shutil.rmtree(run / "checkpoints", ignore_errors=True)


def _train_and_measure(
    config: ScalingConfig,
    world: World,
    spec: RunSpec,
    seed: int,
    device: str,
    on_checkpoint: Sequence[Any] = (),
) -> StudyRun:
    """Train one stage-2 run from the general model (or from scratch), measure it.
    ``on_checkpoint``: train's checkpoint hooks (the sweep's learning curve)."""
    from taxoclip.train import TrainConfig, train

    n_max = world.counts[-1]
    steps = config.epochs * (n_max // config.batch_size) if config.budget == "steps" else None
    ref_steps = config.epochs * (n_max // config.batch_size)
    warmup = config.warmup if config.warmup is not None else min(100, ref_steps // 10)
    if config.progress:
        replay = "on" if spec.replay else "off"
        print(
            f"[study] world {world.seed}, seed {seed}: {spec.name} ({spec.n_train} images, "
            f"text {spec.text_type}, replay {replay})",
            flush=True,
        )
    tick = time.perf_counter()
    run_dir = world.root / f"seed-{seed}" / "runs" / spec.name
    if config.resume:  # a run cut short is not in runs.json: it starts again
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    result = train(
        TrainConfig(
            data=spec.shards,
            out=str(run_dir),
            model=str(world.general) if world.general is not None else config.model,
            text_type=spec.text_type,
            epochs=config.epochs,
            steps=steps,
            batch_size=config.batch_size,
            lr=config.lr,
            warmup=warmup,
            precision=config.precision,
            workers=config.workers,
            seed=seed,
            replay=_web_shards(world.web) if spec.replay else None,
            replay_ratio=config.replay_ratio,
            device=config.device,
            progress=config.progress,
        ),
        on_checkpoint,
    )
    train_seconds = time.perf_counter() - tick
    _drop_checkpoints(result.run)
    where = world.root / f"seed-{seed}" / "analysis" / spec.name
    measured = measure(
        result.model_dir, world.synth, world.web, where, seed, device, config.progress
    )
    measured["seconds"]["train"] = round(train_seconds, 2)
    params = json.loads((result.run / "params.json").read_text())
    return _with_measured(
        StudyRun(
            kind=spec.kind,
            world=world.seed,
            seed=seed,
            fraction=spec.fraction,
            n_train=spec.n_train,
            text_type=spec.text_type,
            replay=spec.replay,
            lr=config.lr,
            replay_ratio=config.replay_ratio if spec.replay else None,
            shards=spec.shards,
            run=str(result.run),
            model=str(result.model_dir),
            steps=result.steps,
            epochs=round(result.steps / max(1, params.get("steps_per_epoch", 1)), 3),
            final_loss=result.final_loss,
        ),
        measured,
    )


def _measured_baseline(
    kind: str, world: World, seed: int | None, model: Path, out: Path, device: str, progress: bool
) -> StudyRun:
    """A model that is not a training run of the study (the general model, the untrained
    twin), measured like every run."""
    baseline = StudyRun(kind=kind, world=world.seed, seed=seed, n_train=None, model=str(model))
    measured = measure(
        model, world.synth, world.web, out, world.seed if seed is None else seed, device, progress
    )
    return _with_measured(baseline, measured)


def _with_measured(run: StudyRun, measured: dict[str, Any]) -> StudyRun:
    """``run`` with what :func:`measure` returned (its JSON form) filled in."""
    run.values = {k: Statistic.from_json(v) for k, v in measured["values"].items()}
    run.analysis, run.skipped = measured["analysis"], measured["skipped"]
    run.seconds = measured["seconds"]
    return run


def _save_untrained(model_dir: Path, out: Path, seed: int) -> Path:
    """The untrained twin of the trained architecture (random weights from ``seed``)."""
    from taxoclip.models import load_model, save_model, untrained_twin

    twin = untrained_twin(load_model(str(model_dir)), seed=seed)
    return save_model(twin.model, out / "model", twin.model_cfg, twin.preprocess_cfg)


def _device(device: str) -> str:
    from taxoclip.models.device import resolve_device

    return resolve_device(device)

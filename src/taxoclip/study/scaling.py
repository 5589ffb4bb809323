"""``taxoclip study scaling``: the same model trained on growing subsets of one SynthToL.

Every analysis metric and the zero-shot numbers against the number of training images, beside the untrained baseline and each statistic's null, and
(``ablation``) beside a flat-label run trained on scientific names only.

Data sizes. ONE SynthToL is generated (or given with ``data``) and every size is a
subset of its training split: the same species, the same test split, and per seen
species the first ``floor(fraction × n_s)`` (at least one) of its training images in a
fixed, seeded order, so a smaller set is contained in every larger one. Each size is
written as its own shards (``OUT/data/size-<n>/``).

Budget. ``budget="steps"`` (the default) gives every run the same number of
optimisation steps, those of ``epochs`` epochs over the largest size, so a smaller set
is seen for more epochs: the curve then measures data (how many distinct images) at a
fixed compute, not how long a model was trained (a pilot found short training the main
confound; docs/analyze.md). ``budget="epochs"`` trains every size for
``epochs`` epochs instead (the compute grows with the data). study.json says which.

Baseline. The untrained twin (the trained architecture with random weights from
``seed``, as ``taxoclip analyze`` draws it) does not depend on the data size: it is
saved once (``OUT/analysis/untrained/model``), analysed once and measured once for
zero-shot, and every run's statistics are put beside it. Each run is analysed with
``baseline="none"``; its ``analysis/<run>/metrics.json`` then holds the model's values
and nulls, and study.json the merged entries (value, baseline, null, verdict) built by
the analysis module's own rules.

Zero-shot. Each model (and the baseline) is measured as ``taxoclip eval --suite synth``
reports it (:func:`taxoclip.evaluate.synth_zero_shot`): the held-out test images of seen
species and the images of unseen species, every SynthToL species a candidate, each class
described by pybioclip's index text through the 80 templates. study.json names it under
``zero_shot_protocol``; it is not the training monitor's one-caption number.

Outputs in ``OUT``: ``synth/`` (unless ``data`` was given), ``data/<run>/`` shards,
``runs/size-<n>/`` and ``runs/flat-<n>/`` (training runs, model in ``model/``),
``analysis/<run>/`` and ``analysis/untrained/``, ``study.json``, ``scaling.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taxoclip import __version__
from taxoclip.errors import InputError, UsageError

from .config import BUDGETS, DEFAULT_SIZES, MIN_SIZES, ScalingConfig, ScalingResult, parse_sizes

__all__ = [
    "BUDGETS",
    "DEFAULT_SIZES",
    "MIN_SIZES",
    "ScalingConfig",
    "ScalingResult",
    "format_table",
    "merged_stats",
    "parse_sizes",
    "plot_study",
    "run",
    "scaling_rows",
    "select_subsets",
    "subset_count",
    "zero_shot_loaded",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HIERARCHICAL_TEXT = "random"  # BioCLIP 2's recipe: a text type drawn per sample
FLAT_TEXT = "sci"  # scientific name only
ZERO_SHOT = ("zero_shot.seen_top1", "zero_shot.unseen_top1")
ZERO_SHOT_LABEL_TEXT = "index"  # taxoclip eval's default class text
ZERO_SHOT_PROTOCOL = (
    "taxoclip eval --suite synth's zero-shot top-1 (evaluate.synth_zero_shot): test images "
    "of seen species (seen_top1) and of unseen species (unseen_top1), every SynthToL "
    f"species a candidate, classes described by the {ZERO_SHOT_LABEL_TEXT!r} label text "
    "(7 ranks + common name) through the 80 templates"
)
BUDGET_WHY = {
    "steps": (
        "every run takes the optimisation steps of `epochs` epochs over the largest size, "
        "so the curve measures the number of distinct training images at a fixed compute "
        "rather than how long each model trained"
    ),
    "epochs": (
        "every run trains `epochs` epochs over its own data, so compute grows with the data "
        "(smaller sizes also get fewer steps)"
    ),
}


@dataclass
class RunSpec:
    name: str  # size-<n> or flat-<n>
    fraction: float
    n_train: int
    text_type: str
    shards: str = ""


# --------------------------------------------------------------------------- data sizes


def subset_count(n_images: int, fraction: float) -> int:
    """Training images a species keeps at ``fraction``: floor(fraction × n), at least 1."""
    return max(1, min(n_images, math.floor(fraction * n_images + 1e-9)))


def read_train_rows(synth_root: Path) -> list[dict[str, str]]:
    path = synth_root / "train" / "metadata.csv"
    if not (synth_root / "species.csv").is_file() or not path.is_file():
        raise InputError(
            f"--data {synth_root}: not a SynthToL root (needs species.csv and train/metadata.csv)"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "species_id" not in rows[0]:
        raise InputError(f"{path}: no training images with a species_id column")
    return rows


def select_subsets(
    rows: Sequence[Mapping[str, str]], fractions: Sequence[float], seed: int
) -> dict[float, list[int]]:
    """Per fraction, the indices into ``rows`` it keeps (nested: smaller ⊂ larger).

    Each species' images are put in a seeded random order once (rows sorted by file path
    first, so the order does not depend on the CSV's), and each fraction keeps a prefix.
    """
    by_species: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_species.setdefault(str(row["species_id"]), []).append(index)
    rng = np.random.default_rng([seed, 7])
    order: dict[str, list[int]] = {}
    for sid in sorted(by_species, key=lambda s: (len(s), s)):
        members = sorted(by_species[sid], key=lambda i: rows[i]["filepath"])
        order[sid] = [members[int(i)] for i in rng.permutation(len(members))]
    return {
        f: sorted(i for ids in order.values() for i in ids[: subset_count(len(ids), f)])
        for f in fractions
    }


class _Samples(Sequence):
    """Shard samples for some training rows, read from disk when the writer asks."""

    def __init__(self, root: Path, rows: Sequence[Mapping[str, str]], indices: Sequence[int]):
        self._root, self._rows, self._indices = root, rows, list(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int):
        from taxoclip.data import ShardSample
        from taxoclip.taxonomy import Lineage

        row = self._rows[self._indices[index]]
        path = self._root / "train" / row["filepath"]
        return ShardSample(
            key=Path(row["filepath"]).stem,
            jpg=path.read_bytes(),
            lineage=Lineage.from_mapping(row),
            common_name=row.get("common_name", ""),
            meta={
                "species_id": int(row["species_id"]),
                "sex": row.get("sex", ""),
                "life_stage": row.get("life_stage", ""),
            },
        )


def write_subset_shards(
    root: Path, rows: Sequence[Mapping[str, str]], indices: Sequence[int], out: Path, seed: int
) -> str:
    """The chosen training images as shards in ``out`` (sample order shuffled, seeded)."""
    from taxoclip.data import write_shards

    order = np.random.default_rng([seed, 11]).permutation(len(indices))
    chosen = [indices[int(i)] for i in order]
    n_shards = max(1, min(8, len(chosen) // 256))
    return write_shards(_Samples(root, rows, chosen), out, n_shards=n_shards).pattern


# --------------------------------------------------------------------------- metrics


def merged_stats(run_metrics: dict, baseline_metrics: dict | None) -> dict[str, dict]:
    """``{"<metric>.<statistic>": entry}``: the run's value and null beside the baseline's
    value, with the verdict ``taxoclip analyze`` would give (its own rules)."""
    from taxoclip.analyze import STATS, stat_entry

    merged: dict[str, dict] = {}
    base_all = (baseline_metrics or {}).get("metrics") or {}
    for name, entry in (run_metrics.get("metrics") or {}).items():
        specs = STATS.get(entry.get("kind", ""), [])
        base = (base_all.get(name) or {}).get("model")
        for spec in specs:
            merged[f"{name}.{spec[0]}"] = stat_entry(entry["model"], base, spec)
    return merged


def zero_shot_loaded(loaded, synth_root: Path, device: str = "cpu") -> dict[str, float | None]:
    """Zero-shot species top-1 by the eval protocol (:data:`ZERO_SHOT_PROTOCOL`): held-out
    images of seen species, and species never seen in training (None when SynthToL has
    none)."""
    from taxoclip.evaluate import EvalContext, read_synth_splits, synth_zero_shot

    loaded.model.to(device).eval()
    ctx = EvalContext(loaded, "trained", None, device=device, label_text=ZERO_SHOT_LABEL_TEXT)
    splits = read_synth_splits(synth_root)
    top1 = {r.task: r.value for r in synth_zero_shot(ctx, splits) if r.metric == "zero-shot top-1"}
    return {
        ZERO_SHOT[0]: top1.get("seen species"),
        ZERO_SHOT[1]: top1.get("unseen species") if len(splits.unseen) else None,
    }


def _zero_shot(model_dir: str | Path, synth_root: Path, device: str) -> dict[str, float | None]:
    from taxoclip.models import load_model

    return zero_shot_loaded(load_model(str(model_dir), device=device), synth_root, device)


def _analyse(config: ScalingConfig, model_dir: Path, synth_root: Path, out: Path):
    """``taxoclip analyze`` of one model without baseline or plots (the baseline is shared)."""
    from taxoclip.analyze import AnalyzeConfig
    from taxoclip.analyze import run as analyze

    return analyze(
        AnalyzeConfig(
            model=str(model_dir),
            data=synth_root,
            out=out,
            baseline="none",
            seed=config.seed,
            device=_device(config.device),
            plots=False,
            progress=config.progress,
        )  # fmt: skip
    )


# --------------------------------------------------------------------------- the study


def run(config: ScalingConfig) -> ScalingResult:
    """Run the study of ``config``; write OUT (see the module docstring) and return it."""
    fractions = sorted(float(f) for f in config.sizes)
    out = Path(config.out)
    if (out / "study.json").exists() or (out / "runs").exists():
        raise UsageError(f"--out {out} already holds a study; remove it or pass a new folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    synth_root = _synth_root(config, out)
    rows = read_train_rows(synth_root)
    timings["synth"] = time.perf_counter() - tick

    subsets = select_subsets(rows, fractions, config.seed)
    counts = _check_counts([len(subsets[f]) for f in fractions], fractions, config.batch_size)
    n_max = counts[-1]
    steps = config.epochs * (n_max // config.batch_size) if config.budget == "steps" else None
    ref_steps = config.epochs * (n_max // config.batch_size)
    warmup = config.warmup if config.warmup is not None else min(100, ref_steps // 10)
    specs = [
        RunSpec(f"size-{n}", f, n, HIERARCHICAL_TEXT)
        for f, n in zip(fractions, counts, strict=True)
    ]
    if config.ablation:
        specs.append(RunSpec(f"flat-{n_max}", fractions[-1], n_max, FLAT_TEXT))

    tick = time.perf_counter()
    _write_shards(specs, synth_root, rows, subsets, out, config.seed)
    timings["shards"] = time.perf_counter() - tick

    runs: dict[str, dict[str, Any]] = {}
    models: dict[str, Path] = {}
    for spec in specs:
        runs[spec.name], models[spec.name] = _train_and_measure(
            config, spec, synth_root, out, steps, warmup
        )

    # The untrained baseline: once, it does not depend on the data size.
    tick = time.perf_counter()
    baseline_dir, baseline_zero_shot = _save_untrained(
        models[specs[0].name], out, synth_root, config.seed, _device(config.device)
    )
    baseline = _analyse(config, baseline_dir, synth_root, out / "analysis" / "untrained")
    timings["baseline"] = time.perf_counter() - tick
    baseline_metrics = json.loads((baseline.out / "metrics.json").read_text())
    for entry in runs.values():
        run_metrics = json.loads((Path(entry["analysis"]) / "metrics.json").read_text())
        entry["stats"] = merged_stats(run_metrics, baseline_metrics)

    timings["total"] = time.perf_counter() - started
    study = {
        "format_version": FORMAT_VERSION,
        "kind": "scaling",
        "taxoclip_version": __version__,
        "config": _config_json(config, fractions),
        "synth": str(synth_root),
        "sizes": counts,
        "n_seen_species": len({r["species_id"] for r in rows}),
        "subset_rule": (
            "per seen species, floor(fraction x its training images), at least 1, taken as a "
            "prefix of one seeded random order: the same species and test split at every "
            "size, and each smaller set inside every larger one"
        ),
        "budget": config.budget,
        "budget_why": BUDGET_WHY[config.budget],
        "steps_per_run": steps,
        "warmup": warmup,
        "text": {
            "hierarchical": f"text_type={HIERARCHICAL_TEXT!r} (BioCLIP 2: a text type per sample)",
            "flat": f"text_type={FLAT_TEXT!r} (scientific name only), on the largest size",
        },
        "zero_shot_protocol": ZERO_SHOT_PROTOCOL,
        "zero_shot_captions": (
            f"the {ZERO_SHOT_LABEL_TEXT!r} text (7 ranks + common name) of each class through "
            "taxoclip eval's 80 templates, for every run; the flat model never saw the higher "
            "ranks in training, so its zero-shot numbers include that shift"
        ),
        "baseline": {
            "what": f"untrained twin of {config.model} (random weights, seed {config.seed}), "
            "analysed once",
            "model": str(baseline_dir),
            "analysis": str(baseline.out),
            "zero_shot": baseline_zero_shot,
        },
        "verdict_basis": baseline_metrics.get("verdict_basis"),
        "runs": runs,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    study["rows"] = scaling_rows(study)
    return _write_study(out, study, models)


def _synth_root(config: ScalingConfig, out: Path) -> Path:
    """The SynthToL the study reads: ``config.data``, or one generated into ``OUT/synth``."""
    if config.data is not None:
        return Path(config.data).resolve()
    from taxoclip.synth import SynthConfig, generate

    synth_config = SynthConfig(
        species=config.species,
        images_per_species=config.images_per_species,
        image_size=config.image_size,
        seed=config.seed,
    )
    return generate(out / "synth", synth_config, progress=config.progress).out.resolve()


def _check_counts(counts: list[int], fractions: list[float], batch_size: int) -> list[int]:
    if any(b <= a for a, b in zip(counts, counts[1:], strict=False)):
        raise UsageError(
            f"--sizes {fractions} give {counts} training images: not strictly growing "
            "(too few images per species for these fractions)"
        )
    if counts[0] < batch_size:
        raise UsageError(
            f"the smallest size has {counts[0]} training images, fewer than one batch of "
            f"{batch_size}; lower --batch-size or raise the smallest of --sizes"
        )
    return counts


def _write_shards(specs, synth_root, rows, subsets, out: Path, seed: int) -> None:
    """Shards per data size (a flat run shares its size's shards); sets ``spec.shards``."""
    shards_for: dict[float, str] = {}
    for spec in specs:
        if spec.fraction not in shards_for:
            shards_for[spec.fraction] = write_subset_shards(
                synth_root, rows, subsets[spec.fraction], out / "data" / f"size-{spec.n_train}",
                seed,
            )  # fmt: skip
        spec.shards = shards_for[spec.fraction]


def _train_and_measure(
    config: ScalingConfig, spec: RunSpec, synth_root: Path, out: Path, steps, warmup: int
) -> tuple[dict[str, Any], Path]:
    """Train one run, measure its zero-shot, analyse it: (its study.json entry, model dir)."""
    from taxoclip.train import TrainConfig, train

    if config.progress:
        print(f"[study] {spec.name}: {spec.n_train} training images, text {spec.text_type}")
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    result = train(
        TrainConfig(
            data=spec.shards,
            out=str(out / "runs" / spec.name),
            model=config.model,
            text_type=spec.text_type,
            epochs=config.epochs,
            steps=steps,
            batch_size=config.batch_size,
            warmup=warmup,
            workers=1,
            seed=config.seed,
            device=config.device,
            progress=config.progress,
        )  # fmt: skip
    )
    seconds["train"] = time.perf_counter() - tick
    tick = time.perf_counter()
    zero_shot = _zero_shot(result.model_dir, synth_root, _device(config.device))
    seconds["zero_shot"] = time.perf_counter() - tick
    tick = time.perf_counter()
    analysis = _analyse(config, result.model_dir, synth_root, out / "analysis" / spec.name)
    seconds["analysis"] = time.perf_counter() - tick
    params = json.loads((result.run / "params.json").read_text())
    entry = {
        "kind": "flat" if spec.text_type == FLAT_TEXT else "hierarchical",
        "fraction": spec.fraction,
        "n_train": spec.n_train,
        "text_type": spec.text_type,
        "shards": spec.shards,
        "run": str(result.run),
        "model": str(result.model_dir),
        "analysis": str(analysis.out),
        "steps": result.steps,
        "epochs": round(result.steps / max(1, params.get("steps_per_epoch", 1)), 3),
        "final_loss": result.final_loss,
        "zero_shot": zero_shot,
        "skipped": analysis.skipped,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    return entry, result.model_dir


def _write_study(out: Path, study: dict, models: dict[str, Path]) -> ScalingResult:
    from taxoclip.analyze import write_json

    write_json(out / "study.json", study)
    plot = None
    try:
        plot = plot_study(study, out / "scaling.png")
    except ImportError as exc:  # matplotlib missing
        log.warning("scaling.png skipped: %s", exc)
    return ScalingResult(out, study, plot, format_table(study), runs=models)


def _device(device: str) -> str:
    from taxoclip.models.device import resolve_device

    return resolve_device(device)


def _save_untrained(
    model_dir: Path, out: Path, synth_root: Path, seed: int, device: str
) -> tuple[Path, dict]:
    from taxoclip.models import load_model, save_model, untrained_twin

    twin = untrained_twin(load_model(str(model_dir)), seed=seed)
    path = save_model(twin.model, out / "analysis" / "untrained" / "model", twin.model_cfg,
                      twin.preprocess_cfg)  # fmt: skip
    return path, _zero_shot(path, synth_root, device)


def _config_json(config: ScalingConfig, fractions: list[float]) -> dict:
    data = config.to_json()
    data["sizes"] = fractions
    return data


# --------------------------------------------------------------------------- rows, table, plot


def scaling_rows(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows in :func:`taxoclip.analyze.plots.plot_scaling`'s format, one per run and
    statistic (zero-shot too), with ``"ablation": True`` on the flat-label run."""
    rows = []
    base_zero = study["baseline"]["zero_shot"]
    for name, run in study["runs"].items():
        flat = run["kind"] == "flat"
        for key in ZERO_SHOT:
            if run["zero_shot"].get(key) is not None:
                rows.append({"data_size": run["n_train"], "metric": key, "run": name,
                             "value": run["zero_shot"][key], "baseline_value": base_zero.get(key),
                             "ablation": flat})  # fmt: skip
        for key, entry in run["stats"].items():
            null = entry.get("null") or {}
            rows.append({"data_size": run["n_train"], "metric": key, "run": name,
                         "value": entry.get("value"), "baseline_value": entry.get("baseline_value"),
                         "null_mean": null.get("mean"), "null_sd": null.get("sd"),
                         "verdict": entry.get("verdict"), "ablation": flat})  # fmt: skip
    return rows


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def format_table(study: Mapping[str, Any]) -> str:
    """Statistic per line; a column per size, the flat run, the untrained baseline and the
    null (of the largest hierarchical run)."""
    runs = study["runs"]
    sized = [n for n, r in runs.items() if r["kind"] == "hierarchical"]
    flat = [n for n, r in runs.items() if r["kind"] == "flat"]
    headers = [f"n={runs[n]['n_train']}" for n in sized] + [
        f"flat n={runs[n]['n_train']}" for n in flat
    ]
    lines = [f"{'statistic':42} " + " ".join(f"{h:>11}" for h in headers)
             + f" {'untrained':>10} {'null (largest)':>16}"]  # fmt: skip
    by_metric: dict[str, dict[str, dict]] = {}
    for row in study["rows"]:
        by_metric.setdefault(row["metric"], {})[row["run"]] = row
    for metric, cells in by_metric.items():
        values = [_fmt((cells.get(n) or {}).get("value")) for n in sized + flat]
        last = cells.get(sized[-1]) or {}
        null = (
            f"{_fmt(last.get('null_mean'))}±{_fmt(last.get('null_sd'))}"
            if last.get("null_mean") is not None
            else ""
        )
        lines.append(f"{metric:42} " + " ".join(f"{v:>11}" for v in values)
                     + f" {_fmt(last.get('baseline_value')):>10} {null:>16}")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_study(study: Mapping[str, Any], path: str | Path) -> Path:
    """Small multiples, one panel per statistic: value against training images (log x),
    the untrained baseline dashed, the null mean dotted, the flat-label run as a red ✕.

    The statistics live on different scales (FDR, effective dimension, accuracies), so
    one panel each rather than :func:`~taxoclip.analyze.plots.plot_scaling`'s single axis;
    the rows are in its format (``study["rows"]``) and it can draw them as they are.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from taxoclip.analyze.plots import save_figure

    table: dict[str, list[dict]] = {}
    for row in study["rows"]:
        table.setdefault(row["metric"], []).append(row)
    metrics = list(table)
    cols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.7 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        rows = sorted(table[metric], key=lambda r: r["data_size"])
        main = [r for r in rows if not r["ablation"] and r["value"] is not None]
        xs = [r["data_size"] for r in main]
        ax.plot(xs, [r["value"] for r in main], marker="o", color="tab:blue", linewidth=1.8)
        base = [r for r in main if r.get("baseline_value") is not None]
        if base:
            ax.plot([r["data_size"] for r in base], [r["baseline_value"] for r in base],
                    linestyle="--", color="0.35", linewidth=1.2)  # fmt: skip
        null = [r for r in main if r.get("null_mean") is not None]
        if null:
            ax.plot([r["data_size"] for r in null], [r["null_mean"] for r in null],
                    linestyle=":", color="tab:green", linewidth=1.2)  # fmt: skip
        for r in rows:
            if r["ablation"] and r["value"] is not None:
                ax.scatter([r["data_size"]], [r["value"]], marker="X", s=70, color="tab:red",
                           zorder=3)  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color="tab:blue", marker="o", label="hierarchical text (trained)"),
        Line2D([], [], color="0.35", linestyle="--", label="untrained baseline"),
        Line2D([], [], color="tab:green", linestyle=":", label="null mean (shuffled labels)"),
    ]
    if any(r["ablation"] for r in study["rows"]):
        handles.append(Line2D([], [], color="tab:red", marker="X", linestyle="",
                              label="flat labels (scientific name only)"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle(
        f"Scaling on SynthToL: every statistic against training images (log scale), "
        f"budget: same {study['budget']}",
        fontsize=11,
    )
    return save_figure(fig, path)

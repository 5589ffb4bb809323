"""``taxoclip eval --suite bioclip2 --root DIR``: whichever published benchmarks exist
under DIR, each with the protocol the paper uses for it, beside the published numbers
(:mod:`.published_numbers`). Benchmarks absent under DIR show the published numbers and
"not on disk"; a benchmark (or one set of a suite of sets) that cannot be read or run is
reported with its reason in the notes and the results, and the others go on."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from taxoclip.errors import TaxoclipError

from . import protocols
from . import published_numbers as paper
from .benchmarks import BENCHMARKS, find_benchmarks, load_parts
from .dataset import EvalSet
from .suites import EvalContext, Result, _features, few_shot, zero_shot

log = logging.getLogger(__name__)
SUITE = "bioclip2"


def _split_arrays(evalset: EvalSet, mask: np.ndarray):
    kept = evalset.subset(mask)
    if kept.splits is None:
        raise ValueError(f"{evalset.name} defines no train/test split")
    split = np.array(kept.splits)
    return kept, split == "train", split == "test"


def _run(ctx: EvalContext, protocol: str, evalset: EvalSet) -> list[Result]:
    if protocol == "zero_shot":
        return zero_shot(ctx, SUITE, evalset.name, evalset)
    if protocol == "few_shot":
        return few_shot(ctx, SUITE, evalset.name, evalset, shots=(1, 5))
    if protocol == "few_shot_1":
        return few_shot(ctx, SUITE, evalset.name, evalset, shots=(1,))
    mask, values = _features(ctx, evalset)
    if protocol in ("mlp_attributes_exact_match", "mlp_attributes_macro_f1"):
        kept, train, test = _split_arrays(evalset, mask)
        result = protocols.mlp_attributes(
            values[train], kept.attributes[train], values[test], kept.attributes[test], seed=0
        )
        metric = "exact_match" if protocol.endswith("exact_match") else "macro_f1"
        return [
            Result(
                SUITE,
                evalset.name,
                metric.replace("_", "-"),
                result[metric],
                ctx.model_name,
                int(test.sum()),
            )
        ]
    if protocol == "svm_binary_tasks":
        kept = evalset.subset(mask)
        result = protocols.svm_binary_tasks(
            values,
            np.array(kept.labels).astype(int),
            list(kept.task_ids),
            list(kept.splits),
            seed=0,
        )
        return [
            Result(
                SUITE,
                evalset.name,
                "pooled accuracy",
                result["pooled_accuracy"],
                ctx.model_name,
                result["n_tasks"],
            )
        ]
    if protocol == "gcd":
        kept = evalset.subset(mask)
        known = set(evalset.extra.get("known_classes", []))
        labels = np.array(kept.labels)
        splits = np.array(kept.splits) if kept.splits else np.full(len(labels), "train")
        known_mask = np.isin(labels, list(known)) & (splits == "train")
        _, codes = np.unique(labels, return_inverse=True)
        n_clusters = int(evalset.extra.get("n_clusters") or len(set(labels)))
        result = protocols.gcd_accuracy(values, codes, known_mask, n_clusters=n_clusters, seed=0)
        return [
            Result(
                SUITE,
                evalset.name,
                f"GCD accuracy ({part})",
                result[part],
                ctx.model_name,
                int((~known_mask).sum()),
            )
            for part in ("all", "old", "new")
        ]
    raise ValueError(f"unknown protocol {protocol}")


#: The row that stands for each protocol when it has no value.
PRIMARY_METRIC = {
    "zero_shot": "zero-shot top-1",
    "few_shot": "1-shot",
    "few_shot_1": "1-shot",
    "mlp_attributes_exact_match": "exact-match",
    "mlp_attributes_macro_f1": "macro-f1",
    "svm_binary_tasks": "pooled accuracy",
    "gcd": "GCD accuracy (all)",
}

#: Notes of rows that stand for a failure (they make ``taxoclip eval`` exit 3, or 1).
FAILED_NOTES = ("not read", "not run")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (TaxoclipError, OSError)) else f"{type(exc).__name__}: {text}"


def _context_for(ctx: EvalContext, name: str) -> EvalContext:
    """BioCLIP 2's class text for benchmark ``name`` unless ``--label-text`` chose another
    than the default (pybioclip's index text)."""
    if ctx.label_text != "index":
        return ctx
    style = BENCHMARKS[name].text_type
    return dataclasses.replace(ctx, label_text=style)


def _mean_row(ctx: EvalContext, task: str, metric: str, values: list[float], total: int) -> Result:
    if len(values) == total and all(v == v for v in values):
        return Result(SUITE, task, metric, float(np.mean(values)), ctx.model_name, total)
    done = sum(1 for v in values if v == v)
    return Result(
        SUITE,
        task,
        metric,
        float("nan"),
        ctx.model_name,
        done,
        note=f"incomplete: {done} of {total} ran",
    )


def bioclip2_suite(
    ctx: EvalContext, root: Path, with_published: bool | None = None
) -> tuple[list[Result], list[str]]:
    """Every registered benchmark for ``ctx``'s model: results where it is under ``root``,
    a row noting "not on disk" / "not read: …" / "not run: …" where it is not, and (for the
    trained model's call, or when ``with_published``) the published numbers as rows of
    their own model names (``"BioCLIP 2 (published)"``, fractions like ours)."""
    root = Path(root)
    if with_published is None:
        with_published = ctx.model_name == "trained"
    found, skipped = find_benchmarks(root)
    notes = [f"skipped {name}: {reason}" for name, reason in skipped]
    rows: list[Result] = []
    for name in BENCHMARKS:
        if name not in found:
            continue
        bench_ctx = _context_for(ctx, name)
        first_metric = PRIMARY_METRIC[BENCHMARKS[name].protocols[0]]
        try:
            parts = load_parts(name, root)
        except Exception as exc:  # an unreadable benchmark is reported; the suite goes on
            parts = [(name, _raiser(exc))]
        for set_name, load in parts:
            try:
                evalset = load()
            except Exception as exc:  # idem: report with its reason, go on with the others
                reason = _reason(exc)
                notes.append(f"could not read {set_name}: {reason}")
                rows.append(
                    Result(
                        SUITE,
                        set_name,
                        first_metric,
                        float("nan"),
                        ctx.model_name,
                        note=f"not read: {reason}",
                    )
                )
                continue
            for path, reason in evalset.missing:
                log.warning("%s: %s: %s", evalset.name, path, reason)
            for protocol in BENCHMARKS[name].protocols:
                try:
                    rows += _run(bench_ctx, protocol, evalset)
                except ValueError as exc:  # e.g. too few images for the protocol: report, go on
                    notes.append(f"could not run {protocol} on {evalset.name}: {exc}")
                    rows.append(
                        Result(
                            SUITE,
                            evalset.name,
                            PRIMARY_METRIC[protocol],
                            float("nan"),
                            ctx.model_name,
                            len(evalset),
                            note=f"not run: {exc}",
                        )
                    )
    extra = _published_rows(ctx, rows)
    camera = [i for i, r in enumerate(rows) if r.task.startswith("camera_trap/")]
    if camera and extra and extra[0].task == paper.CAMERA_TRAP_TASK:  # beside its sets
        rows.insert(camera[-1] + 1, extra.pop(0))
    rows += extra
    notes.append(
        "published columns: " + ", ".join(paper.SHOWN) + f" from the {paper.SOURCE}, "
        "as fractions like ours; class texts as BioCLIP 2's (taxon_com for camera traps and "
        "Rare Species, the class name elsewhere) unless --label-text names another"
    )
    if with_published:
        for column in paper.COLUMNS:
            for model in paper.SHOWN:
                value = paper.published(model, column) / 100
                rows.append(Result(SUITE, column.task, column.metric, value, paper.label(model)))
    return rows, notes


def _raiser(exc: Exception):
    def load() -> EvalSet:
        raise exc

    return load


def _published_rows(ctx: EvalContext, rows: list[Result]) -> list[Result]:
    """Our value (or why there is none) for every published column: the camera-trap mean of
    the sets, a "not on disk" row for each benchmark absent under the root, and the two
    means when every benchmark of their table ran."""
    mine = [r for r in rows if r.model == ctx.model_name]
    ours = {(r.task, r.metric): r for r in mine}
    out: list[Result] = []
    camera = [
        r for r in mine if r.task.startswith("camera_trap/") and r.metric == "zero-shot top-1"
    ]
    ran = [r for r in camera if not r.note]
    if ran:
        mean = float(np.mean([r.value for r in ran]))
        note = "" if len(ran) == len(camera) else f"mean of {len(ran)} of {len(camera)} sets read"
        ours[(paper.CAMERA_TRAP_TASK, paper.CAMERA_TRAP_METRIC)] = Result(
            SUITE,
            paper.CAMERA_TRAP_TASK,
            paper.CAMERA_TRAP_METRIC,
            mean,
            ctx.model_name,
            sum(r.n for r in ran),
        )
        out.append(ours[(paper.CAMERA_TRAP_TASK, paper.CAMERA_TRAP_METRIC)])
        if note:
            log.warning("%s: %s", paper.CAMERA_TRAP_TASK, note)
    elif camera:  # every set failed: the column says so
        out.append(
            Result(
                SUITE,
                paper.CAMERA_TRAP_TASK,
                paper.CAMERA_TRAP_METRIC,
                float("nan"),
                ctx.model_name,
                note=camera[0].note,
            )
        )
        ours[(paper.CAMERA_TRAP_TASK, paper.CAMERA_TRAP_METRIC)] = out[-1]
    by_table: dict[str, list[float]] = {"zero-shot": [], "beyond": []}
    for column in paper.COLUMNS:
        if column.task in (paper.ZERO_SHOT_MEAN_TASK, paper.BEYOND_MEAN_TASK):
            continue
        row = ours.get((column.task, column.metric))
        if row is None:
            row = Result(
                SUITE, column.task, column.metric, float("nan"), ctx.model_name, note="not on disk"
            )
            out.append(row)
        by_table[column.table].append(float("nan") if row.note else row.value)
    out.append(
        _mean_row(
            ctx,
            paper.ZERO_SHOT_MEAN_TASK,
            "zero-shot top-1",
            by_table["zero-shot"],
            len(paper.ZERO_SHOT_COLUMNS) - 1,
        )
    )
    out.append(
        _mean_row(
            ctx, paper.BEYOND_MEAN_TASK, "mean", by_table["beyond"], len(paper.BEYOND_COLUMNS) - 1
        )
    )
    return out

"""``taxoclip eval --suite bioclip2 --root DIR``: whichever published benchmarks exist
under DIR, each with the protocol the paper uses for it; the others are skipped with a
line saying why."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import protocols
from .benchmarks import BENCHMARKS, PUBLISHED, find_benchmarks, load_benchmark
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
        result = protocols.mlp_attributes(values[train], kept.attributes[train], values[test],
                                          kept.attributes[test], seed=0)  # fmt: skip
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
        result = protocols.svm_binary_tasks(values, np.array(kept.labels).astype(int), list(kept.task_ids),
                                            list(kept.splits), seed=0)  # fmt: skip
        return [Result(SUITE, evalset.name, "pooled accuracy", result["pooled_accuracy"], ctx.model_name,
                       result["n_tasks"])]  # fmt: skip
    if protocol == "gcd":
        kept = evalset.subset(mask)
        known = set(evalset.extra.get("known_classes", []))
        labels = np.array(kept.labels)
        splits = np.array(kept.splits) if kept.splits else np.full(len(labels), "train")
        known_mask = np.isin(labels, list(known)) & (splits == "train")
        _, codes = np.unique(labels, return_inverse=True)
        result = protocols.gcd_accuracy(
            values, codes, known_mask, n_clusters=len(set(labels)), seed=0
        )
        return [Result(SUITE, evalset.name, f"GCD accuracy ({part})", result[part], ctx.model_name,
                       int((~known_mask).sum())) for part in ("all", "old", "new")]  # fmt: skip
    raise ValueError(f"unknown protocol {protocol}")


def bioclip2_suite(ctx: EvalContext, root: Path) -> tuple[list[Result], list[str]]:
    found, skipped = find_benchmarks(root)
    notes = [f"skipped {name}: {reason}" for name, reason in skipped]
    rows: list[Result] = []
    for name in found:
        loaded = load_benchmark(name, root)
        sets = loaded if isinstance(loaded, list) else [loaded]
        for evalset in sets:
            for path, reason in evalset.missing:
                log.warning("%s: %s: %s", evalset.name, path, reason)
            for protocol in BENCHMARKS[name].protocols:
                try:
                    rows += _run(ctx, protocol, evalset)
                except ValueError as exc:  # e.g. too few images for the protocol: report, go on
                    notes.append(f"could not run {protocol} on {evalset.name}: {exc}")
    species = [r.value for r in rows if r.metric == "zero-shot top-1" and r.model == ctx.model_name]
    if species:
        rows.append(Result(SUITE, f"mean of {len(species)} species sets", "zero-shot top-1",
                           float(np.mean(species)), ctx.model_name))  # fmt: skip
        notes.append(
            f"BioCLIP 2 published: zero-shot top-1 mean over its 10 species benchmarks "
            f"{PUBLISHED['zero_shot_species_mean_10']}; beyond-species mean {PUBLISHED['beyond_species_mean']} "
            "(per-benchmark published numbers are not shipped: no quotable source was available)"
        )
    return rows, notes

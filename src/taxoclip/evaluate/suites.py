"""What ``taxoclip eval`` runs: a metadata folder, the SynthToL suite, the published suite.

Each returns :class:`Result` rows (suite, task, metric, value, model, n); the runner
puts the trained model's rows beside the untrained baseline's and writes
``results.json`` / ``results.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taxoclip.errors import InputError
from taxoclip.models import LoadedModel
from taxoclip.runtime.scoring import softmax
from taxoclip.taxonomy import Lineage, clean_name

from . import hierarchical, protocols
from .config import LABEL_TEXTS  # noqa: F401 - re-exported: the class-text styles
from .dataset import EvalSet, read_metadata_folder
from .features import class_embeddings, image_features

log = logging.getLogger(__name__)


@dataclass
class Result:
    suite: str
    task: str
    metric: str
    value: float
    model: str = "trained"
    n: int = 0
    note: str = ""  # why there is no value: "not on disk", "not read: …", "not run: …"


@dataclass
class EvalContext:
    loaded: LoadedModel
    model_name: str  # "trained" / "untrained"
    cache_dir: Path | None
    batch_size: int = 64
    device: str = "cpu"
    progress: bool = False
    label_text: str = "index"
    encoder: Any = None  # an ONNX image encoder (--runtime onnx) instead of loaded.model


def class_text(label: str, lineage: Lineage | None, common: str, style: str) -> str:
    """The string each class is described by before the 80 templates."""
    common = clean_name(common)
    if style == "as-given" or lineage is None or lineage.is_empty:
        return label
    if style == "index":  # pybioclip's tree-of-life text: 7 ranks (holes as "") + common
        return " ".join([*lineage.ranks, common])
    sci, taxon = lineage.scientific_name, lineage.taxonomic_name
    return {
        "sci": sci,
        "com": common or sci,
        "taxon": taxon,
        "sci_com": f"{sci} with common name {common}" if common else sci,
        "taxon_com": f"{taxon} with common name {common}" if common else taxon,
    }[style]


def _features(ctx: EvalContext, evalset: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    features = image_features(
        ctx.loaded,
        evalset.filepaths,
        ctx.cache_dir,
        ctx.batch_size,
        device=ctx.device,
        progress=ctx.progress,
        encoder=ctx.encoder,
    )
    for index, reason in features.errors.items():
        log.warning("%s: %s skipped: %s", evalset.name, evalset.filepaths[index], reason)
    return features.full(len(evalset))


def _classes(evalset: EvalSet) -> tuple[list[str], list[Lineage | None], list[str]]:
    labels, lineages, commons = [], [], []
    for i, label in enumerate(evalset.labels):
        if label in labels:
            continue
        labels.append(label)
        lineages.append(evalset.lineages[i] if evalset.lineages else None)
        commons.append(evalset.common_names[i] if evalset.common_names else "")
    return labels, lineages, commons


def zero_shot(
    ctx: EvalContext, suite: str, task: str, evalset: EvalSet, candidates: EvalSet | None = None
) -> list[Result]:
    """Top-1/5 among the classes of ``candidates`` (default: the set's own classes), and
    the hierarchical metrics when lineages are known."""
    mask, values = _features(ctx, evalset)
    kept = evalset.subset(mask)
    pool = candidates or kept
    labels, lineages, commons = _classes(pool)
    texts = [
        class_text(lab, lin, com, ctx.label_text)
        for lab, lin, com in zip(labels, lineages, commons, strict=True)
    ]
    embeddings = class_embeddings(ctx.loaded, texts, ctx.device)
    scale = float(ctx.loaded.model.logit_scale.detach().exp())
    logits = protocols.zero_shot_logits(values, embeddings, scale)
    position = {label: i for i, label in enumerate(labels)}
    truth = np.array([position.get(label, -1) for label in kept.labels])
    top = protocols.topk_accuracy(logits, truth, ks=(1, 5))
    n = len(kept)
    rows = [Result(suite, task, f"zero-shot top-{k}", v, ctx.model_name, n) for k, v in top.items()]
    if kept.lineages and all(lineages):
        probs = softmax(logits)
        table = hierarchical.topk_at_ranks(probs, lineages, kept.lineages, ks=(1,))
        for rank in ("genus", "family", "order"):
            rows.append(
                Result(suite, task, f"zero-shot top-1 {rank}", table[rank][1], ctx.model_name, n)
            )
        severity = hierarchical.mistake_severity(probs, lineages, kept.lineages)
        rows.append(
            Result(
                suite,
                task,
                "mistake severity (ranks)",
                severity["mean_distance"],
                ctx.model_name,
                severity["n_mistakes"],
            )
        )
    return rows


def few_shot(
    ctx: EvalContext, suite: str, task: str, evalset: EvalSet, shots=(1, 5)
) -> list[Result]:
    mask, values = _features(ctx, evalset)
    labels = np.array(evalset.subset(mask).labels)
    _, codes = np.unique(labels, return_inverse=True)
    rows = []
    for k in shots:
        try:
            result = protocols.few_shot_ncm(values, codes, shots=k, folds=5, seed=0)
            value = result.mean
        except ValueError as exc:  # no class has enough images: say so, keep going
            log.warning("%s %s: %s", suite, task, exc)
            value = float("nan")
        rows.append(Result(suite, task, f"{k}-shot", value, ctx.model_name, len(labels)))
    return rows


# --------------------------------------------------------------------------- suites


def folder_suite(ctx: EvalContext, folder: Path) -> list[Result]:
    evalset = read_metadata_folder(folder)
    for path, reason in evalset.missing:
        log.warning("%s: %s", path, reason)
    return zero_shot(ctx, "folder", evalset.name, evalset) + few_shot(
        ctx, "folder", evalset.name, evalset
    )


def _species_table(synth: Path) -> dict[str, dict[str, str]]:
    with (synth / "species.csv").open(newline="", encoding="utf-8") as handle:
        return {row["species"]: row for row in csv.DictReader(handle)}


@dataclass
class SynthSplits:
    """A SynthToL's evaluation sets: its training images, the test images of seen and of
    unseen species, and every image (whose species are the zero-shot candidates)."""

    root: Path
    train: EvalSet
    seen: EvalSet
    unseen: EvalSet
    everything: EvalSet


def read_synth_splits(synth: Path) -> SynthSplits:
    if not (synth / "species.csv").is_file() or not (synth / "test" / "metadata.csv").is_file():
        raise InputError(
            f"{synth} is not a SynthToL folder (needs species.csv and test/metadata.csv)"
        )
    test = read_metadata_folder(synth / "test", "synth-test")
    train = read_metadata_folder(synth / "train", "synth-train")
    seen_column = np.array(test.extra["columns"]["seen"]) == "True"
    everything = EvalSet(
        "all species",
        train.filepaths + test.filepaths,
        train.labels + test.labels,
        lineages=train.lineages + test.lineages,
        common_names=train.common_names + test.common_names,
    )
    return SynthSplits(
        synth, train, test.subset(seen_column), test.subset(~seen_column), everything
    )


#: The unseen-species rows the SynthToL suite reports (top-5 and severity are for seen).
UNSEEN_METRICS = ("zero-shot top-1", "zero-shot top-1 genus", "zero-shot top-1 family")


def synth_zero_shot(ctx: EvalContext, splits: SynthSplits) -> list[Result]:
    """Zero-shot on SynthToL's test images as ``taxoclip eval --suite synth`` reports it:
    seen species (held-out images) and unseen species, every species a candidate, each
    class described by ``ctx.label_text`` through the 80 templates."""
    rows = zero_shot(ctx, "synth", "seen species", splits.seen, candidates=splits.everything)
    if len(splits.unseen):
        unseen = zero_shot(
            ctx, "synth", "unseen species", splits.unseen, candidates=splits.everything
        )
        rows += [row for row in unseen if row.metric in UNSEEN_METRICS]
    return rows


def synth_suite(ctx: EvalContext, synth: Path) -> list[Result]:
    """SynthToL: seen species (held-out images), unseen species, habitat as an attribute
    task, beak length as a regression task."""
    splits = read_synth_splits(synth)
    train, seen = splits.train, splits.seen
    species = _species_table(synth)
    zero = synth_zero_shot(ctx, splits)
    # the order of results.json: seen zero-shot, seen few-shot, unseen zero-shot
    rows = [r for r in zero if r.task == "seen species"]
    rows += few_shot(ctx, "synth", "seen species", seen)
    rows += [r for r in zero if r.task != "seen species"]

    train_mask, train_x = _features(ctx, train)
    test_mask, test_x = _features(ctx, seen)
    train_habitat = [species[label]["habitat"] for label in train.subset(train_mask).labels]
    test_habitat = [species[label]["habitat"] for label in seen.subset(test_mask).labels]
    accuracy = protocols.linear_probe(
        train_x, np.array(train_habitat), test_x, np.array(test_habitat), seed=0
    )
    rows.append(
        Result(
            "synth", "habitat", "linear probe accuracy", accuracy, ctx.model_name, len(test_habitat)
        )
    )
    majority = max(test_habitat.count(h) for h in set(test_habitat)) / len(test_habitat)
    rows.append(
        Result("synth", "habitat", "majority baseline", majority, ctx.model_name, len(test_habitat))
    )
    beak = np.array(
        [float(species[label]["beak_length"]) for label in seen.subset(test_mask).labels]
    )
    r2 = protocols.ridge_regression_r2(test_x, beak, folds=5, seed=0)
    rows.append(Result("synth", "beak length", "ridge R² (5-fold)", r2, ctx.model_name, len(beak)))
    return rows


# --------------------------------------------------------------------------- output


def write_results(rows: list[Result], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    (out / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["suite"])
        writer.writeheader()
        writer.writerows(records)
    return out / "results.json", out / "results.csv"


def side_by_side(rows: list[Result]) -> list[dict]:
    """One row per (suite, task, metric) with the trained and untrained values, then any
    other models' (the published numbers); a row without a value shows its note's head
    ("not on disk", "not read", …)."""
    table: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        entry = table.setdefault(
            (r.suite, r.task, r.metric),
            {"suite": r.suite, "task": r.task, "metric": r.metric, "n": r.n},
        )
        if r.note:
            entry[r.model] = r.note.split(":")[0]
        else:
            entry[r.model] = round(r.value, 4) if r.value == r.value else "nan"
    first = ("suite", "task", "metric", "n", "trained", "untrained")
    return [
        {**{k: e[k] for k in first if k in e}, **{k: v for k, v in e.items() if k not in first}}
        for e in table.values()
    ]

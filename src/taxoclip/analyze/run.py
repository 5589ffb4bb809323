"""``taxoclip analyze``: the emergent properties of DESIGN section 6 for a model and a baseline.

The I/O edge around :mod:`taxoclip.analyze.metrics`: read a SynthToL root or an evaluation
folder, load the model (and its untrained twin, the same architecture with random
weights), embed the same images with both, compute every metric the data allows for
both with the same seed, and write

- ``OUT/metrics.json``: per metric, the full result of each model, and per headline
  statistic its value, the baseline model's value, the null (mean, sd), the counts used
  and a verdict; metrics the data cannot support are listed under ``skipped`` with why;
- ``OUT/embeddings.npz``: the L2-normalised embeddings of both models with every label
  the metrics and plots need, so both can be recomputed without the model
  (:func:`load_embeddings`, :func:`compute_metrics`, :func:`render_plots`);
- ``OUT/plots/*.png`` (:mod:`taxoclip.analyze.plots`) and ``OUT/analysis.json`` (what
  was run on what, image counts, seconds per phase).

Choices (also written into metrics.json):

- **Species centroids** are taken over ADULT images only when the data has a life stage
  (juveniles are a fixed shift of size and pattern, and their share varies by species),
  and as the midpoint of the female and male means when a species has both, so that a
  species' centroid does not move with its sampled sex ratio. Species without an adult
  image are left out of the centroid metrics.
- **Sex** is compared among adults only (SynthToL draws no sex mark on juveniles), in the
  dimorphic species (``sex_strength > 0``); the monomorphic species are a control that
  should NOT separate. **Life stage** is adult against juvenile over both sexes.
- **Traits other than the finch beak** (hue, elongation on SynthToL; every numeric
  per-species column of an evaluation folder) are measured within each order with at
  least 5 species and averaged, weighted by species (DESIGN: "within a clade"); over all
  species when no order is that large.
- **Verdicts**: one seed gives no spread over seeds (DESIGN asks ≥ 3 before a claim is
  said to hold), so the verdict here compares the value with the null mean, any named
  baseline (majority class) and the baseline model's value, each by more than the null's
  sd (:func:`~taxoclip.analyze.metrics.claim_holds` with ``spread`` = null sd and
  ``min_values=1``). It is a screen, not the claim.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taxoclip import __version__
from taxoclip.errors import InputError, UsageError
from taxoclip.evaluate.dataset import read_metadata_folder
from taxoclip.files import write_text_atomic
from taxoclip.taxonomy import RANK_NAMES, Lineage

from . import metrics as m

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("all", "train", "test")
BASELINES = ("untrained", "none")
SEX_VALUES = ("female", "male")
STAGE_VALUES = ("adult", "juvenile")
SYNTH_TRAITS = ("hue", "elongation")  # besides beak_length, which the finch metric reads
FINCH_TRAIT = "beak_length"
MIN_CLADE_SPECIES = 5
TRAIT_PERMUTATIONS = 20  # the core's default 5 gives too rough a null sd for a verdict
GROUP_RANKS = ("genus", "family", "order")
_RANK_INDEX = {name: i for i, name in enumerate(RANK_NAMES)}
# Columns of an evaluation folder that are never traits.
_NOT_TRAITS = {
    *RANK_NAMES,
    "class_",
    "species_epithet",
    "common_name",
    "filepath",
    "class",
    "split",
    "seen",
    "sex",
    "life_stage",
    "habitat",
    "is_finch",
    "sex_strength",
}

VERDICT_BASIS = (
    "one seed: 'holds' when the value beats the null mean, any named reference (majority "
    "class) and the baseline model's value each by more than the null's sd; 'does not "
    "hold' when it does not beat one of them at all; 'inconclusive' in between or when a "
    "number is missing. DESIGN section 6 asks for >= 3 seeds before a claim is said to "
    "hold: read this as a screen."
)
CENTROID_POLICY = (
    "species centroid = mean of L2-normalised image embeddings over adult images (all "
    "images when the data has no life stage), as the midpoint of the female and male "
    "means when the species has both; species without such images are left out"
)


# --------------------------------------------------------------------------- data


@dataclass
class SpeciesTable:
    """Per-species ground truth, rows aligned with ``ids``; unknown values are ``""``/NaN."""

    ids: np.ndarray  # (S,) str
    lineages: np.ndarray  # (S, 7) str, root first ("" for a missing rank)
    habitat: np.ndarray  # (S,) str
    sex_strength: np.ndarray  # (S,) float, NaN unknown
    is_finch: np.ndarray  # (S,) float: 1, 0, NaN unknown
    trait_names: list[str]
    traits: np.ndarray  # (S, T) float, NaN unknown

    def rank(self, name: str) -> np.ndarray:
        return self.lineages[:, _RANK_INDEX[name]]

    def trait(self, name: str) -> np.ndarray:
        if name not in self.trait_names:
            return np.full(len(self.ids), np.nan)
        return self.traits[:, self.trait_names.index(name)]


@dataclass
class Embedded:
    """Embeddings of the same images by each model, with the labels the metrics read.

    ``z`` maps ``"model"`` (and ``"baseline"`` when there is one) to (N, D) float32 rows,
    L2-normalised. Per image: ``species`` (a key of ``table.ids``), ``sex``,
    ``life_stage``, ``split``, ``filepath`` (``""`` when unknown).
    """

    z: dict[str, np.ndarray]
    species: np.ndarray
    sex: np.ndarray
    life_stage: np.ndarray
    split: np.ndarray
    filepath: np.ndarray
    table: SpeciesTable
    kind: str  # "synthtol" or "folder"
    analysis_traits: list[str]

    def __post_init__(self) -> None:
        position = {sid: i for i, sid in enumerate(self.table.ids.tolist())}
        self.species_index = np.array([position[s] for s in self.species.tolist()], dtype=int)


@dataclass
class AnalysisData:
    """Images (paths, species, variants, split) and per-species ground truth, as read."""

    filepaths: list[str]
    species: list[str]
    sex: list[str]
    life_stage: list[str]
    split: list[str]
    table: SpeciesTable
    kind: str
    analysis_traits: list[str]
    missing: list[tuple[str, str]] = field(default_factory=list)


def _is_synthtol(folder: Path) -> bool:
    return (folder / "species.csv").is_file() and any(
        (folder / split / "metadata.csv").is_file() for split in ("train", "test")
    )


def read_analysis_data(folder: str | Path, split: str = "all") -> AnalysisData:
    """Images and per-species ground truth from a SynthToL root or an evaluation folder."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)} (got {split!r})")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--data {folder}: no such folder")
    if _is_synthtol(folder):
        return _read_synthtol(folder, split)
    if (folder / "metadata.csv").is_file():
        return _read_folder(folder, split)
    raise InputError(
        f"--data {folder}: neither a SynthToL root (species.csv with train/ or test/"
        "metadata.csv) nor an evaluation folder (metadata.csv)"
    )


def _read_synthtol(folder: Path, split: str) -> AnalysisData:
    wanted = ("train", "test") if split == "all" else (split,)
    present = [s for s in wanted if (folder / s / "metadata.csv").is_file()]
    if not present:
        raise InputError(f"--data {folder}: SynthToL root without {split}/metadata.csv")
    paths, species, sex, stage, splits, missing = [], [], [], [], [], []
    for name in present:
        evalset = read_metadata_folder(folder / name, f"{folder.name}/{name}")
        columns = evalset.extra["columns"]
        if "species_id" not in columns:
            raise InputError(f"{folder / name / 'metadata.csv'}: no species_id column")
        n = len(evalset)
        paths += evalset.filepaths
        species += [str(v) for v in columns["species_id"]]
        sex += columns.get("sex", [""] * n)
        stage += columns.get("life_stage", [""] * n)
        splits += [name] * n
        missing += evalset.missing
    with (folder / "species.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["species_id"]: row for row in csv.DictReader(handle)}
    unknown = sorted(set(species) - set(rows), key=str)
    if unknown:
        raise InputError(f"{folder / 'species.csv'}: no row for species_id {unknown[:5]}")
    ids = sorted(set(species), key=_natural)
    trait_names = [
        t for t in ("hue", "elongation", "size", "pattern_freq", FINCH_TRAIT) if t in rows[ids[0]]
    ]
    table = SpeciesTable(
        ids=np.asarray(ids, dtype=str),
        lineages=np.array([Lineage.from_mapping(rows[s]).ranks for s in ids], dtype=str),
        habitat=np.array([rows[s].get("habitat", "") or "" for s in ids], dtype=str),
        sex_strength=np.array([_float(rows[s].get("sex_strength")) for s in ids]),
        is_finch=np.array([_flag(rows[s].get("is_finch")) for s in ids]),
        trait_names=trait_names,
        traits=np.array([[_float(rows[s].get(t)) for t in trait_names] for s in ids]).reshape(
            len(ids), len(trait_names)
        ),
    )
    traits = [t for t in SYNTH_TRAITS if t in trait_names]
    return AnalysisData(paths, species, sex, stage, splits, table, "synthtol", traits, missing)


def _read_folder(folder: Path, split: str) -> AnalysisData:
    evalset = read_metadata_folder(folder)
    columns = evalset.extra["columns"]
    n = len(evalset)
    splits = columns.get("split", [""] * n)
    if split != "all":
        if "split" not in columns:
            raise UsageError(f"--split {split}: {folder / 'metadata.csv'} has no split column")
        keep = [s == split for s in splits]
        if not any(keep):
            raise InputError(f"{folder / 'metadata.csv'}: no image in split {split!r}")
        evalset = evalset.subset(keep)
        columns = {
            k: [v for v, kept in zip(vs, keep, strict=True) if kept] for k, vs in columns.items()
        }
        splits, n = columns["split"], len(evalset)
    species = list(evalset.labels)
    ids = sorted(set(species), key=_natural)
    first = {}
    for i, label in enumerate(species):
        first.setdefault(label, i)
    by_species: dict[str, list[int]] = {}
    for i, label in enumerate(species):
        by_species.setdefault(label, []).append(i)

    def per_species(values: list[str], reduce) -> list:
        return [reduce([values[i] for i in by_species[s]]) for s in ids]

    lineages = [
        evalset.lineages[first[s]].ranks if evalset.lineages else ("",) * len(RANK_NAMES)
        for s in ids
    ]
    habitat = per_species(columns["habitat"], _mode) if "habitat" in columns else [""] * len(ids)
    strength = (
        per_species(columns["sex_strength"], _mean_float)
        if "sex_strength" in columns
        else [math.nan] * len(ids)
    )
    finch = (
        per_species(columns["is_finch"], lambda v: _flag(_mode(v)))
        if "is_finch" in columns
        else [math.nan] * len(ids)
    )
    trait_names = [
        name
        for name, values in columns.items()
        if name not in _NOT_TRAITS and not name.endswith("_id") and _numeric(values)
    ]
    traits = np.array(
        [[_mean_float([columns[t][i] for i in by_species[s]]) for t in trait_names] for s in ids]
    ).reshape(len(ids), len(trait_names))
    table = SpeciesTable(
        ids=np.asarray(ids, dtype=str),
        lineages=np.array(lineages, dtype=str).reshape(len(ids), len(RANK_NAMES)),
        habitat=np.asarray(habitat, dtype=str),
        sex_strength=np.asarray(strength, dtype=float),
        is_finch=np.asarray(finch, dtype=float),
        trait_names=trait_names,
        traits=traits,
    )
    return AnalysisData(
        list(evalset.filepaths),
        species,
        columns.get("sex", [""] * n),
        columns.get("life_stage", [""] * n),
        list(splits),
        table,
        "folder",
        # beak length is the finch metric's trait when the finches are known
        [t for t in trait_names if t != FINCH_TRAIT or "is_finch" not in columns],
        list(evalset.missing),
    )


def _natural(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _flag(value: object) -> float:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return 1.0
    if text in ("false", "0", "no"):
        return 0.0
    return math.nan


def _numeric(values: Sequence[str]) -> bool:
    filled = [v for v in values if str(v).strip()]
    return bool(filled) and all(math.isfinite(_float(v)) for v in filled)


def _mean_float(values: Sequence[str]) -> float:
    numbers = [_float(v) for v in values if str(v).strip()]
    numbers = [v for v in numbers if math.isfinite(v)]
    return float(np.mean(numbers)) if numbers else math.nan


def _mode(values: Sequence[str]) -> str:
    filled = [v for v in values if v]
    return max(sorted(set(filled)), key=filled.count) if filled else ""


# --------------------------------------------------------------------------- npz


def save_embeddings(emb: Embedded, path: str | Path) -> Path:
    """Write ``emb`` as ``.npz`` (no pickles); :func:`load_embeddings` reads it back."""
    path = Path(path)
    table = emb.table
    arrays = {
        "z_model": emb.z["model"].astype(np.float32),
        "species": emb.species.astype(str),
        "sex": emb.sex.astype(str),
        "life_stage": emb.life_stage.astype(str),
        "split": emb.split.astype(str),
        "filepath": emb.filepath.astype(str),
        "kind": np.asarray(emb.kind),
        "analysis_traits": np.asarray(emb.analysis_traits, dtype=str),
        "species_ids": table.ids.astype(str),
        "species_lineages": table.lineages.astype(str),
        "species_habitat": table.habitat.astype(str),
        "species_sex_strength": table.sex_strength.astype(float),
        "species_is_finch": table.is_finch.astype(float),
        "trait_names": np.asarray(table.trait_names, dtype=str),
        "species_traits": table.traits.astype(float),
    }
    if "baseline" in emb.z:
        arrays["z_baseline"] = emb.z["baseline"].astype(np.float32)
    np.savez_compressed(path, **arrays)
    return path


def load_embeddings(path: str | Path) -> Embedded:
    """An ``embeddings.npz`` written by :func:`save_embeddings` (or ``taxoclip analyze``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "embeddings.npz"
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InputError(f"cannot read embeddings {path}: {exc}") from exc
    with data:
        z = {"model": data["z_model"]}
        if "z_baseline" in data:
            z["baseline"] = data["z_baseline"]
        table = SpeciesTable(
            ids=data["species_ids"],
            lineages=data["species_lineages"],
            habitat=data["species_habitat"],
            sex_strength=data["species_sex_strength"],
            is_finch=data["species_is_finch"],
            trait_names=data["trait_names"].tolist(),
            traits=data["species_traits"],
        )
        return Embedded(
            z,
            data["species"],
            data["sex"],
            data["life_stage"],
            data["split"],
            data["filepath"],
            table,
            str(data["kind"]),
            data["analysis_traits"].tolist(),
        )


# --------------------------------------------------------------------------- selections


def variant_pair(labels: np.ndarray, preferred: tuple[str, str]) -> tuple[str, str] | None:
    """The two variant values to compare: ``preferred`` when both occur, else the two most
    frequent non-empty values (sorted), else None."""
    present = [v for v in labels.tolist() if v]
    if preferred[0] in present and preferred[1] in present:
        return preferred
    values = sorted(set(present), key=lambda v: (-present.count(v), v))
    return (values[0], values[1]) if len(values) >= 2 else None


def adult_rows(emb: Embedded) -> np.ndarray:
    """Images a centroid and the sex comparison use: adults, or all without life stages."""
    adult = emb.life_stage == STAGE_VALUES[0]
    return adult if adult.any() else np.ones(len(emb.species), dtype=bool)


def species_centroids(z: np.ndarray, emb: Embedded) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``emb.table``, centroids (S', D)) by the policy of this module."""
    rows = adult_rows(emb)
    pair = variant_pair(emb.sex[rows], SEX_VALUES)
    kept, centroids = [], []
    for index in range(len(emb.table.ids)):
        mine = rows & (emb.species_index == index)
        if not mine.any():
            continue
        centre = z[mine].mean(axis=0)
        if pair is not None:
            a, b = mine & (emb.sex == pair[0]), mine & (emb.sex == pair[1])
            if a.any() and b.any():
                centre = (z[a].mean(axis=0) + z[b].mean(axis=0)) / 2
        kept.append(index)
        centroids.append(centre)
    width = z.shape[1] if z.ndim == 2 else 0
    return np.asarray(kept, dtype=int), np.asarray(centroids, dtype=np.float64).reshape(-1, width)


def usable_species(
    species: np.ndarray, variant: np.ndarray, pair: tuple[str, str], min_per_variant: int
) -> list[str]:
    """Species with at least ``min_per_variant`` images of each of ``pair`` (sorted)."""
    used = []
    for name in np.unique(species):
        mine = variant[species == name]
        if min(int(np.sum(mine == pair[0])), int(np.sum(mine == pair[1]))) >= min_per_variant:
            used.append(str(name))
    return used


def _group_labels(emb: Embedded, rank: str) -> np.ndarray:
    """Each image's name at ``rank``; a species missing that rank forms its own group."""
    names = emb.table.rank(rank)[emb.species_index]
    orphan = np.char.add("?", emb.species.astype(str))
    return np.where(names == "", orphan, names)


def choose_group_rank(
    emb: Embedded, rows: np.ndarray, variant: np.ndarray, pair: tuple[str, str], min_per: int
) -> str | None:
    """The lowest of genus, family, order where some group holds ≥ 2 usable species."""
    used = set(usable_species(emb.species[rows], variant[rows], pair, min_per))
    for rank in GROUP_RANKS:
        groups = _group_labels(emb, rank)
        counts: dict[str, int] = {}
        for name in used:
            first = int(np.flatnonzero(emb.species == name)[0])
            counts[groups[first]] = counts.get(groups[first], 0) + 1
        if any(count >= 2 for count in counts.values()):
            return rank
    return None


# --------------------------------------------------------------------------- metrics

# kind -> [(statistic, null mean key, null sd key, higher is better, extra reference keys)]
# (higher is better is None for a descriptive number without a null)
STATS: dict[str, list[tuple[str, str | None, str | None, bool | None, tuple[str, ...]]]] = {
    "trait_alignment": [
        ("pc1_spearman", "null_pc1_spearman", "null_pc1_spearman_sd", True, ()),
        ("ridge_r2", "null_ridge_r2", "null_ridge_r2_sd", True, ()),
    ],
    "ecological_alignment": [
        (
            "probe_accuracy",
            "null_probe_accuracy",
            "null_probe_accuracy_sd",
            True,
            ("majority_accuracy",),
        ),
        ("cosine_gap", "null_cosine_gap", "null_cosine_gap_sd", True, ()),
    ],
    "taxonomic_alignment": [("spearman", "null_spearman", "null_spearman_sd", True, ())],
    "intra_species_separation": [
        ("probe_accuracy", "null_probe_accuracy", "null_probe_accuracy_sd", True, ()),
        ("fdr", "null_fdr", "null_fdr_sd", True, ()),
    ],
    "orthogonality": [
        ("fraction_outside", "null_fraction_outside", "null_fraction_outside_sd", True, ()),
        ("mean_abs_cos", "null_mean_abs_cos", "null_mean_abs_cos_sd", False, ()),
    ],
    "effective_dimension": [("images", None, None, None, ()), ("centroids", None, None, None, ())],
}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def stat_entry(model: dict, baseline: dict | None, spec) -> dict:
    key, null_key, sd_key, higher, extras = spec
    value = _number(model.get(key))
    entry: dict[str, Any] = {
        "value": value,
        "baseline_value": _number(baseline.get(key)) if baseline else None,
        "null": None,
        "higher_is_better": higher,
    }
    if null_key is None:
        entry["verdict"] = None
        return entry
    null_mean, null_sd = _number(model.get(null_key)), _number(model.get(sd_key))
    entry["null"] = {"mean": null_mean, "sd": null_sd}
    if baseline:
        entry["baseline_null"] = {
            "mean": _number(baseline.get(null_key)),
            "sd": _number(baseline.get(sd_key)),
        }
    references = [null_mean] + [_number(model.get(extra)) for extra in extras]
    for extra in extras:
        entry[extra] = _number(model.get(extra))
    if baseline:
        references.append(entry["baseline_value"])
    verdict = m.claim_holds(
        value, *references, spread=null_sd, higher_is_better=higher, min_values=1
    )
    entry.update(verdict=verdict.verdict, margin=verdict.margin, spread=verdict.spread)
    return entry


def _entry(
    kind: str, description: str, scope: str, n_used: dict, results: dict[str, dict], **extra
) -> dict:
    model, baseline = results["model"], results.get("baseline")
    return {
        "kind": kind,
        "description": description,
        "scope": scope,
        "n_used": n_used,
        **extra,
        "stats": {spec[0]: stat_entry(model, baseline, spec) for spec in STATS[kind]},
        "model": model,
        "baseline": baseline,
    }


def _pooled_trait(per_clade: dict[str, dict]) -> dict:
    """Clade results averaged, weighted by species; null sd that of the weighted mean."""
    usable = {k: v for k, v in per_clade.items() if math.isfinite(_number(v["pc1_spearman"]))}
    weights = np.array([v["n_species"] for v in usable.values()], dtype=float)
    pooled: dict[str, Any] = {"n_species": int(weights.sum()), "n_clades": len(usable)}
    for key in ("pc1_spearman", "ridge_r2", "null_pc1_spearman", "null_ridge_r2"):
        values = np.array([_number(v[key]) for v in usable.values()])
        pooled[key] = float(np.average(values, weights=weights)) if len(values) else math.nan
        sd_key = f"{key}_sd"
        if key.startswith("null"):
            sds = np.array([_number(v[sd_key]) for v in usable.values()])
            w = weights / weights.sum() if len(weights) else weights
            pooled[sd_key] = float(np.sqrt(np.sum((w * sds) ** 2))) if len(sds) else math.nan
    pooled["n_permutations"] = TRAIT_PERMUTATIONS
    pooled["per_clade"] = per_clade
    return pooled


@dataclass
class _Run:
    """What every metric of one :func:`compute_metrics` call shares."""

    emb: Embedded
    seed: int
    min_per_variant: int
    centroids: dict[str, tuple[np.ndarray, np.ndarray]]  # model -> (table rows, centroids)
    out: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        """Rows of the species table that have a centroid (the same for every model)."""
        return self.centroids["model"][0]

    def each(self, function) -> dict[str, dict]:
        """``function(model name)`` for the model and the baseline, keyed by name."""
        return {name: function(name) for name in self.emb.z}

    def rows_by_sex(self) -> tuple[np.ndarray, tuple[str, str] | None, np.ndarray, bool]:
        """(adult rows, sex pair, per-image sex_strength, whether strength is known)."""
        adults = adult_rows(self.emb)
        table = self.emb.table
        strength = table.sex_strength[self.emb.species_index]
        known = not np.all(np.isnan(table.sex_strength))
        return adults, variant_pair(self.emb.sex[adults], SEX_VALUES), strength, known


def compute_metrics(
    emb: Embedded, *, seed: int = 0, min_per_variant: int = 4
) -> tuple[dict[str, dict], dict[str, str]]:
    """Every metric ``emb`` allows, for each model in ``emb.z``: ``(metrics, skipped)``.

    Which species and images go into a metric depends on the labels only, never on the
    embeddings, so the model and its baseline are measured on the same sets.
    """
    if min_per_variant < 4:
        raise UsageError("min_per_variant must be >= 4 (each variant is split in halves)")
    run = _Run(
        emb, seed, min_per_variant, {name: species_centroids(z, emb) for name, z in emb.z.items()}
    )
    _finch_metric(run)
    _trait_metrics(run)
    _ecology_metric(run)
    _taxonomy_metric(run)
    _separation_metrics(run)
    _orthogonality_metrics(run)
    _dimension_metric(run)
    return run.out, run.skipped


def _finch_metric(run: _Run) -> None:
    """The paper's claim: beak length along the finch genus' main axis."""
    name, table, kept = "trait_finch_beak_length", run.emb.table, run.kept
    finch = kept[np.nan_to_num(table.is_finch[kept], nan=0.0) == 1]
    finch = finch[np.isfinite(table.trait(FINCH_TRAIT)[finch])]
    if np.all(np.isnan(table.is_finch)):
        run.skipped[name] = "no is_finch column (SynthToL species.csv)"
        return
    if FINCH_TRAIT not in table.trait_names:
        run.skipped[name] = f"no {FINCH_TRAIT} column"
        return
    if len(finch) < 3:
        run.skipped[name] = f"{len(finch)} finch species with a centroid; need 3"
        return
    genera = sorted(set(table.rank("genus")[finch].tolist()))
    select = np.isin(kept, finch)
    beak = table.trait(FINCH_TRAIT)[kept[select]]
    results = run.each(
        lambda model: m.trait_alignment(
            run.centroids[model][1][select],
            beak,
            seed=run.seed,
            n_permutations=TRAIT_PERMUTATIONS,
        ).as_dict()
    )
    run.out[name] = _entry(
        "trait_alignment",
        "|Spearman rho| of beak length with PC1 of the finch species' centroids; "
        "cross-validated ridge R^2 centroid -> beak length",
        f"finch genus {', '.join(genera)} (is_finch), {len(finch)} species",
        {"species": int(len(finch))},
        results,
        trait=FINCH_TRAIT,
    )


def _trait_metrics(run: _Run) -> None:
    """Other traits within each order with >= MIN_CLADE_SPECIES species, averaged."""
    table, kept = run.emb.table, run.kept
    orders = table.rank("order")[kept]
    if not run.emb.analysis_traits:
        run.skipped["trait_other"] = "no numeric per-species trait column"
    for trait in run.emb.analysis_traits:
        name = f"trait_{trait}"
        values = table.trait(trait)[kept]
        finite = np.isfinite(values)
        clades = {
            order: np.flatnonzero(finite & (orders == order))
            for order in sorted(set(orders.tolist()))
            if order and np.sum(finite & (orders == order)) >= MIN_CLADE_SPECIES
        }
        if not clades and finite.sum() < 3:
            run.skipped[name] = f"{int(finite.sum())} species with a value of {trait}; need 3"
            continue
        if clades:
            scope = (
                f"within each order with >= {MIN_CLADE_SPECIES} species "
                f"({len(clades)} orders), averaged weighted by species"
            )
        else:
            scope = f"all species (no order has >= {MIN_CLADE_SPECIES} species)"

        def measure(model: str, clades=clades, values=values, finite=finite) -> dict:
            def one(rows: np.ndarray) -> dict:
                return m.trait_alignment(
                    run.centroids[model][1][rows],
                    values[rows],
                    seed=run.seed,
                    n_permutations=TRAIT_PERMUTATIONS,
                ).as_dict()

            if not clades:
                return one(np.flatnonzero(finite))
            return _pooled_trait({order: one(rows) for order, rows in clades.items()})

        n_species = sum(len(r) for r in clades.values()) if clades else int(finite.sum())
        run.out[name] = _entry(
            "trait_alignment",
            f"|Spearman rho| of {trait} with PC1 of the species centroids; cross-validated "
            f"ridge R^2 centroid -> {trait}",
            scope,
            {"species": int(n_species)},
            run.each(measure),
            trait=trait,
        )


def _ecology_metric(run: _Run) -> None:
    name, table, kept = "ecological_habitat", run.emb.table, run.kept
    habitat, orders = table.habitat[kept], table.rank("order")[kept]
    has = (habitat != "") & (orders != "")
    n_orders, n_habitats = len(set(orders[has].tolist())), len(set(habitat[has].tolist()))
    if not np.any(table.habitat != ""):
        run.skipped[name] = "no habitat column"
        return
    if n_orders < 2 or n_habitats < 2:
        run.skipped[name] = (
            f"species with a habitat and an order span {n_orders} orders and "
            f"{n_habitats} habitats; need 2 of each"
        )
        return
    results = run.each(
        lambda model: m.ecological_alignment(
            run.centroids[model][1][has], habitat[has], orders[has], seed=run.seed
        ).as_dict()
    )
    run.out[name] = _entry(
        "ecological_alignment",
        "habitat from species centroids by a logistic probe, group split by order (no "
        "order in both training and test); cosine gap of same- vs different-habitat "
        "pairs from different orders",
        "species centroids, groups = order",
        {"species": int(has.sum()), "orders": n_orders, "habitats": n_habitats},
        results,
    )


def _taxonomy_metric(run: _Run) -> None:
    lineages = run.emb.table.lineages[run.kept]
    known = np.any(lineages != "", axis=1)
    n_known = int(known.sum())
    if n_known < 3:
        run.skipped["taxonomic"] = f"{n_known} species with a lineage; need 3"
        return
    tree = [tuple(row) for row in lineages[known]]
    results = run.each(
        lambda model: m.taxonomic_alignment(
            run.centroids[model][1][known], tree, seed=run.seed
        ).as_dict()
    )
    run.out["taxonomic"] = _entry(
        "taxonomic_alignment",
        "Spearman between centroid cosine distance and taxonomic distance (ranks to the "
        "common ancestor) over species pairs",
        "all species with a lineage",
        {"species": n_known, "pairs": n_known * (n_known - 1) // 2},
        results,
    )


def _separation_metrics(run: _Run) -> None:
    """Sex among adults (dimorphic species; monomorphic as a control), life stage."""
    emb = run.emb
    adults, sex_pair, strength, known_strength = run.rows_by_sex()
    stage_pair = variant_pair(emb.life_stage, STAGE_VALUES)
    # (name, rows, variant labels, pair, scope, expected)
    plans: list[tuple[str, np.ndarray, np.ndarray, tuple[str, str], str, str | None]] = []
    if sex_pair is None:
        run.skipped["separation_sex"] = "no sex column with two values"
        run.skipped["separation_sex_monomorphic"] = "no sex column with two values"
    elif known_strength:
        plans.append(
            (
                "separation_sex",
                adults & (strength > 0),
                emb.sex,
                sex_pair,
                "adults of sexually dimorphic species (sex_strength > 0)",
                None,
            )
        )
        plans.append(
            (
                "separation_sex_monomorphic",
                adults & (strength == 0),
                emb.sex,
                sex_pair,
                "adults of monomorphic species (sex_strength = 0): a control",
                "no separation: the control should not beat its null",
            )
        )
    else:
        plans.append(
            (
                "separation_sex",
                adults,
                emb.sex,
                sex_pair,
                "adults of all species (dimorphism unknown)",
                None,
            )
        )
        run.skipped["separation_sex_monomorphic"] = "no sex_strength column: monomorphic unknown"
    if stage_pair is None:
        run.skipped["separation_life_stage"] = "no life_stage column with two values"
    else:
        plans.append(
            (
                "separation_life_stage",
                np.ones(len(emb.species), dtype=bool),
                emb.life_stage,
                stage_pair,
                "all images, both sexes",
                None,
            )
        )
    for name, rows, variant, pair, scope, expected in plans:
        rows = rows & np.isin(variant, pair)
        used = usable_species(emb.species[rows], variant[rows], pair, run.min_per_variant)
        if not used:
            run.skipped[name] = (
                f"no species has >= {run.min_per_variant} images of both "
                f"{pair[0]} and {pair[1]} ({scope})"
            )
            continue

        def measure(model: str, rows=rows, variant=variant, pair=pair) -> dict:
            return m.intra_species_separation(
                emb.z[model][rows],
                emb.species[rows],
                variant[rows],
                values=pair,
                min_per_variant=run.min_per_variant,
                seed=run.seed,
            ).as_dict()

        extra: dict[str, Any] = {"variants": list(pair)}
        if expected:
            extra["expected"] = expected
        n_present = len(np.unique(emb.species[rows]))
        run.out[name] = _entry(
            "intra_species_separation",
            f"{pair[0]} vs {pair[1]} within each species: out-of-sample Fisher ratio "
            "(split halves) and balanced within-species probe accuracy",
            scope,
            {
                "species": len(used),
                "skipped_species": n_present - len(used),
                "images": int(rows.sum()),
                "min_per_variant": run.min_per_variant,
            },
            run.each(measure),
            **extra,
        )


def _orthogonality_metrics(run: _Run) -> None:
    emb = run.emb
    adults, sex_pair, strength, known_strength = run.rows_by_sex()
    stage_pair = variant_pair(emb.life_stage, STAGE_VALUES)
    plans: list[tuple[str, np.ndarray, np.ndarray, tuple[str, str], str]] = []
    if sex_pair is None:
        run.skipped["orthogonality_sex"] = "no sex column with two values"
    else:
        rows = adults & (strength > 0) if known_strength else adults
        scope = "adults of dimorphic species" if known_strength else "adults"
        plans.append(("orthogonality_sex", rows, emb.sex, sex_pair, scope))
    if stage_pair is None:
        run.skipped["orthogonality_life_stage"] = "no life_stage column with two values"
    else:
        plans.append(
            (
                "orthogonality_life_stage",
                np.ones(len(emb.species), dtype=bool),
                emb.life_stage,
                stage_pair,
                "all images, both sexes",
            )
        )
    for name, rows, variant, pair, scope in plans:
        rows = rows & np.isin(variant, pair)
        rank = choose_group_rank(emb, rows, variant, pair, run.min_per_variant)
        if rank is None:
            run.skipped[name] = (
                f"no genus, family or order holds 2 species with >= "
                f"{run.min_per_variant} images of both {pair[0]} and "
                f"{pair[1]}"
            )
            continue
        groups = _group_labels(emb, rank)

        def measure(model: str, rows=rows, variant=variant, pair=pair, groups=groups) -> dict:
            return m.orthogonality(
                emb.z[model][rows],
                emb.species[rows],
                variant[rows],
                groups[rows],
                values=pair,
                min_per_variant=run.min_per_variant,
                seed=run.seed,
            ).as_dict()

        results = run.each(measure)
        first = results["model"]
        run.out[name] = _entry(
            "orthogonality",
            f"delta = mean({pair[0]}) - mean({pair[1]}) per species: fraction of its norm "
            f"outside the span of the {rank}'s species differences, and mean |cos| with them",
            f"{scope}; groups = {rank} (species centre = midpoint of the variant means)",
            {
                "groups": first["n_groups_used"],
                "species": first["n_species_used"],
                "images": int(rows.sum()),
                "group_rank": rank,
            },
            results,
            variants=list(pair),
        )


def _dimension_metric(run: _Run) -> None:
    def measure(model: str) -> dict:
        centroids = run.centroids[model][1]
        return {
            "images": m.effective_dimension(run.emb.z[model]),
            "centroids": m.effective_dimension(centroids) if len(centroids) >= 2 else math.nan,
        }

    run.out["effective_dimension"] = _entry(
        "effective_dimension",
        "participation ratio of the covariance eigenvalues: how many dimensions the "
        "embeddings use (no null: a descriptive number)",
        "all images; species centroids",
        {"images": int(len(run.emb.species)), "species": int(len(run.kept))},
        run.each(measure),
        embed_dim=int(run.emb.z["model"].shape[1]),
    )


# --------------------------------------------------------------------------- plots


def render_plots(
    emb: Embedded, out_dir: str | Path, *, seed: int = 0, min_per_variant: int = 4
) -> tuple[list[Path], dict[str, str]]:
    """Every plot ``emb`` allows into ``out_dir``: ``(written, {plot: why skipped})``."""
    try:
        from . import plots
    except ImportError as exc:  # matplotlib missing
        return [], {"all": f"plots skipped: {exc}"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    labels = {"model": "model", "baseline": "untrained baseline"}
    table = emb.table
    centroids = {labels[name]: species_centroids(z, emb) for name, z in emb.z.items()}
    kept = next(iter(centroids.values()))[0]

    # t-SNE of the species centroids
    if len(kept) < 5:
        skipped["tsne.png"] = f"{len(kept)} species with a centroid; need 5"
    else:
        colourings = {}
        for title, values in (
            ("order", table.rank("order")[kept]),
            ("habitat", table.habitat[kept]),
            ("family", table.rank("family")[kept]),
        ):
            if np.any(values != "") and len(colourings) < 2:
                colourings[title] = np.where(values == "", "(unknown)", values)
        if not colourings:
            colourings["species"] = table.ids[kept]
        path = out_dir / "tsne.png"
        plots.plot_tsne({k: v[1] for k, v in centroids.items()}, colourings, path, seed=seed)
        written.append(path)

    # 3-D view of the sex direction in one group
    group = _variants_group(emb, min_per_variant)
    if isinstance(group, str):
        skipped["variants_3d.png"] = group
    else:
        rows, pair, title = group
        path = out_dir / "variants_3d.png"
        plots.plot_variants_3d(
            {labels[k]: z[rows] for k, z in emb.z.items()},
            emb.species[rows],
            emb.sex[rows],
            pair,
            path,
            title=title,
            species_names=_species_names(emb, emb.species[rows]),
        )
        written.append(path)

    # finch beak length against PC1
    finch = kept[np.nan_to_num(table.is_finch[kept], nan=0.0) == 1]
    beak = table.trait(FINCH_TRAIT)
    finch = finch[np.isfinite(beak[finch])]
    if len(finch) < 3:
        skipped["finch_beak.png"] = f"{len(finch)} finch species with a beak length; need 3"
    else:
        select = np.isin(kept, finch)
        genus = ", ".join(sorted(set(table.rank("genus")[finch].tolist())))
        path = out_dir / "finch_beak.png"
        plots.plot_finch_beak(
            {k: v[1][select] for k, v in centroids.items()},
            beak[kept[select]],
            path,
            title=f"Finch genus {genus}",
            names=[_species_names(emb, table.ids[[i]])[table.ids[i]] for i in kept[select]],
        )
        written.append(path)
    return written, skipped


def _species_names(emb: Embedded, species: np.ndarray) -> dict[str, str]:
    genus, epithet = emb.table.rank("genus"), emb.table.rank("species")
    names = {}
    for sid in np.unique(species).tolist():
        index = int(np.flatnonzero(emb.table.ids == sid)[0])
        name = f"{genus[index][:1]}. {epithet[index]}" if epithet[index] else sid
        names[sid] = name.strip()
    return names


def _variants_group(emb: Embedded, min_per_variant: int, max_species: int = 6):
    """(rows, sex pair, title) for the 3-D plot: the genus (else family) with the most
    dimorphic species with enough adult images of both sexes; or why there is none."""
    adults = adult_rows(emb)
    pair = variant_pair(emb.sex[adults], SEX_VALUES)
    if pair is None:
        return "no sex column with two values"
    strength = emb.table.sex_strength[emb.species_index]
    rows = adults & np.isin(emb.sex, pair)
    if not np.all(np.isnan(emb.table.sex_strength)):
        rows &= strength > 0
    used = usable_species(emb.species[rows], emb.sex[rows], pair, min_per_variant)
    for rank in GROUP_RANKS[:2]:
        groups = _group_labels(emb, rank)
        members: dict[str, list[str]] = {}
        for sid in used:
            members.setdefault(groups[emb.species == sid][0], []).append(sid)
        best = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if best and len(best[0][1]) >= 2:
            name, species = best[0]
            counts = {s: int(np.sum(rows & (emb.species == s))) for s in species}
            species = sorted(species, key=lambda s: (-counts[s], _natural(s)))[:max_species]
            chosen = rows & np.isin(emb.species, species)
            return chosen, pair, f"{rank} {name}: {len(species)} dimorphic species"
    return (
        f"no genus or family holds 2 dimorphic species with >= {min_per_variant} adult "
        f"images of each sex"
    )


# --------------------------------------------------------------------------- run


@dataclass
class AnalysisResult:
    out: Path
    metrics: dict[str, dict]
    skipped: dict[str, str]
    summary: dict[str, Any]
    plots: list[Path]


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, payload: dict) -> None:
    """Strict JSON (NaN as null), written atomically."""
    write_text_atomic(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def run_analysis(
    model: str,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "all",
    baseline: str = "untrained",
    pretrained: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    min_per_variant: int = 4,
    plots: bool = True,
    progress: bool = True,
) -> AnalysisResult:
    """Analyse ``model`` (any ``--model`` spec) on ``data`` beside its baseline; write ``out``.

    ``baseline``: ``"untrained"`` (the same architecture with random weights drawn from
    ``seed``) or ``"none"``. ``split``: which SynthToL split(s) to read (``all`` by
    default: the within-species metrics want many images per species and variant).
    """
    if baseline not in BASELINES:
        raise UsageError(f"--baseline must be one of {', '.join(BASELINES)} (got {baseline!r})")
    if min_per_variant < 4:
        raise UsageError("min_per_variant must be >= 4 (each variant is split in halves)")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    images = read_analysis_data(data, split)
    for path, reason in images.missing:
        log.warning("%s: %s (skipped)", path, reason)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create it: {exc}") from exc

    from taxoclip.evaluate.features import image_features
    from taxoclip.evaluate.suites import untrained_twin
    from taxoclip.models import load_model

    tick = time.perf_counter()
    loaded = {"model": load_model(model, pretrained=pretrained, device=device)}
    if loaded["model"].weights is None:
        log.warning("model %s has random weights (no pretrained weights were named)", model)
    if baseline == "untrained":
        loaded["baseline"] = untrained_twin(loaded["model"], seed=seed)
        loaded["baseline"].model.to(device)
    for item in loaded.values():
        item.model.eval()
    seconds["load"] = time.perf_counter() - tick

    tick = time.perf_counter()
    features = {
        name: image_features(
            item, images.filepaths, None, batch_size, device=device, progress=progress
        )
        for name, item in loaded.items()
    }
    ok = np.ones(len(images.filepaths), dtype=bool)
    for feats in features.values():
        ok &= feats.full(len(images.filepaths))[0]
    for index, reason in features["model"].errors.items():
        log.warning("%s: %s (skipped)", images.filepaths[index], reason)
    if not ok.any():
        raise InputError(f"--data {data}: none of its {len(ok)} images could be read")
    z = {}
    for name, feats in features.items():
        full = np.zeros((len(ok), feats.values.shape[1]), np.float32)
        full[feats.ok] = feats.values  # rows of values follow feats.ok
        z[name] = full[ok]
    seconds["embed"] = time.perf_counter() - tick

    def pick(values: list[str]) -> np.ndarray:
        return np.asarray([v or "" for v, keep in zip(values, ok, strict=True) if keep], dtype=str)

    emb = Embedded(
        z,
        pick(images.species),
        pick(images.sex),
        pick(images.life_stage),
        pick(images.split),
        pick(images.filepaths),
        images.table,
        images.kind,
        images.analysis_traits,
    )
    save_embeddings(emb, out / "embeddings.npz")

    tick = time.perf_counter()
    metrics, skipped = compute_metrics(emb, seed=seed, min_per_variant=min_per_variant)
    seconds["metrics"] = time.perf_counter() - tick
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "baseline": f"untrained twin (same architecture, random weights, seed {seed})"
        if baseline == "untrained"
        else None,
        "data": str(Path(data).resolve()),
        "split": split,
        "seed": seed,
        "verdict_basis": VERDICT_BASIS,
        "centroids": CENTROID_POLICY,
        "metrics": metrics,
        "skipped": skipped,
    }
    write_json(out / "metrics.json", payload)

    tick = time.perf_counter()
    written, plots_skipped = ([], {"all": "not asked for"})
    if plots:
        written, plots_skipped = render_plots(
            emb, out / "plots", seed=seed, min_per_variant=min_per_variant
        )
    for name, reason in plots_skipped.items():
        log.info("plot %s skipped: %s", name, reason)
    seconds["plots"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    summary = {
        "format_version": FORMAT_VERSION,
        "taxoclip_version": __version__,
        "model": model,
        "pretrained": pretrained,
        "weights": loaded["model"].weights,
        "baseline": baseline,
        "data": str(Path(data).resolve()),
        "data_kind": images.kind,
        "split": split,
        "seed": seed,
        "device": device,
        "n_images": int(ok.sum()),
        "n_images_failed": int((~ok).sum()) + len(images.missing),
        "n_species": int(len(np.unique(emb.species))),
        "embed_dim": int(z["model"].shape[1]),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "files": ["metrics.json", "embeddings.npz", *[str(p.relative_to(out)) for p in written]],
        "plots_skipped": plots_skipped,
    }
    write_json(out / "analysis.json", summary)
    return AnalysisResult(out, metrics, skipped, summary, written)


def format_summary(result: AnalysisResult) -> str:
    """A plain table of the headline statistics, one per line."""
    lines = [f"{'metric':34} {'statistic':17} {'model':>8} {'baseline':>8} {'null':>16}  verdict"]
    for name, entry in result.metrics.items():
        for stat, item in entry["stats"].items():
            null = item.get("null") or {}
            null_text = f"{_fmt(null.get('mean'))}±{_fmt(null.get('sd'))}" if null else ""
            lines.append(
                f"{name:34} {stat:17} {_fmt(item['value']):>8} "
                f"{_fmt(item['baseline_value']):>8} {null_text:>16}  "
                f"{item.get('verdict') or ''}"
            )
    for name, reason in result.skipped.items():
        lines.append(f"{name:34} skipped: {reason}")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    number = _number(value)
    if value is None or not math.isfinite(number):
        return "-"
    return f"{number:.3f}" if abs(number) < 1000 else f"{number:.3g}"

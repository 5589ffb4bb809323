"""What ``taxoclip analyze`` reads and writes besides JSON: images with their labels, and
the embeddings file.

:func:`read_analysis_data` takes a SynthToL root (``species.csv`` beside
``train/``/``test/metadata.csv``) or an evaluation folder (``metadata.csv``; every numeric
per-species column is a trait) and returns :class:`AnalysisData`: image paths, per-image
labels and a :class:`SpeciesTable` of per-species ground truth. :class:`Embedded` is the
same images embedded by each model; :func:`save_embeddings`/:func:`load_embeddings`
write and read it as ``embeddings.npz`` (no pickles), so every metric and plot can be
recomputed without the model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError, UsageError
from taxoclip.evaluate.dataset import read_metadata_folder
from taxoclip.taxonomy import RANK_NAMES, Lineage

from .config import SPLITS

SYNTH_TRAITS = ("hue", "elongation")  # besides beak_length, which the finch metric reads
FINCH_TRAIT = "beak_length"
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
    ids = sorted(set(species), key=natural_key)
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
    ids = sorted(set(species), key=natural_key)
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


def natural_key(value: str) -> tuple:
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

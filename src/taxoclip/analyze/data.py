"""What ``taxoclip analyze`` reads and writes besides JSON: images with their labels, and
the embeddings file.

:func:`read_analysis_data` takes a SynthToL root (``species.csv`` beside
``train/``/``test/metadata.csv``) or an evaluation folder (``metadata.csv``; every numeric
per-species column is a trait) and returns :class:`AnalysisData`: image paths, per-image
labels and a :class:`SpeciesTable` of per-species ground truth. :class:`Embedded` is the
same images embedded by each model; :func:`save_embeddings`/:func:`load_embeddings`
write and read it as ``embeddings.npz`` (no pickles), so every metric and plot can be
recomputed without the model. :func:`read_embeddings` reads precomputed features of the
data folder's images (``taxoclip analyze --embeddings``: an ``embeddings.npz``, a
``.npy`` in the order of :attr:`AnalysisData.filepaths`, or a ``.parquet`` keyed by
image) and :func:`embedded_from` pairs such rows with the images' labels.
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


# --------------------------------------------------------------------------- precomputed embeddings

#: What ``--embeddings`` and ``--baseline-embeddings`` read, by suffix.
EMBEDDING_SUFFIXES = (".npz", ".npy", ".parquet")
#: Parquet columns tried, in this order, as the image key (else the one text column).
KEY_COLUMNS = ("filepath", "image_id", "image", "path", "file", "key", "id")
_SHOWN_KEYS = 5  # keys an error names


@dataclass(frozen=True)
class EmbeddingsFile:
    """Precomputed embeddings of the data folder's images: ``z`` has one L2-normalised
    float32 row per image of :attr:`AnalysisData.filepaths`, in that order.

    ``baseline``: an ``embeddings.npz``'s ``z_baseline`` (the untrained twin of the
    analysis that wrote it), aligned the same way; None for any other file. ``source``:
    how the rows were read and matched, for analysis.json.
    """

    path: Path
    z: np.ndarray
    baseline: np.ndarray | None
    source: str


def read_embeddings(
    path: str | Path, images: AnalysisData, data: str | Path, flag: str = "--embeddings"
) -> EmbeddingsFile:
    """Rows of ``path`` for the images of ``images`` (read from the folder ``data``).

    - ``.npz``: an ``embeddings.npz`` of ``taxoclip analyze`` (``z_model``, ``filepath``,
      optional ``z_baseline``), rows matched by image path;
    - ``.npy``: an (N, D) array whose rows follow ``images.filepaths`` (for a SynthToL
      root: ``train/metadata.csv`` then ``test/metadata.csv``, file order; rows whose
      image file is missing are not images);
    - ``.parquet``: an image key column (:data:`KEY_COLUMNS`: a path relative to ``data``,
      an absolute path, or the image id, i.e. the file name without its suffix) and either
      one list column or numeric columns, rows matched by key.

    Every image needs exactly one row and every row an image; anything else (a missing or
    extra key, a wrong row count, NaN, a 1-D array, an unknown suffix, an unreadable file)
    raises an error naming the file and the reason.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise UsageError(
            f"{flag} {path}: unknown suffix {path.suffix or '(none)'!r}; give a .npz "
            "(taxoclip analyze's embeddings.npz), .npy or .parquet file"
        )
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file")
    n = len(images.filepaths)
    if suffix == ".npy":
        z = _load_npy(path, flag)
        if z.ndim == 2 and len(z) != n:
            raise InputError(
                f"{flag} {path}: {len(z)} rows, but --data {data} has {n} images (a .npy's "
                "rows follow the data folder's images in the order analyze lists them)"
            )
        return EmbeddingsFile(path, _normalised(z, path, flag), None, "npy, rows in data order")
    if suffix == ".npz":
        keys, z, baseline = _load_npz(path, flag)
        what = "embeddings.npz of taxoclip analyze"
    else:
        keys, z, what = _load_parquet(path, flag)
        baseline = None
    z = _normalised(z, path, flag)
    if len(keys) != len(z):
        raise InputError(f"{flag} {path}: {len(keys)} keys for {len(z)} rows")
    order, kind = _align(keys, images, data, path, flag)
    if baseline is not None:
        baseline = _normalised(baseline, path, f"{flag} (z_baseline)")
        if len(baseline) != len(keys):
            raise InputError(
                f"{flag} {path}: z_baseline has {len(baseline)} rows, z_model {len(z)}"
            )
        baseline = baseline[order]
    return EmbeddingsFile(path, z[order], baseline, f"{what}, rows matched by {kind}")


def _load_npy(path: Path, flag: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag} {path}: cannot read it as a .npy array: {exc}") from exc


def _load_npz(path: Path, flag: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "z_model" not in data or "filepath" not in data:
                raise InputError(
                    f"{flag} {path}: not an embeddings.npz of taxoclip analyze (it needs "
                    f"z_model and filepath; has {', '.join(sorted(data.files)) or 'nothing'})"
                )
            baseline = data.get("z_baseline")
            return [str(k) for k in data["filepath"].tolist()], data["z_model"], baseline
    except (OSError, ValueError, EOFError) as exc:  # not a zip, or a pickled array
        raise InputError(f"{flag} {path}: cannot read it as a .npz archive: {exc}") from exc


def _load_parquet(path: Path, flag: str) -> tuple[list[str], np.ndarray, str]:
    """(keys, rows, what was read) of a Parquet file: a key column and one list column or
    numeric columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{flag} {path}: cannot read it as Parquet: {exc}") from exc
    names = table.column_names

    def kind(column: str) -> pa.DataType:
        return table.schema.field(column).type

    texts = [c for c in names if pa.types.is_string(kind(c)) or pa.types.is_large_string(kind(c))]
    key = next((c for c in KEY_COLUMNS if c in names), None)
    if key is None and len(texts) == 1:
        key = texts[0]
    if key is None:
        raise InputError(
            f"{flag} {path}: no image key column (one of {', '.join(KEY_COLUMNS)}, or a "
            f"single text column; it has {', '.join(names)})"
        )
    lists = [
        c
        for c in names
        if c != key
        and (
            pa.types.is_list(kind(c))
            or pa.types.is_large_list(kind(c))
            or pa.types.is_fixed_size_list(kind(c))
        )
    ]
    numeric = [
        c
        for c in names
        if c != key and (pa.types.is_floating(kind(c)) or pa.types.is_integer(kind(c)))
    ]
    if len(lists) > 1:
        raise InputError(
            f"{flag} {path}: {len(lists)} list columns ({', '.join(lists)}); keep the one "
            "holding the embedding"
        )
    if lists:
        try:
            z = np.asarray(table.column(lists[0]).to_pylist(), dtype=np.float64)
        except (TypeError, ValueError) as exc:  # ragged lists, nulls
            raise InputError(
                f"{flag} {path}: column {lists[0]!r} does not hold one equally long list "
                f"of numbers per row ({exc})"
            ) from exc
        what = f"parquet column {lists[0]!r}"
    elif numeric:
        try:
            z = np.column_stack(
                [np.asarray(table.column(c).to_pylist(), dtype=np.float64) for c in numeric]
            )
        except (TypeError, ValueError) as exc:  # nulls
            raise InputError(f"{flag} {path}: a numeric column holds a null ({exc})") from exc
        what = f"parquet, {len(numeric)} numeric columns"
    else:
        raise InputError(
            f"{flag} {path}: no embedding: neither a list column nor numeric columns beside "
            f"the key {key!r}"
        )
    keys = [str(k) for k in table.column(key).to_pylist()]
    return keys, z, f"{what} keyed by {key!r}"


def _normalised(z: np.ndarray, path: Path, flag: str) -> np.ndarray:
    """``z`` as float32 rows of unit length, or an error saying why it cannot be."""
    z = np.asarray(z)
    if z.ndim != 2:
        raise InputError(
            f"{flag} {path}: an array of shape {z.shape}; need one row per image (images, "
            "dimensions)"
        )
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise InputError(f"{flag} {path}: an empty array of shape {z.shape}")
    if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise InputError(f"{flag} {path}: holds {z.dtype}, not real numbers")
    z = z.astype(np.float64)
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise InputError(
            f"{flag} {path}: rows with NaN or infinite values: {int(bad.sum())} (first: row "
            f"{int(np.flatnonzero(bad)[0])})"
        )
    norms = np.linalg.norm(z, axis=1)
    if np.any(norms == 0):
        raise InputError(
            f"{flag} {path}: row {int(np.flatnonzero(norms == 0)[0])} is all zeros (cannot "
            "be L2-normalised)"
        )
    # Rows already of unit length (an embeddings.npz) are kept bit for bit, so analysing
    # the file again gives the very numbers of the analysis that wrote it.
    unit = np.abs(norms - 1.0) < 1e-5
    return np.where(unit[:, None], z, z / norms[:, None]).astype(np.float32)


def _key(value: str) -> str:
    """A key compared across files: slashes forward, no leading ``./``, digits as a number
    (image id 7 matches the file name ``0000007``)."""
    text = str(value).strip().replace("\\", "/").removeprefix("./")
    return str(int(text)) if text.isdigit() else text


def image_keys(images: AnalysisData, data: str | Path) -> dict[str, list[str]]:
    """Each way an embeddings file may name the images of ``images``: kind → one key per
    image (see :func:`read_embeddings`)."""
    root = Path(data).resolve()
    paths = [Path(p) for p in images.filepaths]

    def relative(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:  # an evaluation folder may name images outside itself
            return p.as_posix()

    return {
        "path relative to --data": [_key(relative(p)) for p in paths],
        "absolute path": [_key(p.as_posix()) for p in paths],
        "image id (file name without suffix)": [_key(p.stem) for p in paths],
    }


def _align(
    keys: list[str], images: AnalysisData, data: str | Path, path: Path, flag: str
) -> tuple[np.ndarray, str]:
    """(row of the file for each image, in image order; the kind of key that matched)."""
    wanted = [_key(k) for k in keys]
    row_of: dict[str, int] = {}
    for row, key in enumerate(wanted):
        if key in row_of:
            raise InputError(f"{flag} {path}: key {keys[row]!r} appears in more than one row")
        row_of[key] = row
    # The kind of key naming the most images (and naming each image once) is the one used.
    kinds = {k: v for k, v in image_keys(images, data).items() if len(set(v)) == len(v)}
    kind, names = max(kinds.items(), key=lambda kv: sum(k in row_of for k in kv[1]))
    missing = [name for name in names if name not in row_of]
    extra = sorted(set(row_of) - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of the {len(names)} images of --data {data} have no row "
                f"(first: {', '.join(missing[:_SHOWN_KEYS])})"
            )
        if extra:
            parts.append(
                f"{len(extra)} rows name no image of it (first: {', '.join(extra[:_SHOWN_KEYS])})"
            )
        raise InputError(f"{flag} {path}: {'; '.join(parts)} (keys read as {kind})")
    return np.array([row_of[name] for name in names], dtype=int), kind


def embedded_from(images: AnalysisData, z: dict[str, np.ndarray], ok: np.ndarray) -> Embedded:
    """The images ``ok`` selects, with their labels, beside ``z`` (name → rows of those
    images only, L2-normalised)."""

    def pick(values: list[str]) -> np.ndarray:
        return np.asarray([v or "" for v, keep in zip(values, ok, strict=True) if keep], dtype=str)

    return Embedded(
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

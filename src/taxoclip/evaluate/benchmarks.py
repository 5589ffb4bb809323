"""Published benchmarks BioCLIP 2 reports on: where each lives under a root, how to read it.

Every loader reads one benchmark from the files as they are distributed (the dataset's own
release, or the layout BioCLIP 2's evaluation code reads — each spec says which and where
that was learned) and returns an :class:`~taxoclip.evaluate.dataset.EvalSet` (or a list of
them for suites of several sets). Paths are absolute; images listed by the benchmark but
absent on disk go to ``EvalSet.missing`` and never stop a load; a file that cannot be
understood raises :class:`~taxoclip.errors.InputError` naming the file and the problem.

Sources consulted (read, not copied):

* BioCLIP 2 evaluation code, ``github.com/Imageomics/bioclip-2``: ``slurm/eval.sh`` (which
  species sets and where their CSVs sit), ``src/evaluation/data.py`` (``metadata.csv``
  reading), ``fishnet.py``, ``newt.py``, ``awa2.py``, ``herbarium19.py``, ``plantdoc.py``.
* BioCLIP annotation files, ``github.com/Imageomics/bioclip``:
  ``data/annotation/rare_species/metadata.csv`` (header
  ``,kingdom,phylum,cls,order,family,genus,species,common_name,filepath,class``) and
  ``data/annotation/meta-album/FNG_Mini/metadata.csv`` (header ``,filepath,class``).
* IDLE-OO Camera Traps dataset card,
  ``huggingface.co/datasets/imageomics/IDLE-OO-Camera-Traps`` (``<set>-balanced.csv`` at the
  top, images under ``data/test/<set>/``).
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet
from taxoclip.taxonomy import Lineage, clean_name

from . import published_numbers

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

Loaded = EvalSet | list[EvalSet]


@dataclass(frozen=True)
class BenchmarkSpec:
    """One published benchmark: where it lives under a root and how to read it."""

    name: str
    directory: str  # relative to the benchmarks root
    loader: Callable[[Path], Loaded]
    protocols: tuple[str, ...]
    layout: str  # the files the loader expects, and whose layout that is
    marker: str  # a file or folder (relative to ``directory``) whose presence marks the layout
    description: str = ""
    #: how BioCLIP 2 describes the classes to the text tower for this benchmark
    #: (``slurm/eval.sh`` ``--text_type``): ``taxon_com`` or the class name as given
    text_type: str = "as-given"


# --------------------------------------------------------------------------- helpers


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (UTF-8, BOM tolerated); a bad file is an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    if not header:
        raise InputError(f"{path}: empty, no header row")
    return header, rows


def _read_lines(path: Path) -> list[str]:
    """Non-blank lines of a text file, stripped; a missing file is an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _split_pairs(path: Path, lines: Iterable[str]) -> list[tuple[str, str]]:
    """``"<key> <value with spaces>"`` lines (the CUB/NABirds .txt format)."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"{path}: line {number} should be '<id> <value>', got {line!r}")
        pairs.append((parts[0], parts[1].strip()))
    return pairs


def _strip_index(name: str) -> str:
    """``"1\\tantelope"`` or ``"antelope"`` → ``"antelope"`` (AwA2 list files)."""
    parts = name.split()
    return parts[-1] if len(parts) > 1 and parts[0].isdigit() else name.strip()


def _require_columns(path: Path, header: list[str], needed: Iterable[str]) -> None:
    absent = [c for c in needed if c not in header]
    if absent:
        raise InputError(f"{path}: missing column(s) {absent} (has {header})")


def _image_folder(folder: Path) -> tuple[list[str], list[str]]:
    """torchvision ``ImageFolder`` order: class folders sorted, images sorted within each."""
    paths, labels = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for image in sorted(class_dir.rglob("*")):
            if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(image.resolve()))
                labels.append(class_dir.name)
    return paths, labels


def nfc(text: str) -> str:
    """A class name as compared here: NFC, surrounding whitespace stripped (BioCLIP's Fungi
    and Insects CSVs store accented names decomposed, NFD)."""
    return unicodedata.normalize("NFC", text.strip())


def _resolve(root: Path, relative: str) -> Path:
    """``root/relative``, or its NFC or NFD spelling when only that one exists on disk."""
    path = root / relative
    if not path.exists():
        for form in ("NFC", "NFD"):
            other = root / unicodedata.normalize(form, relative)
            if other.exists():
                return other.resolve()
    return path.resolve()


def _check_nonempty(where: Path, paths: list[str], missing: list[tuple[str, str]]) -> None:
    if not paths:
        detail = f" (all {len(missing)} listed images are missing)" if missing else ""
        raise InputError(f"{where}: no images found{detail}")


def _keep_if_present(path: Path, missing: list[tuple[str, str]]) -> bool:
    if path.is_file():
        return True
    missing.append((str(path), "no such file"))
    return False


# --------------------------------------------------------------- BioCLIP metadata.csv


def read_bioclip_csv(csv_path: Path, image_root: Path, name: str) -> EvalSet:
    """A BioCLIP evaluation CSV: leading unnamed index column, ``filepath`` (relative to
    ``image_root``), ``class`` (the label), optional ``kingdom … species`` with the class
    rank as ``cls`` (BioCLIP's spelling; ``class_`` also accepted) and ``common_name``.

    Layout learned from Imageomics/bioclip ``data/annotation/rare_species/metadata.csv`` and
    Imageomics/bioclip-2 ``src/evaluation/data.py`` (``pd.read_csv(..., index_col=0)``).
    """
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("filepath", "class"))
    rank_columns = {"kingdom", "phylum", "cls", "class_", "order", "family", "genus", "species"}
    has_lineage = bool(rank_columns & set(header))
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("filepath") or "").strip()
        label = nfc(row.get("class") or "")
        if not relative or not label:
            raise InputError(f"{csv_path}: line {number} has an empty filepath or class")
        path = _resolve(image_root, relative)
        if not _keep_if_present(path, missing):
            continue
        paths.append(str(path))
        labels.append(label)
        commons.append((row.get("common_name") or "").strip())
        if has_lineage:
            mapping = {k: v for k, v in row.items() if k not in {"class", None}}
            mapping["class_"] = row.get("cls") or row.get("class_") or ""
            lineages.append(Lineage.from_mapping(mapping))
    _check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name=name,
        filepaths=paths,
        labels=labels,
        lineages=lineages if has_lineage else None,
        common_names=commons if "common_name" in header else None,
        missing=missing,
        extra={"source": str(csv_path)},
    )


# ------------------------------------------------------------------------- loaders


#: The Rare Species release's catalog (Hugging Face ``imageomics/rare_species``).
RARE_SPECIES_CATALOG = "metadata/rarespecies-catalog.csv"
RARE_SPECIES_CATALOG_COLUMNS = ("rarespecies_id", "eol_content_id", "eol_page_id", "kingdom",
                                "phylum", "class", "order", "family", "genus", "species",
                                "sciName", "common")  # fmt: skip


def _rare_species_label(lineage: Lineage, sci_name: str) -> str:
    """The class of a Rare Species image: its binomial (``sciName``, else genus + epithet)."""
    return nfc(sci_name) or lineage.species_binomial or lineage.scientific_name


def _read_rare_species_release(path: Path) -> EvalSet:
    """The Hugging Face release: ``dataset/<Kingdom-…-species>/<eol_content_id>_<eol_page_id>
    _eol…jpg`` and ``metadata/rarespecies-catalog.csv``; each image is matched to its
    catalog row by the content id (and page id) its file name starts with."""
    catalog = path / RARE_SPECIES_CATALOG
    header, rows = _read_csv(catalog)
    _require_columns(catalog, header, ("eol_content_id", "eol_page_id", "kingdom", "genus",
                                       "species"))  # fmt: skip
    by_id: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key = ((row.get("eol_content_id") or "").strip(), (row.get("eol_page_id") or "").strip())
        by_id[key] = row
    images = sorted(
        p
        for p in (path / "dataset").rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    paths, labels, lineages, commons, missing, seen = [], [], [], [], [], set()
    for image in images:
        parts = image.name.split("_")
        key = (parts[0], parts[1]) if len(parts) > 2 else ("", "")
        row = by_id.get(key)
        if row is None:
            missing.append((str(image.resolve()), f"not in {RARE_SPECIES_CATALOG}"))
            continue
        seen.add(key)
        lineage = Lineage.from_mapping({k: v for k, v in row.items() if k is not None})
        paths.append(str(image.resolve()))
        labels.append(_rare_species_label(lineage, row.get("sciName") or ""))
        lineages.append(lineage)
        commons.append(clean_name(row.get("common")))
    for key in by_id.keys() - seen:
        missing.append((str((path / "dataset").resolve()), f"no image for catalog row {key}"))
    _check_nonempty(path / "dataset", paths, missing)
    return EvalSet(name="rare_species", filepaths=paths, labels=labels, lineages=lineages,
                   common_names=commons, missing=missing,
                   extra={"source": str(catalog), "layout": "hf-release"})  # fmt: skip


def _read_rare_species_viewer_csv(csv_path: Path, path: Path) -> EvalSet:
    """The release's top-level ``metadata.csv`` (the Hugging Face viewer's imagefolder form:
    ``file_name`` relative to the release root, the catalog's rank columns and ``common``)."""
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("file_name", "genus", "species"))
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("file_name") or "").strip()
        if not relative:
            raise InputError(f"{csv_path}: line {number} has an empty file_name")
        image = _resolve(path, relative)
        if not _keep_if_present(image, missing):
            continue
        lineage = Lineage.from_mapping({k: v for k, v in row.items() if k is not None})
        paths.append(str(image))
        labels.append(_rare_species_label(lineage, row.get("sciName") or ""))
        lineages.append(lineage)
        commons.append(clean_name(row.get("common")))
    _check_nonempty(csv_path, paths, missing)
    return EvalSet(name="rare_species", filepaths=paths, labels=labels, lineages=lineages,
                   common_names=commons, missing=missing,
                   extra={"source": str(csv_path), "layout": "hf-viewer-metadata"})  # fmt: skip


def load_rare_species(path: Path) -> EvalSet:
    """Rare Species in any of its layouts, in this order:

    * the Hugging Face release ``imageomics/rare_species``: ``dataset/…`` +
      ``metadata/rarespecies-catalog.csv`` (columns :data:`RARE_SPECIES_CATALOG_COLUMNS`);
    * BioCLIP's annotation CSV ``metadata.csv`` (``,kingdom,phylum,cls,order,family,genus,
      species,common_name,filepath,class``; 11,983 rows, paths ``2024-03-20/<file>``) with
      images relative to it;
    * the release's own top-level ``metadata.csv`` (``file_name`` + catalog columns).
    """
    if (path / RARE_SPECIES_CATALOG).is_file() and (path / "dataset").is_dir():
        return _read_rare_species_release(path)
    csv_path = path / "metadata.csv"
    header, _ = _read_csv(csv_path)
    if "file_name" in header and "filepath" not in header:
        return _read_rare_species_viewer_csv(csv_path, path)
    return read_bioclip_csv(csv_path, path, "rare_species")


def load_nabirds(path: Path) -> EvalSet:
    """NABirds: the release's ``images.txt``/``classes.txt``/``image_class_labels.txt``/
    ``train_test_split.txt`` with ``images/``; or, when ``metadata.csv`` is present,
    BioCLIP 2's ``metadata.csv`` with paths relative to ``images/``."""
    if (path / "metadata.csv").is_file():
        return read_bioclip_csv(path / "metadata.csv", path / "images", "nabirds")
    images_txt = path / "images.txt"
    id_to_file = dict(_split_pairs(images_txt, _read_lines(images_txt)))
    classes_txt = path / "classes.txt"
    class_names = dict(_split_pairs(classes_txt, _read_lines(classes_txt)))
    labels_txt = path / "image_class_labels.txt"
    id_to_class = dict(_split_pairs(labels_txt, _read_lines(labels_txt)))
    split_txt = path / "train_test_split.txt"
    id_to_split = {}
    if split_txt.is_file():
        for image_id, flag in _split_pairs(split_txt, _read_lines(split_txt)):
            if flag not in {"0", "1"}:
                raise InputError(f"{split_txt}: is_training_image must be 0 or 1, got {flag!r}")
            id_to_split[image_id] = "train" if flag == "1" else "test"
    paths, labels, splits, missing = [], [], [], []
    for image_id, relative in id_to_file.items():
        if image_id not in id_to_class:
            raise InputError(f"{labels_txt}: no class for image id {image_id}")
        class_id = id_to_class[image_id]
        if class_id not in class_names:
            raise InputError(f"{classes_txt}: no class id {class_id} (used by image {image_id})")
        image = (path / "images" / relative).resolve()
        if not _keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(class_names[class_id])
        splits.append(id_to_split.get(image_id, "test"))
    _check_nonempty(images_txt, paths, missing)
    return EvalSet(
        name="nabirds",
        filepaths=paths,
        labels=labels,
        splits=splits if id_to_split else None,
        missing=missing,
        extra={"class_ids": {v: k for k, v in class_names.items()}},
    )


#: Our folder name → Meta-Album "Mini" dataset code, for the seven sets BioCLIP (2) uses
#: (Imageomics/bioclip-2 slurm/eval.sh; Imageomics/bioclip data/annotation/meta-album/).
META_ALBUM_SETS: dict[str, str] = {
    "plankton": "PLK_Mini",
    "insects": "INS_Mini",
    "insects2": "INS_2_Mini",
    "plantnet": "PLT_NET_Mini",
    "fungi": "FNG_Mini",
    "plant_village": "PLT_VIL_Mini",
    "medicinal_leaf": "MED_LF_Mini",
}


def _meta_album_dirs(path: Path) -> list[tuple[str, Path]]:
    """(our name, folder) of each set present: ``<ours>/``, ``<CODE>/`` or, as BioCLIP 2's
    ``slurm/eval.sh`` has them, ``set<k>/<CODE>/``."""
    found = []
    for ours, code in META_ALBUM_SETS.items():
        candidates = [path / ours, path / code, *sorted(path.glob(f"set*/{code}"))]
        for candidate in candidates:
            if candidate.is_dir():
                found.append((ours, candidate))
                break
    return found


#: Meta-Album's ``info.json`` keys naming the columns of ``labels.csv`` (with the defaults
#: of the release format, ``DataFormat/check_data_format.py`` in ihsaan-ullah/meta-album).
META_ALBUM_INFO_DEFAULTS = {
    "image_column_name": "FILE_NAME",
    "category_column_name": "CATEGORY",
    "super_category_column_name": "SUPER_CATEGORY",
}


def _meta_album_info(folder: Path) -> dict:
    info_path = folder / "info.json"
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{info_path}: not readable JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: must hold a JSON object")
    return info


def _read_meta_album_release(folder: Path, name: str) -> EvalSet:
    """Meta-Album's release form: ``labels.csv`` (``FILE_NAME, CATEGORY, SUPER_CATEGORY``, or
    the names ``info.json`` gives; tab-separated when it says ``csv_with_tab``) with images
    under ``images/`` (or the set folder when ``images_in_sub_folder`` is false)."""
    labels_csv = folder / "labels.csv"
    info = _meta_album_info(folder)
    columns = {k: str(info.get(k) or v) for k, v in META_ALBUM_INFO_DEFAULTS.items()}
    if info.get("csv_with_tab"):
        try:
            text = labels_csv.read_text(encoding="utf-8-sig")
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
            header, rows = list(reader.fieldnames or []), list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{labels_csv}: cannot read ({exc})") from exc
    else:
        header, rows = _read_csv(labels_csv)
    image_column, category_column = columns["image_column_name"], columns["category_column_name"]
    _require_columns(labels_csv, header, (image_column, category_column))
    super_column = columns["super_category_column_name"]
    image_root = folder if info.get("images_in_sub_folder") is False else folder / "images"
    paths, labels, supers, missing = [], [], [], []
    for number, row in enumerate(rows, start=2):
        file_name = (row.get(image_column) or "").strip()
        category = nfc(row.get(category_column) or "")
        if not file_name or not category:
            raise InputError(
                f"{labels_csv}: line {number} has an empty {image_column} or {category_column}"
            )
        image = _resolve(image_root, file_name)
        if not _keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(category)
        supers.append(nfc(row.get(super_column) or ""))
    _check_nonempty(labels_csv, paths, missing)
    extra = {"source": str(labels_csv), "layout": "meta-album release"}
    if super_column in header:
        extra["super_categories"] = supers
    return EvalSet(
        name=f"meta_album/{name}", filepaths=paths, labels=labels, missing=missing, extra=extra
    )


def load_meta_album_set(folder: Path, name: str) -> EvalSet:
    """One Meta-Album set, in either layout (class names NFC-normalised in both):

    * BioCLIP: ``metadata.csv`` (``,filepath,class``, paths ``<class>/<file>``) relative to
      ``val/`` if that folder exists, else to the set folder (bioclip-2 ``slurm/eval.sh``
      points ``data_root`` at ``<SET>/val``);
    * the Meta-Album release: ``labels.csv`` + ``info.json`` + ``images/``
      (meta-album.github.io format; see :func:`_read_meta_album_release`).
    """
    if (folder / "metadata.csv").is_file():
        root = folder / "val" if (folder / "val").is_dir() else folder
        return read_bioclip_csv(folder / "metadata.csv", root, f"meta_album/{name}")
    if not (folder / "labels.csv").is_file():
        raise InputError(f"{folder}: neither metadata.csv (BioCLIP) nor labels.csv (Meta-Album)")
    return _read_meta_album_release(folder, name)


def load_meta_album(path: Path) -> list[EvalSet]:
    """Every Meta-Album set present under ``ROOT/meta_album`` (see :data:`META_ALBUM_SETS`)."""
    found = _meta_album_dirs(path)
    if not found:
        known = ", ".join(f"{a} (or {b})" for a, b in META_ALBUM_SETS.items())
        raise InputError(f"{path}: none of the Meta-Album sets is present: {known}")
    return [load_meta_album_set(folder, ours) for ours, folder in found]


#: The five IDLE-OO Camera Traps sets (dataset card; bioclip-2 slurm/eval.sh).
CAMERA_TRAP_SETS = ("desert-lion", "ENA24", "island", "ohio-small-animals", "orinoquia")


#: The released ``<set>-balanced.csv`` header up to ``filepath`` (IDLE-OO Camera Traps on
#: Hugging Face; the released files hold 352, 1120, 310, 468 and 336 rows). There is no
#: ``class`` column: BioCLIP 2 builds the class from the ranks and ``common_name``
#: (``--text_type taxon_com``, Imageomics/bioclip-2 ``slurm/eval.sh``).
CAMERA_TRAP_COLUMNS = ("url_gcp", "url_aws", "url_azure", "image_id", "sequence_id",
                       "location_id", "frame_num", "original_label", "scientific_name",
                       "common_name", "kingdom", "phylum", "cls", "order", "family", "genus",
                       "species", "filepath")  # fmt: skip


def taxon_com(lineage: Lineage, common: str) -> str:
    """BioCLIP's ``taxon_com`` text: the present ranks, then ``with common name …``."""
    taxon = lineage.taxonomic_name
    return f"{taxon} with common name {common}" if common else taxon


def _camera_trap_image_root(path: Path, set_name: str, first: str) -> Path:
    """Where ``filepath`` (``<set>/<uuid>.png``) is relative to: ``data/test/`` in the
    release; ``images/`` as bioclip-2's ``slurm/eval.sh`` lays it out; for older files whose
    paths lack the set folder, ``data/test/<set>/`` or ``images/<set>/``."""
    candidates = [path / "data" / "test", path / "images", path,
                  path / "data" / "test" / set_name, path / "images" / set_name]  # fmt: skip
    for base in candidates:
        if first and (base / first).is_file():
            return base
    return candidates[0]


def load_camera_trap_set(path: Path, set_name: str) -> EvalSet:
    """One IDLE-OO Camera Traps set: ``<set>-balanced.csv`` (columns
    :data:`CAMERA_TRAP_COLUMNS`, rank ``cls`` for class) with images under ``data/test/``.
    The class is the ``taxon_com`` string built from the ranks and ``common_name`` (a
    ``class`` column, as in BioCLIP-style CSVs, is used when present)."""
    csv_path = path / f"{set_name}-balanced.csv"
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("filepath",))
    if "class" not in header:
        _require_columns(csv_path, header, ("kingdom", "genus", "species", "common_name"))
    first = next((r.get("filepath", "").strip() for r in rows if r.get("filepath")), "")
    image_root = _camera_trap_image_root(path, set_name, first)
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("filepath") or "").strip()
        if not relative:
            raise InputError(f"{csv_path}: line {number} has an empty filepath")
        mapping = {k: v for k, v in row.items() if k not in {"class", None}}
        mapping["class_"] = row.get("cls") or row.get("class_") or ""
        lineage = Lineage.from_mapping(mapping)
        common = clean_name(row.get("common_name"))
        label = nfc(row.get("class") or "") if "class" in header else taxon_com(lineage, common)
        if not label:
            raise InputError(f"{csv_path}: line {number} has no ranks, common name or class")
        image = _resolve(image_root, relative)
        if not _keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(label)
        lineages.append(lineage)
        commons.append(common)
    _check_nonempty(csv_path, paths, missing)
    return EvalSet(name=f"camera_trap/{set_name}", filepaths=paths, labels=labels,
                   lineages=lineages, common_names=commons, missing=missing,
                   extra={"source": str(csv_path), "image_root": str(image_root)})  # fmt: skip


def camera_trap_sets(path: Path) -> list[str]:
    """The sets of :data:`CAMERA_TRAP_SETS` whose ``<set>-balanced.csv`` is under ``path``."""
    return [s for s in CAMERA_TRAP_SETS if (path / f"{s}-balanced.csv").is_file()]


def load_camera_trap(path: Path) -> list[EvalSet]:
    """IDLE-OO Camera Traps: every ``<set>-balanced.csv`` present (see
    :func:`load_camera_trap_set`)."""
    present = camera_trap_sets(path)
    if not present:
        raise InputError(f"{path}: no <set>-balanced.csv for any of {list(CAMERA_TRAP_SETS)}")
    return [load_camera_trap_set(path, s) for s in present]


#: FishNet attribute columns as BioCLIP 2's fishnet.py names them; ``FeedingPath`` is
#: ``pelagic`` (1) / ``benthic`` (0), the rest 0/1.
FISHNET_ATTRIBUTES = (
    "FeedingPath",
    "Tropical",
    "Temperate",
    "Subtropical",
    "Boreal",
    "Polar",
    "freshwater",
    "saltwater",
    "brackish",
)
# fishnet.py reads rows of ``pl.read_csv(...).with_row_index()``, whose first column is the
# added row index, and takes the image from position 4 and the folder from position 13 of
# that row: positions 3 and 12 of the CSV itself (0-based).
_FISHNET_IMAGE_COLUMN = 3
_FISHNET_FOLDER_COLUMN = 12


def _fishnet_value(csv_path: Path, number: int, column: str, value: str) -> int | None:
    value = value.strip()
    if value == "":
        return None
    if column == "FeedingPath":
        if value == "pelagic":
            return 1
        if value == "benthic":
            return 0
        raise InputError(
            f"{csv_path}: line {number}: FeedingPath must be pelagic or benthic, got {value!r}"
        )
    try:
        number_value = float(value)
    except ValueError:
        raise InputError(
            f"{csv_path}: line {number}: {column} must be 0/1, got {value!r}"
        ) from None
    if number_value not in (0.0, 1.0):
        raise InputError(f"{csv_path}: line {number}: {column} must be 0/1, got {value!r}")
    return int(number_value)


def load_fishnet(path: Path) -> EvalSet:
    """FishNet as BioCLIP 2's ``fishnet.py`` reads it: ``train.csv`` and ``test.csv``; image
    = ``Image_Library/<CSV column 12>/<basename of CSV column 3>`` (0-based); attributes =
    the columns named in :data:`FISHNET_ATTRIBUTES`. Rows with an empty attribute are
    dropped, as there. Label = the image's folder (column 12)."""
    paths, labels, splits, rows_out, missing = [], [], [], [], []
    dropped = 0
    for split in ("train", "test"):
        csv_path = path / f"{split}.csv"
        if not csv_path.is_file():
            raise InputError(f"{csv_path}: no such file (FishNet needs train.csv and test.csv)")
        try:
            with csv_path.open(newline="", encoding="utf-8-sig") as handle:
                table = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{csv_path}: cannot read ({exc})") from exc
        if not table:
            raise InputError(f"{csv_path}: empty, no header row")
        header = table[0]
        absent = [c for c in FISHNET_ATTRIBUTES if c not in header]
        if absent:
            raise InputError(f"{csv_path}: missing attribute column(s) {absent}")
        positions = [header.index(c) for c in FISHNET_ATTRIBUTES]
        want = max([*positions, _FISHNET_FOLDER_COLUMN]) + 1
        for number, row in enumerate(table[1:], start=2):
            if len(row) < want:
                raise InputError(f"{csv_path}: line {number} has {len(row)} fields, needs {want}")
            values = [
                _fishnet_value(csv_path, number, column, row[position])
                for column, position in zip(FISHNET_ATTRIBUTES, positions, strict=True)
            ]
            if any(v is None for v in values):
                dropped += 1
                continue
            folder = row[_FISHNET_FOLDER_COLUMN].strip()
            image_name = row[_FISHNET_IMAGE_COLUMN].strip().split("/")[-1]
            if not folder or not image_name:
                raise InputError(f"{csv_path}: line {number} has an empty image or folder")
            image = (path / "Image_Library" / folder / image_name).resolve()
            if not _keep_if_present(image, missing):
                continue
            paths.append(str(image))
            labels.append(folder)
            splits.append(split)
            rows_out.append(values)
    _check_nonempty(path, paths, missing)
    return EvalSet(
        name="fishnet",
        filepaths=paths,
        labels=labels,
        task_type="attributes",
        splits=splits,
        attributes=np.asarray(rows_out, dtype=np.int8),
        attribute_names=list(FISHNET_ATTRIBUTES),
        missing=missing,
        extra={"dropped_rows_without_attributes": dropped},
    )


def load_newt(path: Path) -> EvalSet:
    """NeWT 2021 release: ``newt2021_labels.csv`` (``id``, ``task``, ``label`` 0/1,
    ``split`` train/test, ``task_cluster``, ``task_subcluster``) and
    ``newt2021_images/<id>.jpg`` — as BioCLIP 2's ``newt.py`` reads it."""
    csv_path = path / "newt2021_labels.csv"
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("id", "task", "label", "split"))
    paths, labels, splits, tasks, clusters, subclusters, missing = [], [], [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        image_id = (row.get("id") or "").strip()
        label = (row.get("label") or "").strip()
        split = (row.get("split") or "").strip()
        task = (row.get("task") or "").strip()
        if not image_id or not task:
            raise InputError(f"{csv_path}: line {number} has an empty id or task")
        if label not in {"0", "1"}:
            raise InputError(f"{csv_path}: line {number}: label must be 0 or 1, got {label!r}")
        if split not in {"train", "test"}:
            raise InputError(
                f"{csv_path}: line {number}: split must be train or test, got {split!r}"
            )
        image = (path / "newt2021_images" / f"{image_id}.jpg").resolve()
        if not _keep_if_present(image, missing):
            continue
        paths.append(str(image))
        labels.append(label)
        splits.append(split)
        tasks.append(task)
        clusters.append((row.get("task_cluster") or "").strip())
        subclusters.append((row.get("task_subcluster") or "").strip() or "none")
    _check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name="newt",
        filepaths=paths,
        labels=labels,
        task_type="binary_tasks",
        splits=splits,
        task_ids=tasks,
        missing=missing,
        extra={"task_cluster": clusters, "task_subcluster": subclusters},
    )


def load_awa2(path: Path) -> EvalSet:
    """AwA2 release (``Animals_with_Attributes2``): ``classes.txt``, ``predicates.txt``,
    ``predicate-matrix-binary.txt`` (50×85, space-separated 0/1), ``trainclasses.txt`` /
    ``testclasses.txt`` (the standard class split), images ``JPEGImages/<class>/*.jpg`` —
    the files BioCLIP 2's ``awa2.py`` reads. Each image gets its class's predicate row."""
    classes_txt = path / "classes.txt"
    classes = [_strip_index(line) for line in _read_lines(classes_txt)]
    predicates_txt = path / "predicates.txt"
    predicates = (
        [_strip_index(line) for line in _read_lines(predicates_txt)]
        if predicates_txt.is_file()
        else None
    )
    matrix_txt = path / "predicate-matrix-binary.txt"
    matrix_rows = []
    for number, line in enumerate(_read_lines(matrix_txt), start=1):
        try:
            matrix_rows.append([int(v) for v in line.split()])
        except ValueError:
            raise InputError(
                f"{matrix_txt}: line {number} is not whitespace-separated 0/1"
            ) from None
    widths = {len(r) for r in matrix_rows}
    if len(matrix_rows) != len(classes) or len(widths) != 1:
        raise InputError(
            f"{matrix_txt}: needs one row per class in {classes_txt.name} ({len(classes)}) of equal "
            f"width; has {len(matrix_rows)} rows of widths {sorted(widths)}"
        )
    matrix = np.asarray(matrix_rows, dtype=np.int8)
    if not np.isin(matrix, (0, 1)).all():
        raise InputError(f"{matrix_txt}: values must be 0 or 1")
    if predicates is not None and len(predicates) != matrix.shape[1]:
        raise InputError(
            f"{predicates_txt}: {len(predicates)} predicates but the matrix has {matrix.shape[1]} columns"
        )
    row_of = {name: i for i, name in enumerate(classes)}
    paths, labels, splits, attribute_rows, missing = [], [], [], [], []
    for split, list_name in (("train", "trainclasses.txt"), ("test", "testclasses.txt")):
        list_path = path / list_name
        for class_name in (_strip_index(line) for line in _read_lines(list_path)):
            if class_name not in row_of:
                raise InputError(f"{list_path}: class {class_name!r} is not in {classes_txt.name}")
            class_dir = path / "JPEGImages" / class_name
            if not class_dir.is_dir():
                missing.append((str(class_dir.resolve()), "no such folder"))
                continue
            images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for image in images:
                paths.append(str(image.resolve()))
                labels.append(class_name)
                splits.append(split)
                attribute_rows.append(row_of[class_name])
    _check_nonempty(path / "JPEGImages", paths, missing)
    return EvalSet(
        name="awa2",
        filepaths=paths,
        labels=labels,
        task_type="attributes",
        splits=splits,
        attributes=matrix[attribute_rows],
        attribute_names=predicates or [f"attribute_{i}" for i in range(matrix.shape[1])],
        missing=missing,
        extra={"classes": classes},
    )


class _SplitsUnpickler(pickle.Unpickler):
    """Reads the GCD class-split pickle: plain containers and numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "range"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }

    def find_class(self, module: str, name: str) -> object:
        """Allow only the classes a list/array of class indices needs."""
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


HERBARIUM_SPLITS_FILE = "herbarium_19_class_splits.pkl"


#: BioCLIP 2's Herbarium19 protocol (``src/evaluation/herbarium19.py``, from the GCD code's
#: ``get_herbarium_datasets``): the share of Old-class ``small-train`` images labelled, and
#: the seed of that draw.
HERBARIUM_LABELLED_FRACTION = 0.8
HERBARIUM_SEED = 0


def _herbarium_class_split(
    splits_file: Path, class_names: list[str]
) -> tuple[list[int], list[int]]:
    try:
        with splits_file.open("rb") as handle:
            splits = _SplitsUnpickler(handle).load()
    except Exception as exc:  # any unpickling failure is a bad input file
        raise InputError(f"{splits_file}: not a readable class-split pickle ({exc})") from exc
    if not isinstance(splits, dict) or "Old" not in splits:
        raise InputError(f"{splits_file}: must hold a dict with an 'Old' list of class indices")
    out: dict[str, list[int]] = {"Old": [], "New": []}
    for key in out:
        for value in list(splits.get(key, [])):
            try:
                index = int(value)
            except (TypeError, ValueError):
                raise InputError(f"{splits_file}: {key} holds a non-integer {value!r}") from None
            if not 0 <= index < len(class_names):
                raise InputError(
                    f"{splits_file}: {key} class index {index} outside 0..{len(class_names) - 1}"
                )
            out[key].append(index)
    return out["Old"], out["New"]


def herbarium_labelled(n_old_images: int, fraction: float = HERBARIUM_LABELLED_FRACTION,
                       seed: int = HERBARIUM_SEED) -> np.ndarray:  # fmt: skip
    """Positions (among the Old-class images, in ImageFolder order) that are labelled: the
    GCD code's ``np.random.seed(seed); np.random.choice(range(n), replace=False,
    size=int(fraction * n))``, reproduced with the same legacy generator."""
    size = int(fraction * n_old_images)
    return np.random.RandomState(seed).choice(n_old_images, size=size, replace=False)


def load_herbarium19(path: Path, seed: int = HERBARIUM_SEED,
                     labelled_fraction: float = HERBARIUM_LABELLED_FRACTION) -> EvalSet:  # fmt: skip
    """Herbarium19 with BioCLIP 2's protocol (``src/evaluation/herbarium19.py``): the
    ``small-train/<class>/`` image folder (683 classes, sorted as torchvision's
    ``ImageFolder`` sorts them) and ``herbarium_19_class_splits.pkl`` (``{'Old': [...],
    'New': [...]}``, indices into those sorted folders). A seeded ``labelled_fraction`` of
    the Old-class images is labelled (split ``train``); every other ``small-train`` image,
    of Old and New classes, is scored (split ``test``). ``small-validation`` is not used."""
    train_dir = path / "small-train"
    if not train_dir.is_dir():
        raise InputError(f"{train_dir}: no such folder (Herbarium19 GCD layout)")
    paths, labels = _image_folder(train_dir)
    _check_nonempty(train_dir, paths, [])
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    splits_file = path / HERBARIUM_SPLITS_FILE
    if not splits_file.is_file():
        raise InputError(f"{splits_file}: no such file (the GCD Old/New class split is needed)")
    old, new = _herbarium_class_split(splits_file, class_names)
    known = [class_names[i] for i in old]
    old_positions = np.flatnonzero(np.isin(labels, known))
    labelled = old_positions[herbarium_labelled(len(old_positions), labelled_fraction, seed)]
    splits = np.full(len(paths), "test", dtype=object)
    splits[labelled] = "train"
    return EvalSet(
        name="herbarium19",
        filepaths=paths,
        labels=labels,
        task_type="category_discovery",
        splits=[str(s) for s in splits],
        extra={
            "protocol": "bioclip2-gcd",
            "known_classes": known,
            "novel_classes": [class_names[i] for i in new],
            "labelled_fraction": labelled_fraction,
            "seed": seed,
            "class_names": class_names,
            "n_clusters": len(old) + len(new) if new else len(class_names),
        },
    )


def load_plantdoc(path: Path) -> EvalSet:
    """PlantDoc classification release (``pratikkayal/PlantDoc-Dataset``): ``train/<class>/``
    and ``test/<class>/`` image folders, as BioCLIP 2's ``plantdoc.py`` reads them."""
    paths, labels, splits = [], [], []
    for split in ("train", "test"):
        folder = path / split
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder (PlantDoc needs train/ and test/)")
        split_paths, split_labels = _image_folder(folder)
        paths += split_paths
        labels += split_labels
        splits += [split] * len(split_paths)
    _check_nonempty(path, paths, [])
    return EvalSet(name="plantdoc", filepaths=paths, labels=labels, splits=splits)


# ------------------------------------------------------------------------ registry

_SPECIES = ("zero_shot", "few_shot")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            name="nabirds",
            directory="nabirds",
            loader=load_nabirds,
            protocols=_SPECIES,
            marker="images",
            layout=(
                "NABirds release: images.txt, classes.txt, image_class_labels.txt, "
                "train_test_split.txt, images/<dir>/<file>.jpg (dl.allaboutbirds.org/nabirds); "
                "or BioCLIP 2's metadata.csv (,filepath,class) with paths under images/ "
                "(Imageomics/bioclip-2 slurm/eval.sh)"
            ),
        ),
        BenchmarkSpec(
            name="meta_album",
            directory="meta_album",
            loader=load_meta_album,
            protocols=_SPECIES,
            marker="",
            layout=(
                "meta_album/<set>/ for set in plankton, insects, insects2, plantnet, fungi, "
                "plant_village, medicinal_leaf (or the Meta-Album codes PLK_Mini … MED_LF_Mini): "
                "BioCLIP metadata.csv (,filepath,class) with images under val/ or the set folder "
                "(Imageomics/bioclip data/annotation/meta-album, bioclip-2 slurm/eval.sh), or the "
                "Meta-Album release labels.csv (FILE_NAME, CATEGORY) + images/"
            ),
        ),
        BenchmarkSpec(
            name="rare_species",
            directory="rare_species",
            loader=load_rare_species,
            protocols=_SPECIES,
            marker="metadata.csv",
            text_type="taxon_com",
            layout=(
                "Hugging Face release imageomics/rare_species: dataset/<Kingdom-…-species>/"
                "<eol_content_id>_<eol_page_id>_eol…jpg + metadata/rarespecies-catalog.csv; "
                "or BioCLIP's annotation metadata.csv "
                "(,kingdom,phylum,cls,order,family,genus,species,common_name,filepath,class) with "
                "image paths relative to it (Imageomics/bioclip data/annotation/rare_species/); "
                "or the release's top-level metadata.csv (file_name + catalog columns)"
            ),
        ),
        BenchmarkSpec(
            name="camera_trap",
            directory="camera_trap",
            loader=load_camera_trap,
            protocols=_SPECIES,
            marker="",
            text_type="taxon_com",
            layout=(
                "IDLE-OO Camera Traps release: <set>-balanced.csv for desert-lion, ENA24, island, "
                "ohio-small-animals, orinoquia (url_gcp … common_name, kingdom, phylum, cls, "
                "order, family, genus, species, filepath; no class column: the class is the "
                "taxon_com text of the ranks and common_name); filepath <set>/<uuid>.png "
                "relative to data/test/ (HF dataset card) or images/ (bioclip-2 slurm/eval.sh)"
            ),
        ),
        BenchmarkSpec(
            name="newt",
            directory="newt",
            loader=load_newt,
            protocols=("svm_binary_tasks",),
            marker="newt2021_labels.csv",
            layout=(
                "NeWT 2021 release: newt2021_labels.csv (id, task, label, split, task_cluster, "
                "task_subcluster) + newt2021_images/<id>.jpg (Imageomics/bioclip-2 "
                "src/evaluation/newt.py)"
            ),
        ),
        BenchmarkSpec(
            name="fishnet",
            directory="fishnet",
            loader=load_fishnet,
            protocols=("mlp_attributes_exact_match",),
            marker="train.csv",
            layout=(
                "FishNet as BioCLIP 2 reads it: train.csv/test.csv, image in CSV column 3 "
                "(basename), folder in column 12 (0-based; fishnet.py's 4/13 count a prepended "
                "row index), attribute columns by name (FeedingPath pelagic/benthic, "
                "Tropical … brackish 0/1); images Image_Library/<folder>/<file> "
                "(Imageomics/bioclip-2 src/evaluation/fishnet.py)"
            ),
        ),
        BenchmarkSpec(
            name="awa2",
            directory="awa2",
            loader=load_awa2,
            protocols=("mlp_attributes_macro_f1",),
            marker="predicate-matrix-binary.txt",
            layout=(
                "AwA2 release (Animals_with_Attributes2): classes.txt, predicates.txt, "
                "predicate-matrix-binary.txt, trainclasses.txt, testclasses.txt, "
                "JPEGImages/<class>/*.jpg (cvml.ista.ac.at/AwA2; Imageomics/bioclip-2 "
                "src/evaluation/awa2.py)"
            ),
        ),
        BenchmarkSpec(
            name="herbarium19",
            directory="herbarium19",
            loader=load_herbarium19,
            protocols=("gcd",),
            marker="small-train",
            layout=(
                "GCD layout: small-train/<class>/ and herbarium_19_class_splits.pkl "
                "({'Old': [...], 'New': [...]} over the sorted class folders); BioCLIP 2's "
                "protocol: a seeded 80 % of the Old-class small-train images labelled, the rest "
                "of small-train scored; small-validation/ unused (Imageomics/bioclip-2 "
                "src/evaluation/herbarium19.py, from sgvaze/generalized-category-discovery)"
            ),
        ),
        BenchmarkSpec(
            name="plantdoc",
            directory="plantdoc",
            loader=load_plantdoc,
            protocols=("few_shot_1",),
            marker="train",
            layout=(
                "PlantDoc-Dataset release: train/<class>/, test/<class>/ "
                "(github.com/pratikkayal/PlantDoc-Dataset; Imageomics/bioclip-2 "
                "src/evaluation/plantdoc.py)"
            ),
        ),
    )
}

#: BioCLIP 2's two published means (percent); every published number, per benchmark and
#: model, is in :mod:`taxoclip.evaluate.published_numbers`.
PUBLISHED: dict[str, float] = {
    "zero_shot_species_mean_10": published_numbers.ZERO_SHOT["BioCLIP 2"][-1],
    "beyond_species_mean": published_numbers.BEYOND["BioCLIP 2"][-1],
}


# --------------------------------------------------------------------- discovery


def _absent_reason(spec: BenchmarkSpec, root: Path) -> str | None:
    folder = root / spec.directory
    if not folder.is_dir():
        return f"{spec.name}: no folder {folder}"
    if spec.name == "meta_album":
        if not _meta_album_dirs(folder):
            return f"{spec.name}: {folder} holds none of {list(META_ALBUM_SETS)}"
        return None
    if spec.name == "camera_trap":
        if not any((folder / f"{s}-balanced.csv").is_file() for s in CAMERA_TRAP_SETS):
            return f"{spec.name}: {folder} holds no <set>-balanced.csv"
        return None
    if spec.name == "nabirds" and (folder / "metadata.csv").is_file():
        return None
    if spec.name == "rare_species" and (folder / RARE_SPECIES_CATALOG).is_file():
        return None
    if spec.marker and not (folder / spec.marker).exists():
        return f"{spec.name}: {folder} has no {spec.marker}"
    return None


def find_benchmarks(root: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Which registered benchmarks exist under ``root``: (found names, [(name, reason)])."""
    root = Path(root)
    found, skipped = [], []
    for name, spec in BENCHMARKS.items():
        reason = _absent_reason(spec, root)
        if reason is None:
            found.append(name)
        else:
            skipped.append((name, reason))
    return found, skipped


def load_benchmark(name: str, root: str | Path) -> Loaded:
    """Load benchmark ``name`` from ``root/<its directory>``.

    Raises :class:`InputError` for an unknown name, a missing folder or a malformed layout.
    """
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    folder = Path(root) / spec.directory
    if not folder.is_dir():
        raise InputError(f"{name}: no folder {folder}")
    return spec.loader(folder)


def load_parts(name: str, root: str | Path) -> list[tuple[str, Callable[[], EvalSet]]]:
    """Benchmark ``name`` as separately loadable parts ``(set name, load)``: one per set for
    the suites of several sets (camera traps, Meta-Album), so that one unreadable set is
    reported while the others run; a single part otherwise."""
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    folder = Path(root) / BENCHMARKS[name].directory
    if name == "camera_trap":
        return [(f"camera_trap/{s}", lambda s=s: load_camera_trap_set(folder, s))
                for s in camera_trap_sets(folder)]  # fmt: skip
    if name == "meta_album":
        return [(f"meta_album/{ours}", lambda d=d, o=ours: load_meta_album_set(d, o))
                for ours, d in _meta_album_dirs(folder)]  # fmt: skip

    return [(name, lambda: load_benchmark(name, root))]  # type: ignore[list-item]

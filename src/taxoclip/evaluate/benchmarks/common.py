"""What the benchmark loaders share: reading CSV and text files with errors that name the
file, image folders, name normalisation, and BioCLIP's evaluation ``metadata.csv``.

Paths are absolute; an image listed but absent on disk goes to ``EvalSet.missing`` and
never stops a load; a file that cannot be understood raises
:class:`~taxoclip.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.evaluate.dataset import EvalSet
from taxoclip.runtime.images import IMAGE_SUFFIXES  # what counts as an image, everywhere
from taxoclip.taxonomy import Lineage


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
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


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a text file, stripped; a missing file is an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def require_columns(path: Path, header: list[str], needed: Iterable[str]) -> None:
    absent = [c for c in needed if c not in header]
    if absent:
        raise InputError(f"{path}: missing column(s) {absent} (has {header})")


def image_folder(folder: Path) -> tuple[list[str], list[str]]:
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


def resolve(root: Path, relative: str) -> Path:
    """``root/relative``, or its NFC or NFD spelling when only that one exists on disk."""
    path = root / relative
    if not path.exists():
        for form in ("NFC", "NFD"):
            other = root / unicodedata.normalize(form, relative)
            if other.exists():
                return other.resolve()
    return path.resolve()


def check_nonempty(where: Path, paths: list[str], missing: list[tuple[str, str]]) -> None:
    if not paths:
        detail = f" (all {len(missing)} listed images are missing)" if missing else ""
        raise InputError(f"{where}: no images found{detail}")


def keep_if_present(path: Path, missing: list[tuple[str, str]]) -> bool:
    """Whether ``path`` is there; if not, it is noted in ``missing``."""
    if path.is_file():
        return True
    missing.append((str(path), "no such file"))
    return False


def lineage_of(row: dict[str, str]) -> Lineage:
    """The lineage of a BioCLIP-style row, whose class rank is ``cls`` (or ``class_``):
    ``class`` is the label column there."""
    mapping = {k: v for k, v in row.items() if k not in {"class", None}}
    mapping["class_"] = row.get("cls") or row.get("class_") or ""
    return Lineage.from_mapping(mapping)


def read_bioclip_csv(csv_path: Path, image_root: Path, name: str) -> EvalSet:
    """A BioCLIP evaluation CSV: leading unnamed index column, ``filepath`` (relative to
    ``image_root``), ``class`` (the label), optional ``kingdom … species`` with the class
    rank as ``cls`` (BioCLIP's spelling; ``class_`` also accepted) and ``common_name``.

    Layout learned from Imageomics/bioclip ``data/annotation/rare_species/metadata.csv`` and
    Imageomics/bioclip-2 ``src/evaluation/data.py`` (``pd.read_csv(..., index_col=0)``).
    """
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, ("filepath", "class"))
    rank_columns = {"kingdom", "phylum", "cls", "class_", "order", "family", "genus", "species"}
    has_lineage = bool(rank_columns & set(header))
    paths, labels, lineages, commons, missing = [], [], [], [], []
    for number, row in enumerate(rows, start=2):
        relative = (row.get("filepath") or "").strip()
        label = nfc(row.get("class") or "")
        if not relative or not label:
            raise InputError(f"{csv_path}: line {number} has an empty filepath or class")
        path = resolve(image_root, relative)
        if not keep_if_present(path, missing):
            continue
        paths.append(str(path))
        labels.append(label)
        commons.append((row.get("common_name") or "").strip())
        if has_lineage:
            lineages.append(lineage_of(row))
    check_nonempty(csv_path, paths, missing)
    return EvalSet(
        name=name,
        filepaths=paths,
        labels=labels,
        lineages=lineages if has_lineage else None,
        common_names=commons if "common_name" in header else None,
        missing=missing,
        extra={"source": str(csv_path)},
    )

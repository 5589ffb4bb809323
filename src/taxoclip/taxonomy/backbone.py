"""Reading a GBIF-format backbone folder: ``Taxon.tsv``, ``VernacularName.tsv``, ``VERSION``.

Only the reading lives here; what a reader builds from the rows is its own business
(``taxoclip.predict`` lists accepted species, ``taxoclip.curate.names`` resolves names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from taxoclip.errors import InputError

TAXON_FILE = "Taxon.tsv"
VERNACULAR_FILE = "VernacularName.tsv"
VERSION_FILE = "VERSION"
TAXON_REQUIRED = ("taxonID", "canonicalName", "taxonRank", "taxonomicStatus", "genus")
ENGLISH_CODES = frozenset({"en", "eng", "english"})


def taxon_file(folder: Path) -> Path:
    """``folder/Taxon.tsv``, or an :class:`InputError` saying it is not there."""
    path = Path(folder) / TAXON_FILE
    if not path.is_file():
        raise InputError(f"backbone {folder}: no {TAXON_FILE}")
    return path


def read_columns(
    path: Path, columns: Sequence[str], required: Sequence[str] = ()
) -> Iterator[tuple[str, ...]]:
    """Rows of a tab-separated file with a header, as tuples of ``columns``.

    A column the file lacks reads as ``""``, as do cells a short row lacks. GBIF writes
    these files unquoted (``"`` is an ordinary character in names and remarks), so a line
    split on tabs is exactly a row, and far cheaper than the csv module at millions of rows.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="\n") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
            missing = [name for name in required if name not in header]
            if missing:
                raise InputError(f"backbone {path}: missing columns {', '.join(missing)}")
            where = [header.index(name) if name in header else None for name in columns]
            width = len(header)
            for line in handle:
                cells = line.rstrip("\r\n").split("\t")
                if len(cells) == 1 and not cells[0]:
                    continue  # blank line
                if len(cells) < width:
                    cells.extend([""] * (width - len(cells)))
                yield tuple("" if index is None else cells[index] for index in where)
    except UnicodeDecodeError as error:
        raise InputError(f"backbone {path}: not UTF-8 text ({error})") from None


def english_names(folder: Path) -> dict[str, str]:
    """First English vernacular name per taxonID, in file order (GBIF lists several)."""
    path = Path(folder) / VERNACULAR_FILE
    names: dict[str, str] = {}
    if not path.is_file():
        return names
    for taxon_id, name, language in read_columns(
        path, ("taxonID", "vernacularName", "language"), required=("taxonID", "vernacularName")
    ):
        name = name.strip()
        if name and language.strip().lower() in ENGLISH_CODES:
            names.setdefault(taxon_id.strip(), name)
    return names


def backbone_version(folder: Path) -> str:
    """The ``VERSION`` file's first line, else ``sha256:`` and 16 hex digits of Taxon.tsv."""
    version_path = Path(folder) / VERSION_FILE
    if version_path.is_file():
        lines = version_path.read_text(encoding="utf-8").strip().splitlines()
        if lines and lines[0].strip():
            return lines[0].strip()
    digest = hashlib.sha256()
    with taxon_file(folder).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]

"""Accepted species of a GBIF-format backbone (``Taxon.tsv`` + ``VernacularName.tsv``)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.taxonomy import Lineage

TAXON_FILE = "Taxon.tsv"
VERNACULAR_FILE = "VernacularName.tsv"
_REQUIRED = ("taxonID", "canonicalName", "taxonRank", "taxonomicStatus", "genus")


def _rows(path: Path):
    csv.field_size_limit(sys.maxsize)  # GBIF remarks fields can be long
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = (
            [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if path.name == TAXON_FILE
            else []
        )
        if missing:
            raise InputError(f"backbone {path}: missing columns {', '.join(missing)}")
        yield from reader


def english_names(folder: Path) -> dict[str, str]:
    """First English vernacular name per taxonID (GBIF lists several, in no set order)."""
    path = folder / VERNACULAR_FILE
    names: dict[str, str] = {}
    if not path.is_file():
        return names
    for row in _rows(path):
        if row.get("language", "").lower() in ("en", "eng", "english"):
            names.setdefault(row["taxonID"], row.get("vernacularName", "").strip())
    return names


def read_backbone_species(folder: Path) -> list[tuple[Lineage, str]]:
    """(lineage, English common name) of every accepted species, in file order."""
    path = folder / TAXON_FILE
    if not path.is_file():
        raise InputError(f"backbone {folder}: no {TAXON_FILE}")
    commons = english_names(folder)
    taxa = []
    for row in _rows(path):
        if row["taxonRank"].lower() != "species" or row["taxonomicStatus"].lower() != "accepted":
            continue
        genus = row.get("genus", "")
        canonical = row["canonicalName"].strip()
        epithet = (
            canonical[len(genus) + 1 :]
            if genus and canonical.startswith(genus + " ")
            else canonical.split(" ")[-1]
        )
        lineage = Lineage(row.get("kingdom"), row.get("phylum"), row.get("class"), row.get("order"),
                          row.get("family"), genus, epithet)  # fmt: skip
        taxa.append((lineage, commons.get(row["taxonID"], "")))
    if not taxa:
        raise InputError(f"backbone {path} has no accepted species")
    return taxa

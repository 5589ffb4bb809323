"""Accepted species of a GBIF-format backbone (``Taxon.tsv`` + ``VernacularName.tsv``)."""

from __future__ import annotations

from pathlib import Path

from taxoclip.errors import InputError
from taxoclip.taxonomy import Lineage
from taxoclip.taxonomy.backbone import (
    TAXON_FILE,
    TAXON_REQUIRED,
    VERNACULAR_FILE,
    english_names,
    read_columns,
    taxon_file,
)

__all__ = ["TAXON_FILE", "VERNACULAR_FILE", "english_names", "read_backbone_species"]

_COLUMNS = (
    "taxonID",
    "canonicalName",
    "taxonRank",
    "taxonomicStatus",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
)


def read_backbone_species(folder: Path) -> list[tuple[Lineage, str]]:
    """(lineage, English common name) of every accepted species, in file order."""
    path = taxon_file(folder)
    commons = english_names(folder)
    taxa = []
    for taxon_id, canonical, rank, status, *higher in read_columns(
        path, _COLUMNS, required=TAXON_REQUIRED
    ):
        if rank.lower() != "species" or status.lower() != "accepted":
            continue
        genus = higher[-1]
        canonical = canonical.strip()
        epithet = (
            canonical[len(genus) + 1 :]
            if genus and canonical.startswith(genus + " ")
            else canonical.split(" ")[-1]
        )
        taxa.append((Lineage(*higher, epithet), commons.get(taxon_id, "")))
    if not taxa:
        raise InputError(f"backbone {path} has no accepted species")
    return taxa

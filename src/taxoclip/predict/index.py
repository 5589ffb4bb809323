"""Building a tree-of-life text index: taxa from a CSV or a backbone, their text, the matrix.

Each taxon's text is the 7 ranks joined by spaces plus the common name (pybioclip's),
through the 80 OpenAI templates (:func:`taxoclip.runtime.text.class_text_matrix`); the
index itself, its files and its reading are :class:`taxoclip.runtime.index.TextIndex`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from taxoclip.errors import InputError, UsageError
from taxoclip.runtime.index import TextIndex
from taxoclip.runtime.text import class_text_matrix
from taxoclip.taxonomy import RANK_NAMES, Lineage, clean_name


def taxon_text(ranks: Sequence[str], common: str) -> str:
    """pybioclip's text for a taxon: the 7 names (holes as "") and the common name."""
    return " ".join([*ranks, common])


def build_index(
    text_encoder, taxa: Sequence[tuple[Lineage, str]], batch_size: int = 32, progress: bool = False
) -> TextIndex:
    """The index of ``taxa`` through ``text_encoder`` (a
    :class:`~taxoclip.runtime.encode.TextEncoder`: torch's or an exported ONNX one)."""
    if not taxa:
        raise UsageError("no taxa to index")
    names = [[lineage.to_list(), clean_name(common)] for lineage, common in taxa]
    labels = [taxon_text(ranks, common) for ranks, common in names]
    return TextIndex(
        class_text_matrix(text_encoder, labels, progress=progress, batch_size=batch_size), names
    )


def read_taxa(source: str | os.PathLike) -> list[tuple[Lineage, str]]:
    """Taxa from a CSV (rank columns + optional ``common_name``; SynthToL's species.csv
    and pybioclip's ``list-tol-taxa`` output both qualify) or a GBIF backbone folder."""
    path = Path(source)
    if path.is_dir():
        from .backbone import read_backbone_species

        return read_backbone_species(path)
    if not path.is_file():
        raise InputError(f"taxa source {path}: no such file or folder")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        rank_columns = (set(RANK_NAMES) | {"class_", "species_epithet"}) & columns
        if not rank_columns:
            raise InputError(
                f"taxa CSV {path}: no rank columns; expected some of {', '.join(RANK_NAMES)} "
                "(and optionally species_epithet, common_name)"
            )
        taxa, seen = [], set()
        for row in reader:
            lineage = Lineage.from_mapping(row)
            if lineage.is_empty:
                continue
            common = clean_name(row.get("common_name", ""))
            key = (lineage.ranks, common)
            if key not in seen:
                seen.add(key)
                taxa.append((lineage, common))
    if not taxa:
        raise InputError(f"taxa CSV {path} lists no taxa")
    return taxa

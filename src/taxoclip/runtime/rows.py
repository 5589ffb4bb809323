"""pybioclip's prediction rows: their keys, and how each kind of row is written.

Torch-free. The scorer (:mod:`.scoring`) writes them, the writers (``taxoclip.predict.output``),
serve and the MegaDetector output read them, so every runtime and every caller produces
the same rows, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taxoclip.taxonomy import RANK_NAMES, Rank

PRED_FILENAME_KEY = "file_name"
PRED_CLASSIFICATION_KEY = "classification"
PRED_SCORE_KEY = "score"
ERROR_KEY = "error"
SPECIES_COLUMNS = (*RANK_NAMES[:-1], "species_epithet", "species", "common_name")
#: Lineage columns of a tree-of-life row, root first (``species_epithet`` at species).
LINEAGE_COLUMNS = (*RANK_NAMES[:-1], "species_epithet")


def error_row(key: str, reason: str) -> dict:
    return {PRED_FILENAME_KEY: key, ERROR_KEY: reason}


def label_row(key: str, label: str, score: float) -> dict:
    """A custom-label (``--cls``) or bin (``--bins``) row."""
    return {PRED_FILENAME_KEY: key, PRED_CLASSIFICATION_KEY: label, PRED_SCORE_KEY: score}


def tol_row(key: str, rank: Rank, names: Sequence[str], common: str, score: float) -> dict:
    """A tree-of-life row at ``rank``: the ranks down to it, binomial and common name at
    species, then the score."""
    row = {PRED_FILENAME_KEY: key}
    depth = int(rank) + 1
    for name, value in zip(RANK_NAMES[:depth], names[:depth], strict=False):
        row[name if name != "species" else "species_epithet"] = value
    if rank is Rank.SPECIES:
        row["species"] = f"{names[5]} {names[6]}"
        row["common_name"] = common
    row[PRED_SCORE_KEY] = score
    return row


def landed_row(key: str, rank: Rank, names: Sequence[str], common: str, score: float) -> dict:
    """A row under ``--region``/``--deny``: the columns of ``rank``, filled down to the rank
    the taxon landed on (``names`` stop there; "" below), and ``rank_landed``."""
    landed = Rank(min(int(rank), len(names) - 1))
    full = tol_row(key, landed, names, common, score)
    columns = [c if c != "species" else "species_epithet" for c in RANK_NAMES[: rank + 1]]
    if rank is Rank.SPECIES:
        columns += ["species", "common_name"]
    row = {PRED_FILENAME_KEY: key, **{c: full.get(c, "") for c in columns}}
    row["rank_landed"] = landed.get_label()
    row[PRED_SCORE_KEY] = score
    return row


def deepest_row(
    key: str,
    rank: Rank | None,
    names: Sequence[str],
    common: str,
    score: float,
    row_of: Callable[..., dict] = tol_row,
) -> dict:
    """``--deepest-rank``'s row: the rank reached and every species column ("" below it);
    ``row_of`` writes the names at the rank (:func:`tol_row`, or :func:`landed_row`: the
    rank is then the deepest one the landed taxon names)."""
    if rank is None:
        return {PRED_FILENAME_KEY: key, "rank": "", PRED_SCORE_KEY: 0.0}
    out = row_of(key, rank, names, common, score)
    reached = rank.get_label()
    if "rank_landed" in out:
        named = [i for i, column in enumerate(LINEAGE_COLUMNS) if out.get(column)]
        reached = RANK_NAMES[max(named)] if named else reached
    return {
        PRED_FILENAME_KEY: key,
        "rank": reached,
        **{c: out.get(c, "") for c in SPECIES_COLUMNS},
        PRED_SCORE_KEY: score,
    }

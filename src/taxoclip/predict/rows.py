"""pybioclip's prediction rows: their keys and how a tree-of-life row is written.

Torch-free, so both runtimes (the torch classifiers and the ONNX path) and the writers
(:mod:`.output`) build and read the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taxoclip.taxonomy import RANK_NAMES, Rank

PRED_FILENAME_KEY = "file_name"
PRED_CLASSIFICATION_KEY = "classification"
PRED_SCORE_KEY = "score"
ERROR_KEY = "error"
SPECIES_COLUMNS = (*RANK_NAMES[:-1], "species_epithet", "species", "common_name")


def error_row(key: str, reason: str) -> dict:
    return {PRED_FILENAME_KEY: key, ERROR_KEY: reason}


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


def deepest_row(key: str, rank: Rank | None, names: Sequence[str], common: str,
                score: float, row_of: Callable[..., dict] = tol_row) -> dict:  # fmt: skip
    """``--deepest-rank``'s row: the rank reached and every species column ("" below it);
    ``row_of`` writes the names at the rank (a classifier's own, e.g. a region list's)."""
    if rank is None:
        return {PRED_FILENAME_KEY: key, "rank": "", PRED_SCORE_KEY: 0.0}
    out = row_of(key, rank, names, common, score)
    return {PRED_FILENAME_KEY: key, "rank": rank.get_label(),
            **{c: out.get(c, "") for c in SPECIES_COLUMNS}, PRED_SCORE_KEY: score}  # fmt: skip


def deepest_choices(
    top_at_rank: Callable[[Rank], tuple], n: int, threshold: float
) -> list[tuple[Rank, Sequence[str], str, float] | None]:
    """``--deepest-rank`` for a batch of ``n`` images: per image ``(rank, names, common,
    score)`` of the deepest rank whose best taxon scores at least ``threshold``, or None.
    ``top_at_rank(rank)`` gives that rank's top-1 ``(values, named)`` in either runtime."""
    best: list[tuple[Rank, Sequence[str], str, float] | None] = [None] * n
    for rank in reversed(list(Rank)):  # species first: keep the deepest that clears
        values, named = top_at_rank(rank)
        for row in range(n):
            if best[row] is None and named[row] and float(values[row, 0]) >= threshold:
                names, common = named[row][0]
                best[row] = (rank, names, common, float(values[row, 0]))
    return best


def rolled_up_names(values, positions, labels: Sequence) -> list[list[tuple]]:
    """Per image, ``(names down to the rank, "")`` of each top-k roll-up taxon with a
    non-zero score (``values``/``positions``: a tensor or an array, both runtimes)."""
    return [
        [(labels[p], "") for v, p in zip(row_values, row, strict=True) if v > 0]
        for row_values, row in zip(values.tolist(), positions.tolist(), strict=True)
    ]

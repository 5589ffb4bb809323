"""Hierarchical metrics from one species-level prediction (none of the published tools
report these): top-k at every rank, mistake severity, and accuracy at genus/family on
species the model never saw.

Pure functions over a probability matrix (images × candidate species), the candidates'
lineages and the true lineages. A rank's prediction sums the species probabilities
under each taxon (as ``taxoclip predict`` and pybioclip roll up), so a model unsure
between two congeners can still be right about the genus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taxoclip.taxonomy import RANKS, Lineage, Rank, taxonomic_distance


def rank_groups(
    lineages: Sequence[Lineage], rank: Rank
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """(group of each candidate, group labels) for the names down to ``rank``."""
    prefixes = [lineage.ranks[: int(rank) + 1] for lineage in lineages]
    labels = list(dict.fromkeys(prefixes))
    position = {label: i for i, label in enumerate(labels)}
    return np.array([position[p] for p in prefixes], dtype=np.int64), labels


def topk_at_ranks(
    probs: np.ndarray,
    candidates: Sequence[Lineage],
    truth: Sequence[Lineage],
    ks: Sequence[int] = (1, 5),
) -> dict[str, dict[int, float]]:
    """``{rank: {k: accuracy}}``: is the true taxon among the k best at that rank?

    An image whose true taxon at a rank is absent from the candidates counts as wrong
    (it cannot be predicted), as in the species-level top-k.
    """
    results: dict[str, dict[int, float]] = {}
    for rank in RANKS:
        group, labels = rank_groups(candidates, rank)
        summed = np.zeros((probs.shape[0], len(labels)), dtype=np.float64)
        np.add.at(summed.T, group, probs.T)
        order = np.argsort(-summed, axis=1, kind="stable")
        position = {label: i for i, label in enumerate(labels)}
        true = np.array([position.get(t.ranks[: int(rank) + 1], -1) for t in truth])
        results[rank.get_label()] = {}
        for k in ks:
            top = order[:, : min(k, len(labels))]
            hit = (top == true[:, None]).any(axis=1) & (true >= 0)
            results[rank.get_label()][k] = float(hit.mean()) if len(truth) else float("nan")
    return results


def mistake_severity(
    probs: np.ndarray, candidates: Sequence[Lineage], truth: Sequence[Lineage]
) -> dict[str, float]:
    """Mean taxonomic distance (0–7, ranks to the common ancestor) of wrong top-1 species,
    and the share of mistakes that at least stay in the right genus / family."""
    top1 = probs.argmax(axis=1)
    distances = [
        taxonomic_distance(candidates[p], t)
        for p, t in zip(top1, truth, strict=True)
        if candidates[p].ranks != t.ranks
    ]
    if not distances:
        return {
            "mean_distance": 0.0,
            "n_mistakes": 0,
            "same_genus": float("nan"),
            "same_family": float("nan"),
        }
    array = np.asarray(distances)
    return {
        "mean_distance": float(array.mean()),
        "n_mistakes": int(len(array)),
        "same_genus": float((array <= 1).mean()),
        "same_family": float((array <= 2).mean()),
    }


def unseen_accuracy(
    probs: np.ndarray,
    candidates: Sequence[Lineage],
    truth: Sequence[Lineage],
    ranks: Sequence[Rank] = (Rank.SPECIES, Rank.GENUS, Rank.FAMILY),
) -> dict[str, float]:
    """Top-1 at species, genus and family for images of species absent from training."""
    table = topk_at_ranks(probs, candidates, truth, ks=(1,))
    return {Rank.parse(r).get_label(): table[Rank.parse(r).get_label()][1] for r in ranks}

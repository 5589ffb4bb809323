"""The one scorer: image features to probabilities, roll-ups and pybioclip's rows — numpy.

Whatever encoded the images (torch, ONNX fp32, ONNX int8) and whoever asks — predict, the
pybioclip classes, MegaDetector crops, serve, eval, curation's model filter, training
validation — scores them here:

- :func:`class_logits` and :func:`softmax`: ``logit_scale · cos`` against a (D, C) text
  matrix and its probabilities (eval's zero-shot, validation's top-1 use these alone);
- :class:`LabelScorer`: a softmax over text classifiers (custom labels, ``--cls``; the
  model filter's prompts), the probabilities optionally summed per bin (``--bins``);
- :class:`TreeScorer`: a softmax over a tree-of-life index, summed to any rank (species
  under ``min_prob`` left out of the sums, as pybioclip), restricted to a subset
  (``--subset``), rolled up by a regional list (``--region``/``--deny``: each species
  counts for the taxon it lands on), and ``--deepest-rank``.

A roll-up is one ``bincount`` per image over a species → taxon map computed once per rank,
never a loop over taxa. Features come in L2-normalised, float32 (B, D).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from taxoclip.errors import UsageError
from taxoclip.taxonomy import Rank

from .index import TextIndex
from .rows import deepest_row, label_row, landed_row, tol_row


def class_logits(
    features: np.ndarray, matrix: np.ndarray, scale: float, chunk: int = 65_536
) -> np.ndarray:
    """``scale · features @ matrix`` in float32, (B, C). A float16 matrix (a half-precision
    index: 1M × 768 is 1.5 GB instead of 3) is widened ``chunk`` columns at a time."""
    features = np.asarray(features, dtype=np.float32)
    if matrix.dtype == np.float32:
        out = features @ matrix
    else:
        out = np.empty((features.shape[0], matrix.shape[1]), dtype=np.float32)
        for start in range(0, matrix.shape[1], chunk):
            block = matrix[:, start : start + chunk].astype(np.float32)
            out[:, start : start + block.shape[1]] = features @ block
    out *= np.float32(scale)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum against overflow, in the logits'
    precision: one new array (B × a million taxa at a time), the input kept. The one
    softmax of predict, serve, eval and the model filter."""
    probs = logits - logits.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` per row, descending (ties: lower position first, as torch on CPU)."""
    k = min(k, values.shape[1])
    if k < values.shape[1]:
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    part_values = np.take_along_axis(values, part, axis=1)
    order = np.lexsort((part, -part_values), axis=1)
    positions = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(values, positions, axis=1), positions


def group_sums(probs: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(B, n_groups): each image's probabilities summed per group (column → group)."""
    summed = np.zeros((probs.shape[0], n_groups), dtype=probs.dtype)
    for row in range(probs.shape[0]):  # bincount per image: C speed, no (B, N) temporaries
        summed[row] = np.bincount(group, weights=probs[row], minlength=n_groups)
    return summed


def landed_groups(
    names: Sequence, landing: np.ndarray, rank: Rank
) -> tuple[np.ndarray, list[tuple[str, ...]], list[str]]:
    """``(group, labels, commons)`` under a regional list: each species → the taxon it
    lands on (``landing``: its depth 0..6, -1 when left out), cut at ``rank``; left-out
    species go to the extra last group ``len(labels)``. A species' own common name is kept
    (the first species' when several land on one label)."""
    depth = np.minimum(landing, int(rank))
    keys = np.array(
        [
            "\x1f".join(entry[0][: d + 1]) if d >= 0 else "\x00"
            for entry, d in zip(names, depth, strict=True)
        ],
        dtype=object,
    )
    labels, inverse = np.unique(keys, return_inverse=True)
    commons = [""] * len(labels)
    for i in range(len(keys) - 1, -1, -1):  # the first species' common name wins
        if depth[i] == 6:
            commons[inverse[i]] = names[i][1]
    inverse = inverse.astype(np.int64).reshape(-1)
    out_labels = [tuple(label.split("\x1f")) for label in labels]
    if labels[0] == "\x00":  # left-out species: move their group to the end
        inverse = np.where(inverse == 0, len(labels), inverse) - 1
        out_labels, commons = out_labels[1:], commons[1:]
    return inverse, out_labels, commons


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--deepest-rank threshold must be in (0, 1] (got {threshold})")
    return threshold


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Custom labels stripped; none may be empty."""
    cleaned = [str(label).strip() for label in labels]
    if not cleaned or any(not label for label in cleaned):
        raise UsageError("custom labels must be non-empty strings")
    return cleaned


class LabelScorer:
    """A softmax over the columns of a (D, C) text matrix, one column per label; with
    ``bins`` (label → bin), the probabilities summed per bin, bins in first-seen order."""

    def __init__(
        self,
        matrix: np.ndarray,
        labels: Sequence[str],
        logit_scale: float,
        bins: Mapping[str, object] | None = None,
    ) -> None:
        self.labels = clean_labels(labels)
        self.matrix = np.ascontiguousarray(matrix)
        self.logit_scale = float(logit_scale)
        self.names, self.bin_of = self.labels, None
        if bins is not None:
            self.check_bins(bins)
            bin_of_label = {str(k).strip(): str(v) for k, v in bins.items()}
            self.names = list(dict.fromkeys(bin_of_label[label] for label in self.labels))
            position = {name: i for i, name in enumerate(self.names)}
            self.bin_of = np.array([position[bin_of_label[label]] for label in self.labels])

    @classmethod
    def for_model(
        cls, encoder, labels: Sequence[str], bins: Mapping[str, object] | None = None
    ) -> LabelScorer:
        """The scorer of ``labels`` for ``encoder``'s model: their 80-template classifier
        from its text tower (cached; :func:`~.text.label_matrix`), the labels and bins
        checked before any text tower runs."""
        from .text import label_matrix

        labels = clean_labels(labels)
        if bins is not None:
            cls.check_bins(bins)
        return cls(label_matrix(encoder, labels), labels, encoder.logit_scale, bins)

    @staticmethod
    def check_bins(bins: Mapping[str, object]) -> None:
        """pybioclip's rule: every label has a bin (not None, NaN — pandas' empty cell —
        or blank)."""
        for value in bins.values():
            nan = isinstance(value, float) and value != value
            if value is None or nan or not str(value).strip():
                raise UsageError("Empty, null, or nan are not allowed for bin values.")

    def logits(self, features: np.ndarray) -> np.ndarray:
        return class_logits(features, self.matrix, self.logit_scale)

    def probs(self, features: np.ndarray) -> np.ndarray:
        """(B, C) over the labels (not the bins)."""
        return softmax(self.logits(features))

    def rows(
        self, features: np.ndarray, keys: Sequence[str], k: int | None = None
    ) -> list[list[dict]]:
        """Per image, the top ``k`` labels (or bins; all of them by default) as rows."""
        probs = self.probs(features)
        if self.bin_of is not None:
            probs = group_sums(probs, self.bin_of, len(self.names))
        values, positions = topk(probs, min(k or len(self.names), len(self.names)))
        return [
            [label_row(key, self.names[p], v) for v, p in zip(vs, ps, strict=True)]
            for key, vs, ps in zip(keys, values.tolist(), positions.tolist(), strict=True)
        ]


class TreeScorer:
    """Species probabilities over a tree-of-life index, and taxa at any rank by summing."""

    def __init__(
        self, index: TextIndex, logit_scale: float, landing: np.ndarray | None = None
    ) -> None:
        self.index = index
        self.logit_scale = float(logit_scale)
        self.landing = landing  # --region/--deny: the depth each species lands on
        self.row = tol_row if landing is None else landed_row
        self._groups: dict[Rank, tuple[np.ndarray, list[tuple[str, ...]], list[str]]] = {}

    def subset(self, rank: Rank | str, values: Sequence[str]) -> TreeScorer:
        """Restricted to the taxa named at ``rank`` (``--subset``)."""
        return TreeScorer(self.index.subset(self.index.keep(rank, values)), self.logit_scale)

    def with_landing(self, landing: np.ndarray) -> TreeScorer:
        """Rolled up by a regional list (``taxoclip.predict.region`` computes ``landing``)."""
        return TreeScorer(self.index, self.logit_scale, landing)

    def probs(self, features: np.ndarray) -> np.ndarray:
        return softmax(class_logits(features, self.index.embeddings, self.logit_scale))

    def groups(self, rank: Rank) -> tuple[np.ndarray, list[tuple[str, ...]], list[str]]:
        """``(group, labels, commons)``: species column → taxon at ``rank``, once per rank."""
        if rank not in self._groups:
            if self.landing is None:
                group, labels = self.index.rollup(rank)
                self._groups[rank] = (group, labels, [""] * len(labels))
            else:
                self._groups[rank] = landed_groups(self.index.names, self.landing, rank)
        return self._groups[rank]

    def top(self, probs: np.ndarray, rank: Rank, k: int, min_prob: float = 1e-9):
        """``(values, named)``: per image the top ``k`` taxa at ``rank`` and each one's
        ``(names down to the rank, common name)``. Above species, species at or under
        ``min_prob`` are left out of the sums (zeroed in ``probs``, in place: that only
        lowers what was already below ``min_prob``) and taxa that sum to 0 are dropped."""
        if rank is Rank.SPECIES and self.landing is None:  # each column its own taxon
            values, positions = topk(probs, k)
            names = self.index.names
            return values, [[(names[p][0], names[p][1]) for p in row] for row in positions.tolist()]
        if rank is not Rank.SPECIES:
            probs[probs <= min_prob] = 0.0
        group, labels, commons = self.groups(rank)
        values, positions = topk(group_sums(probs, group, len(labels) + 1)[:, :-1], k)
        named = [
            [(labels[p], commons[p]) for v, p in zip(vs, ps, strict=True) if v > 0]
            for vs, ps in zip(values.tolist(), positions.tolist(), strict=True)
        ]
        return values, named

    def rows(
        self,
        features: np.ndarray,
        keys: Sequence[str],
        rank: Rank | str = Rank.SPECIES,
        k: int = 5,
        min_prob: float = 1e-9,
    ) -> list[list[dict]]:
        """Per image, its top ``k`` taxa at ``rank`` as pybioclip's rows."""
        rank = Rank.parse(rank)
        values, named = self.top(self.probs(features), rank, k, min_prob)
        return [
            [
                self.row(key, rank, names, common, float(values[i, j]))
                for j, (names, common) in enumerate(named[i])
            ]
            for i, key in enumerate(keys)
        ]

    def deepest_rows(
        self, features: np.ndarray, keys: Sequence[str], threshold: float, min_prob: float = 1e-9
    ) -> list[list[dict]]:
        """Per image one row: the deepest rank whose best taxon's summed probability is at
        least ``threshold`` (``--deepest-rank``); rank "" and score 0 when none is."""
        check_threshold(threshold)
        probs = self.probs(features)
        best: list[tuple | None] = [None] * len(keys)
        for rank in reversed(list(Rank)):  # species first: keep the deepest that clears
            values, named = self.top(probs, rank, 1, min_prob)
            for i in range(len(keys)):
                if best[i] is None and named[i] and float(values[i, 0]) >= threshold:
                    names, common = named[i][0]
                    best[i] = (rank, names, common, float(values[i, 0]))
        return [
            [deepest_row(key, *(best[i] or (None, (), "", 0.0)), row_of=self.row)]
            for i, key in enumerate(keys)
        ]

"""What the server computes: the image tower behind one call, and predict's rows.

:meth:`Engine.encode` is the only place the image model runs (through
``taxoclip.runtime.open_encoder``: torch, or ONNX fp32/int8 for an exported folder), so
the batcher does not care which runtime it is. Everything else here turns features into
the rows ``taxoclip predict --format json`` writes: tree-of-life top-k at a rank (higher
ranks by summing species probabilities, as ``TreeOfLifeClassifier``), or custom labels
(80-template text classifiers, as ``CustomLabelsClassifier``). The text tower is torch's
(custom labels only); their embeddings are cached per label list.

Not thread-safe by design: only the batcher's worker thread calls ``encode`` and the
scoring methods; request handlers only call :func:`parse_subset` with :meth:`Engine.known`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from taxoclip.errors import UsageError
from taxoclip.predict.index import TextIndex, encode_class_texts, rollup_topk
from taxoclip.predict.rows import (
    PRED_CLASSIFICATION_KEY,
    PRED_FILENAME_KEY,
    PRED_SCORE_KEY,
    tol_row,
)
from taxoclip.predict.scoring import published_index_folder
from taxoclip.taxonomy import RANK_NAMES, Rank

log = logging.getLogger(__name__)

#: Kinds of forward pass: pybioclip's squash (tree of life) or open_clip's validation
#: transform (custom labels, embed) — the preprocessing predict uses for each mode.
TREE, PLAIN = "tree", "plain"
LABEL_CACHE = 64  # label lists whose text embeddings are kept
SUBSET_CACHE = 16


class Engine:
    """A model and a tree-of-life index, loaded once."""

    def __init__(self, model: str, index: str | None = None, *, pretrained: str | None = None,
                 runtime: str = "auto", device: str = "cpu") -> None:  # fmt: skip
        from taxoclip.runtime import open_encoder

        started = time.perf_counter()
        self.model_spec = model
        self.device = device
        self.pretrained = pretrained
        self._encoders = {
            TREE: open_encoder(model, runtime, squash=True, device=device, pretrained=pretrained)
        }
        self.runtime = self._encoders[TREE].runtime
        self.embed_dim = int(self._encoders[TREE].embed_dim)
        self.logit_scale = float(self._encoders[TREE].logit_scale)
        self.index_path = str(index) if index else self._published_index()
        self.index = TextIndex.load(self.index_path, model=model)
        self.index.check_dim(self.embed_dim, model)
        self._labels: OrderedDict[tuple[str, ...], TextIndex] = OrderedDict()
        self._subsets: OrderedDict[tuple, TextIndex] = OrderedDict()
        self._text_model: Any = None
        self._known: dict[Rank, frozenset[str]] = {}
        self.load_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ the model call

    def encode(self, images: Sequence[Image.Image], kind: Hashable) -> np.ndarray:
        """Raw (B, D) float32 image features: one forward pass. ``kind`` is ``TREE`` or
        ``PLAIN`` (the preprocessing)."""
        return self._encoder(kind).encode(list(images), normalize=False)

    def _encoder(self, kind: Hashable):
        if kind not in self._encoders:  # open_clip's transform: opened on first use
            tree = self._encoders[TREE]
            if tree.runtime == "torch":  # share the weights already in memory
                from taxoclip.runtime import TorchImageEncoder

                self._encoders[kind] = TorchImageEncoder(tree.loaded, squash=False,
                                                         device=self.device)  # fmt: skip
            else:
                from taxoclip.runtime import open_encoder

                self._encoders[kind] = open_encoder(self.model_spec, self.runtime, squash=False)
        return self._encoders[kind]

    def _published_index(self) -> str:
        return str(published_index_folder(self.model_spec))

    # ------------------------------------------------------------------ rows

    @torch.inference_mode()
    def tree_rows(self, features: np.ndarray, keys: Sequence[str], rank: Rank, k: int,
                  min_prob: float = 1e-9, subset: tuple | None = None) -> list[list[dict]]:  # fmt: skip
        """``taxoclip predict --rank RANK --k K [--subset]`` rows, per image."""
        index = self._subset_index(subset) if subset else self.index
        probs = self._probs(features, index)
        if rank is Rank.SPECIES:
            values, positions = probs.topk(min(k, probs.shape[1]), dim=1)
            named = [[(index.names[p][0], index.names[p][1]) for p in row]
                     for row in positions.tolist()]  # fmt: skip
        else:
            group, labels = index.rollup(rank)
            values, positions = rollup_topk(probs, group, len(labels), k, min_prob)
            named = [[(labels[p], "") for v, p in zip(vs, ps, strict=True) if v > 0]
                     for vs, ps in zip(values.tolist(), positions.tolist(), strict=True)]  # fmt: skip
        return [
            [
                tol_row(key, rank, names, common, float(values[row, j]))
                for j, (names, common) in enumerate(named[row])
            ]
            for row, key in enumerate(keys)
        ]

    @torch.inference_mode()
    def label_rows(self, features: np.ndarray, keys: Sequence[str], labels: Sequence[str],
                   k: int | None = None) -> list[list[dict]]:  # fmt: skip
        """``taxoclip predict --cls LABELS [--k K]`` rows, per image."""
        probs = self._probs(features, self.label_index(labels))
        values, positions = probs.topk(min(k or len(labels), len(labels)), dim=1)
        return [
            [
                {
                    PRED_FILENAME_KEY: key,
                    PRED_CLASSIFICATION_KEY: labels[p],
                    PRED_SCORE_KEY: float(v),
                }
                for v, p in zip(values[row].tolist(), positions[row].tolist(), strict=True)
            ]
            for row, key in enumerate(keys)
        ]

    def _probs(self, features: np.ndarray, index: TextIndex) -> torch.Tensor:
        tensor = torch.nn.functional.normalize(torch.from_numpy(np.asarray(features)), dim=-1)
        return torch.softmax(index.logits(tensor, self.logit_scale), dim=1)

    def label_index(self, labels: Sequence[str]) -> TextIndex:
        """The 80-template text classifier of ``labels`` (cached: a repeated list is free)."""
        key = tuple(labels)
        if key in self._labels:
            self._labels.move_to_end(key)
            return self._labels[key]
        model, tokenizer, device = self._text_tower()
        embeddings = encode_class_texts(model, tokenizer, list(labels), device).cpu()
        self._labels[key] = TextIndex(embeddings, [[[""] * 7, name] for name in labels])
        while len(self._labels) > LABEL_CACHE:
            self._labels.popitem(last=False)
        return self._labels[key]

    def _text_tower(self):
        tree = self._encoders[TREE]
        if tree.runtime == "torch":
            return tree.model, tree.loaded.tokenizer, tree.device
        if self._text_model is None:  # ONNX image tower: the text tower stays torch's
            from taxoclip.models import load_model

            self._text_model = load_model(self.model_spec, pretrained=self.pretrained)
        return self._text_model.model.eval(), self._text_model.tokenizer, "cpu"

    def known(self, rank: Rank) -> frozenset[str]:
        """Every name at ``rank`` in the index (as a subset CSV writes it), computed once."""
        if rank not in self._known:
            self._known[rank] = frozenset(taxon_value(e[0], rank) for e in self.index.names)
        return self._known[rank]

    def _subset_index(self, subset: tuple) -> TextIndex:
        if subset not in self._subsets:
            rank, values = subset
            self._subsets[subset] = self.index.subset(subset_mask(self.index, rank, values))
            while len(self._subsets) > SUBSET_CACHE:
                self._subsets.popitem(last=False)
        self._subsets.move_to_end(subset)
        return self._subsets[subset]


# ---------------------------------------------------------------------------- subsets


def parse_subset(
    text: str, known: Callable[[Rank], frozenset[str]]
) -> tuple[Rank, tuple[str, ...]]:
    """``--subset``'s CSV (first column named by a rank, one taxon per line) → a key the
    engine caches; unknown names or ranks are a :class:`UsageError` naming them."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    if not rows:
        raise UsageError("subset: empty; give a CSV whose first line names a rank")
    column = rows[0][0].strip().lower()
    if column not in RANK_NAMES:
        raise UsageError(
            f"subset: the first column is named '{column}' but must be one of "
            f"{','.join(RANK_NAMES)}"
        )
    rank = Rank.parse(column)
    values = tuple(dict.fromkeys(row[0].strip() for row in rows[1:]))
    if not values:
        raise UsageError(f"subset: no {column} names under the header")
    names = known(rank)
    unknown = [v for v in values if v not in names]
    if unknown:
        raise UsageError(
            f"Unknown {column} received: {', '.join(unknown)}. Only known {column} may be used."
        )
    return rank, tuple(sorted(values))


def taxon_value(ranks: Sequence[str], rank: Rank) -> str:
    """A taxon's name at ``rank`` as a subset CSV writes it (species: the binomial)."""
    if rank is Rank.SPECIES:
        return f"{ranks[5]} {ranks[6]}"
    return ranks[int(rank)]


def subset_mask(index: TextIndex, rank: Rank, values: Sequence[str]) -> list[bool]:
    wanted = set(values)
    return [taxon_value(entry[0], rank) in wanted for entry in index.names]

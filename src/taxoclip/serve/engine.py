"""What the server computes: the engine's encoders behind one call, and its scorer's rows.

:meth:`Engine.encode` is the only place the image model runs (an encoder from
``taxoclip.runtime.open_encoder``: torch, or ONNX fp32/int8 for an exported folder), so the
batcher does not care which runtime it is. The rows are the scorer's
(:mod:`taxoclip.runtime.scoring`), the ones ``taxoclip predict --format json`` writes:
tree-of-life top-k at a rank, with a subset, or custom labels (their text classifiers from
the model's own text tower, cached per label list). Under ONNX, torch is never imported
(custom labels of a folder exported without its text tower excepted).

Not thread-safe by design: only the batcher's worker thread calls ``encode`` and the
scoring methods; request handlers only call :meth:`Engine.subset_key`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np
from PIL import Image

from taxoclip.runtime.encode import ImageEncoder, open_encoder, squashes
from taxoclip.runtime.index import TextIndex, published_index_folder, read_subset
from taxoclip.runtime.preprocess import l2_normalize
from taxoclip.runtime.scoring import LabelScorer, TreeScorer
from taxoclip.taxonomy import Rank

#: Kinds of forward pass: pybioclip's squash (tree of life) or the preprocessing predict
#: uses for custom labels and embed (open_clip's centre crop, the BioCLIP models' squash).
TREE, PLAIN = "tree", "plain"
LABEL_CACHE = 64  # label lists whose text classifiers are kept
SUBSET_CACHE = 16

SubsetKey = tuple[Rank, tuple[str, ...]]


class Engine:
    """A model and a tree-of-life index, loaded once."""

    def __init__(
        self,
        model: str,
        index: str | None = None,
        *,
        pretrained: str | None = None,
        runtime: str = "auto",
        device: str = "cpu",
    ) -> None:
        started = time.perf_counter()
        self.model_spec = model
        tree = open_encoder(model, runtime, squash=True, device=device, pretrained=pretrained)
        self._encoders: dict[Hashable, ImageEncoder] = {TREE: tree}
        self.device = str(getattr(tree, "device", "cpu"))  # ONNX runs on the CPU
        self.runtime = tree.runtime
        self.embed_dim = int(tree.embed_dim)
        self.logit_scale = float(tree.logit_scale)
        self.index_path = str(index) if index else str(published_index_folder(model))
        self.index = TextIndex.load(self.index_path, model=model)
        self.index.check_dim(self.embed_dim, model)
        self.tree = TreeScorer(self.index, self.logit_scale)
        self._labels: OrderedDict[tuple[str, ...], LabelScorer] = OrderedDict()
        self._subsets: OrderedDict[SubsetKey, TreeScorer] = OrderedDict()
        self.load_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ the model call

    def encode(self, images: Sequence[Image.Image], kind: Hashable) -> np.ndarray:
        """Raw (B, D) float32 image features: one forward pass. ``kind`` is ``TREE`` or
        ``PLAIN`` (the preprocessing)."""
        return self._encoder(kind).encode(list(images), normalize=False)

    def _encoder(self, kind: Hashable) -> ImageEncoder:
        if kind not in self._encoders:  # opened on first use
            tree = self._encoders[TREE]
            if squashes(self.model_spec, tree_of_life=False):
                self._encoders[kind] = tree  # the same preprocessing: the same encoder
            elif tree.runtime == "torch":  # share the weights already in memory
                from taxoclip.runtime.torch_encoder import TorchImageEncoder

                self._encoders[kind] = TorchImageEncoder.open(tree.loaded, device=tree.device)
            else:  # the same export (a cached one has no spec of its own), cropped
                from taxoclip.runtime.onnx import OnnxImageEncoder

                plain = OnnxImageEncoder(tree.exported, int8=tree.int8, squash=False)
                plain.weights = tree.weights
                self._encoders[kind] = plain
        return self._encoders[kind]

    # ------------------------------------------------------------------ rows

    def tree_rows(
        self,
        features: np.ndarray,
        keys: Sequence[str],
        rank: Rank,
        k: int,
        min_prob: float = 1e-9,
        subset: SubsetKey | None = None,
    ) -> list[list[dict]]:
        """``taxoclip predict --rank RANK --k K [--subset]`` rows, per image."""
        scorer = self._subset(subset) if subset else self.tree
        return scorer.rows(l2_normalize(features), keys, rank, k, min_prob)

    def label_rows(
        self, features: np.ndarray, keys: Sequence[str], labels: Sequence[str], k: int | None = None
    ) -> list[list[dict]]:
        """``taxoclip predict --cls LABELS [--k K]`` rows, per image."""
        return self.label_scorer(labels).rows(l2_normalize(features), keys, k)

    def label_scorer(self, labels: Sequence[str]) -> LabelScorer:
        """The scorer of ``labels`` (kept: a repeated list is free)."""
        key = tuple(labels)
        if key not in self._labels:
            self._labels[key] = LabelScorer.for_model(self._encoders[TREE], labels)
            while len(self._labels) > LABEL_CACHE:
                self._labels.popitem(last=False)
        self._labels.move_to_end(key)
        return self._labels[key]

    def subset_key(self, text: str) -> SubsetKey:
        """A subset CSV's text (``--subset``'s format), checked against the index — a
        UsageError naming what it lacks — as the key :meth:`tree_rows` caches."""
        rank, values = read_subset(text, "subset")
        self.index.check_names(rank, values)  # against the names at the rank, kept once
        return rank, tuple(sorted(values))

    def _subset(self, subset: SubsetKey) -> TreeScorer:
        if subset not in self._subsets:
            self._subsets[subset] = self.tree.subset(*subset)
            while len(self._subsets) > SUBSET_CACHE:
                self._subsets.popitem(last=False)
        self._subsets.move_to_end(subset)
        return self._subsets[subset]

"""pybioclip's Python API — same class names, signatures and output rows — on taxoclip.

Thin adapters over the engine (:mod:`taxoclip.runtime`): the torch image encoder, the one
encoding loop and the one scorer that ``taxoclip predict`` runs on every runtime. What
differs from pybioclip under the hood: any model spec (run dirs, model folders, open_clip
names, ``hf-hub:``), any text index (``index=``), images decoded in threads, the rank
roll-up as one ``bincount`` per image over precomputed species→taxon maps, and unreadable
images reported as rows with an ``error`` field instead of an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from taxoclip.errors import UsageError
from taxoclip.runtime.encode import ScoreFn, open_encoder, score_images, squashes
from taxoclip.runtime.images import ImageInput, image_key
from taxoclip.runtime.index import TextIndex, published_index_folder, read_subset
from taxoclip.runtime.rows import SPECIES_COLUMNS
from taxoclip.runtime.scoring import LabelScorer, TreeScorer, check_threshold, clean_labels
from taxoclip.taxonomy import Rank

BIOCLIP_MODEL_STR = "hf-hub:imageomics/bioclip-2"

ImagesArg = Sequence[ImageInput] | ImageInput


def _as_list(images: ImagesArg) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


class BaseClassifier(torch.nn.Module):
    """Loads the model; encodes images in batches; images that fail are reported.

    ``runtime`` (beyond pybioclip; default torch) runs the image tower on ONNX Runtime for
    a folder made by ``taxoclip export onnx`` (``onnx``, ``onnx-int8``, or ``auto``): the
    same engine ``taxoclip predict --runtime`` uses. ``model``, ``loaded``, ``tokenizer``
    and ``preprocess`` are then None (there is no torch model).
    """

    def __init__(
        self,
        model_str: str | None = BIOCLIP_MODEL_STR,
        pretrained_str: str | None = None,
        device: str | torch.device = "cpu",
        workers: int = 0,
        squash: bool | None = None,
        runtime: str = "torch",
    ) -> None:
        super().__init__()
        self.model_str = model_str or BIOCLIP_MODEL_STR
        self.pretrained_str = pretrained_str
        self.device = torch.device(device)
        self.workers = workers
        squash = squashes(self.model_str, tree_of_life=False) if squash is None else squash
        self.encoder = open_encoder(
            self.model_str,
            runtime,
            squash=squash,
            device=str(self.device),
            pretrained=pretrained_str,
        )
        self.loaded = getattr(self.encoder, "loaded", None)
        self.model = getattr(self.encoder, "model", None)
        self.tokenizer = self.loaded.tokenizer if self.loaded is not None else None
        self.preprocess = getattr(self.encoder, "transform", None)
        self.last_errors: dict[str, str] = {}

    @staticmethod
    def ensure_rgb_image(image: str | Image.Image) -> Image.Image:
        return (image if isinstance(image, Image.Image) else Image.open(image)).convert("RGB")

    @staticmethod
    def make_key(image: str | Image.Image, idx: int) -> str:
        return image_key(image, idx)

    def create_image_features(
        self, images: list[Image.Image], normalize: bool = True
    ) -> torch.Tensor:
        return torch.from_numpy(self.encoder.encode(images, normalize=normalize))

    def _predict(
        self,
        images: ImagesArg,
        score: ScoreFn,
        batch_size: int,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> list[dict]:
        """Rows of every image in input order, through the engine's loop and ``score``."""
        rows, self.last_errors = score_images(
            self.encoder, _as_list(images), score, batch_size, self.workers, progress, callback
        )
        return rows


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot classification among the user's labels (80-template text classifiers)."""

    def __init__(self, cls_ary: Sequence[str], **kwargs) -> None:
        classes = clean_labels(cls_ary)  # before the model loads: a bad list costs nothing
        super().__init__(**kwargs)
        self.classes = classes
        self.scorer = LabelScorer.for_model(self.encoder, self.classes)
        self.txt_embeddings = torch.from_numpy(self.scorer.matrix).to(self.device)

    def predict(
        self,
        images: ImagesArg,
        k: int | None = None,
        batch_size: int = 10,
        callback: Callable[[int, int], None] | None = None,
    ) -> list[dict]:
        return self._predict(
            images,
            lambda features, keys: self.scorer.rows(features, keys, k),
            batch_size,
            callback=callback,
        )


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """Custom labels whose probabilities are summed into bins (``cls_to_bin``)."""

    def __init__(self, cls_to_bin: dict[str, str], **kwargs) -> None:
        LabelScorer.check_bins(cls_to_bin)
        super().__init__(cls_ary=list(cls_to_bin.keys()), **kwargs)
        self.scorer = LabelScorer(
            self.scorer.matrix, self.classes, self.encoder.logit_scale, bins=cls_to_bin
        )
        self.cls_to_bin = {str(k).strip(): str(v) for k, v in cls_to_bin.items()}
        self.bins = self.scorer.names


class TreeOfLifeClassifier(BaseClassifier):
    """Species prediction against a tree-of-life index; higher ranks by summing species."""

    def __init__(self, index: str | os.PathLike | TextIndex | None = None, **kwargs) -> None:
        super().__init__(**{"squash": True, **kwargs})
        if isinstance(index, TextIndex):
            self.full_index = index
        elif index is not None:
            self.full_index = TextIndex.load(index, model=self.model_str)
        else:
            self.full_index = TextIndex.load(self._published_index_folder())
        self.full_index.check_dim(self.encoder.embed_dim, self.model_str)
        self.scorer = TreeScorer(self.full_index, self.encoder.logit_scale)

    def _published_index_folder(self) -> Path:
        return published_index_folder(self.model_str)

    @property
    def index(self) -> TextIndex:
        """The index as the current filter leaves it."""
        return self.scorer.index

    @property
    def txt_embeddings(self) -> torch.Tensor:
        return torch.from_numpy(self.index.embeddings)

    @property
    def txt_names(self) -> list[list]:
        return self.index.names

    # ----------------------------------------------------------------- pybioclip API

    def get_txt_embeddings(self) -> torch.Tensor:
        return self.txt_embeddings

    def get_current_txt_names(self) -> list[list]:
        return self.index.names

    def get_label_data(self) -> pd.DataFrame:
        """One row per taxon of the full index: the 7 ranks, binomial and common name."""
        rows = [
            dict(zip(SPECIES_COLUMNS, [*ranks, f"{ranks[5]} {ranks[6]}", common], strict=True))
            for ranks, common in self.full_index.names
        ]
        return pd.DataFrame(rows, columns=list(SPECIES_COLUMNS))

    def create_taxa_filter(self, rank: Rank, user_values: Sequence[str]) -> pd.Series:
        column = Rank.parse(rank).get_label()
        return pd.Series(self.full_index.keep(rank, list(user_values)), name=column)

    def create_taxa_filter_from_csv(self, csv_path: str | os.PathLike) -> pd.Series:
        text = Path(csv_path).read_text(encoding="utf-8-sig")
        return self.create_taxa_filter(*read_subset(text, str(csv_path)))

    def apply_filter(self, keep_labels_ary: Sequence[bool]) -> None:
        if len(keep_labels_ary) != len(self.full_index):
            raise UsageError(
                "Invalid keep_embeddings values. This parameter should be a list containing "
                f"{len(self.full_index)} items."
            )
        self.scorer = TreeScorer(
            self.full_index.subset(list(keep_labels_ary)), self.encoder.logit_scale
        )

    # ----------------------------------------------------------------- prediction

    def predict(
        self,
        images: ImagesArg,
        rank: Rank | str,
        min_prob: float = 1e-9,
        k: int = 5,
        batch_size: int = 10,
        callback: Callable[[int, int], None] | None = None,
        progress: bool = False,
    ) -> list[dict]:
        """Top-``k`` predictions at ``rank`` for each image, as pybioclip's rows."""
        rank = Rank.parse(rank)
        return self._predict(
            images,
            lambda features, keys: self.scorer.rows(features, keys, rank, k, min_prob),
            batch_size,
            progress,
            callback,
        )

    def predict_deepest(
        self,
        images: ImagesArg,
        threshold: float,
        batch_size: int = 10,
        min_prob: float = 1e-9,
        progress: bool = False,
    ) -> list[dict]:
        """Per image, the deepest rank whose best taxon's summed probability ≥ threshold."""
        check_threshold(threshold)
        return self._predict(
            images,
            lambda features, keys: self.scorer.deepest_rows(features, keys, threshold, min_prob),
            batch_size,
            progress,
        )

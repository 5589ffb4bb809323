"""pybioclip's Python API — same class names, signatures and output rows — on taxoclip.

What differs under the hood: any model spec (run dirs, model folders, open_clip names,
``hf-hub:``), any text index (``index=``), images decoded in DataLoader workers, the
rank roll-up as one ``index_add`` over precomputed species→taxon maps, and unreadable
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
from taxoclip.models import load_model
from taxoclip.taxonomy import RANK_NAMES, Rank

from .images import ImageInput, SquashPreprocess, image_key, iter_encoded
from .index import TextIndex, class_text_matrix, rollup_topk
from .labels import cached_label_matrix
from .rows import (  # the row vocabulary, torch-free (shared with the ONNX runtime)
    ERROR_KEY,
    PRED_CLASSIFICATION_KEY,
    PRED_FILENAME_KEY,
    PRED_SCORE_KEY,
    SPECIES_COLUMNS,
    deepest_choices,
    deepest_row,
    rolled_up_names,
    tol_row,
)
from .scoring import TOL_MODELS, published_index_folder

BIOCLIP_MODEL_STR = "hf-hub:imageomics/bioclip-2"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


ImagesArg = Sequence[ImageInput] | ImageInput


def _as_list(images: ImagesArg) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


class BaseClassifier(torch.nn.Module):
    """Loads the model; encodes images in batches; images that fail are reported."""

    def __init__(
        self,
        model_str: str | None = BIOCLIP_MODEL_STR,
        pretrained_str: str | None = None,
        device: str | torch.device = "cpu",
        workers: int = 0,
        squash: bool | None = None,
    ) -> None:
        super().__init__()
        self.model_str = model_str or BIOCLIP_MODEL_STR
        self.pretrained_str = pretrained_str
        self.device = torch.device(device)
        self.workers = workers
        self.loaded = load_model(self.model_str, pretrained=pretrained_str, device=str(self.device))
        self.model = self.loaded.model.eval()
        self.tokenizer = self.loaded.tokenizer
        squash = self.model_str in TOL_MODELS if squash is None else squash
        if squash:
            size = self.loaded.image_size
            size = size if isinstance(size, int) else size[0]
            cfg = self.loaded.preprocess_cfg
            self.preprocess = SquashPreprocess(
                size, cfg.get("mean") or OPENAI_MEAN, cfg.get("std") or OPENAI_STD
            )
        else:
            self.preprocess = self.loaded.preprocess_val
        self.last_errors: dict[str, str] = {}

    @staticmethod
    def ensure_rgb_image(image: str | Image.Image) -> Image.Image:
        return (image if isinstance(image, Image.Image) else Image.open(image)).convert("RGB")

    @staticmethod
    def make_key(image: str | Image.Image, idx: int) -> str:
        return image_key(image, idx)

    @torch.inference_mode()
    def create_image_features(
        self, images: list[Image.Image], normalize: bool = True
    ) -> torch.Tensor:
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        features = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features

    def _scored_batches(self, images: list[ImageInput], txt: torch.Tensor | TextIndex,
                        batch_size: int, progress: bool = False):  # fmt: skip
        """Per batch: positions and softmax probabilities over ``txt``'s columns."""
        scale = self.model.logit_scale.exp().float()
        text_index = txt if isinstance(txt, TextIndex) else TextIndex(txt, [])
        self.last_errors = {}
        keys = [image_key(image, i) for i, image in enumerate(images)]
        for indices, features, errors in iter_encoded(
            self.model, self.preprocess, images, batch_size, self.workers, self.device,
            normalize=True, progress=progress,
        ):  # fmt: skip
            for position, reason in errors.items():
                self.last_errors[keys[position]] = reason
            if features is not None:
                yield indices, torch.softmax(text_index.logits(features, scale), dim=1), errors
            else:
                yield [], None, errors

    @staticmethod
    def _error_row(key: str, reason: str) -> dict:
        return {PRED_FILENAME_KEY: key, ERROR_KEY: reason}


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot classification among the user's labels (80-template text classifiers)."""

    def __init__(self, cls_ary: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.classes = [str(c).strip() for c in cls_ary]
        if not self.classes or any(not c for c in self.classes):
            raise UsageError("custom labels must be non-empty strings")
        self.txt_embeddings = torch.from_numpy(cached_label_matrix(
            self.loaded.weights, "torch", self.classes,
            lambda labels: class_text_matrix(self.model, self.tokenizer, labels, self.device),
        )).to(self.device)  # fmt: skip

    def _group(self, probs: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        return probs, self.classes

    @torch.inference_mode()
    def predict(self, images: ImagesArg, k: int | None = None, batch_size: int = 10,
                callback: Callable[[int, int], None] | None = None) -> list[dict]:  # fmt: skip
        images = _as_list(images)
        rows: dict[int, list[dict]] = {}
        done = 0
        for indices, probs, errors in self._scored_batches(images, self.txt_embeddings, batch_size):
            for index, reason in errors.items():
                rows[index] = [self._error_row(image_key(images[index], index), reason)]
            if probs is not None:
                grouped, names = self._group(probs)
                top = min(k or len(names), len(names))
                values, positions = grouped.topk(top, dim=1)
                for row, index in enumerate(indices):
                    key = image_key(images[index], index)
                    rows[index] = [
                        {
                            PRED_FILENAME_KEY: key,
                            PRED_CLASSIFICATION_KEY: names[p],
                            PRED_SCORE_KEY: float(v),
                        }  # fmt: skip
                        for v, p in zip(values[row].tolist(), positions[row].tolist(), strict=True)
                    ]
            done += len(indices) + len(errors)
            if callback:
                callback(done, len(images))
        return [r for index in sorted(rows) for r in rows[index]]


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """Custom labels whose probabilities are summed into bins (``cls_to_bin``)."""

    def __init__(self, cls_to_bin: dict[str, str], **kwargs) -> None:
        if any(pd.isna(v) or not str(v).strip() for v in cls_to_bin.values()):
            raise UsageError("Empty, null, or nan are not allowed for bin values.")
        super().__init__(cls_ary=list(cls_to_bin.keys()), **kwargs)
        self.cls_to_bin = {str(k).strip(): str(v) for k, v in cls_to_bin.items()}
        self.bins = list(dict.fromkeys(self.cls_to_bin[c] for c in self.classes))
        position = {name: i for i, name in enumerate(self.bins)}
        self._bin_of = torch.tensor([position[self.cls_to_bin[c]] for c in self.classes])

    def _group(self, probs: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        summed = torch.zeros(probs.shape[0], len(self.bins), dtype=probs.dtype, device=probs.device)
        summed.index_add_(1, self._bin_of.to(probs.device), probs)
        return summed, self.bins


class TreeOfLifeClassifier(BaseClassifier):
    """Species prediction against a tree-of-life index; higher ranks by summing species."""

    def __init__(self, index: str | os.PathLike | TextIndex | None = None, **kwargs) -> None:
        super().__init__(**{"squash": True, **kwargs})
        if isinstance(index, TextIndex):
            self.index = index
        elif index is not None:
            self.index = TextIndex.load(index, model=self.model_str)
        else:
            self.index = TextIndex.load(self._published_index_folder())
        self.index.check_dim(self.loaded.embed_dim, self.model_str)
        self.full_index = self.index
        self.txt_embeddings = self.index.embeddings
        self.txt_names = self.index.names

    def _published_index_folder(self) -> Path:
        return published_index_folder(self.model_str)

    # ----------------------------------------------------------------- pybioclip API

    def get_txt_embeddings(self) -> torch.Tensor:
        return self.index.embeddings

    def get_current_txt_names(self) -> list[list]:
        return self.index.names

    def get_label_data(self) -> pd.DataFrame:
        """One row per taxon of the full index: the 7 ranks, binomial and common name."""
        rows = []
        for ranks, common in self.full_index.names:
            rows.append(
                dict(zip(SPECIES_COLUMNS, [*ranks, f"{ranks[5]} {ranks[6]}", common], strict=True))
            )
        return pd.DataFrame(rows, columns=list(SPECIES_COLUMNS))

    def create_taxa_filter(self, rank: Rank, user_values: Sequence[str]) -> pd.Series:
        column = Rank.parse(rank).get_label()
        labels = self.get_label_data()
        wanted = pd.Series(list(user_values), name=column)
        unknown = wanted[~wanted.isin(labels[column])]
        if not unknown.empty:
            raise UsageError(
                f"Unknown {column} received: {', '.join(map(str, unknown.values))}. "
                f"Only known {column} may be used."
            )
        return labels[column].isin(wanted)

    def create_taxa_filter_from_csv(self, csv_path: str | os.PathLike) -> pd.Series:
        frame = pd.read_csv(csv_path)
        column = str(frame.columns[0]).lower()
        if column not in RANK_NAMES:
            raise UsageError(
                f"The first column of {csv_path} is named '{column}' but must be one of "
                f"{','.join(RANK_NAMES)}."
            )
        return self.create_taxa_filter(
            Rank.parse(column), frame[frame.columns[0]].astype(str).values
        )

    def apply_filter(self, keep_labels_ary: Sequence[bool]) -> None:
        if len(keep_labels_ary) != len(self.full_index):
            raise UsageError(
                "Invalid keep_embeddings values. This parameter should be a list containing "
                f"{len(self.full_index)} items."
            )
        self.index = self.full_index.subset(
            torch.as_tensor(list(keep_labels_ary), dtype=torch.bool)
        )

    # ----------------------------------------------------------------- prediction

    def _row(self, key: str, rank: Rank, names: Sequence[str], common: str, score: float) -> dict:
        return tol_row(key, rank, names, common, score)

    def _top_at_rank(self, probs: torch.Tensor, rank: Rank, k: int, min_prob: float):
        """(values, labels) per image: top-k species, or top-k taxa at ``rank`` by summed
        probability (species under ``min_prob`` left out, as pybioclip does; they are
        zeroed in ``probs``, which only lowers what was already below ``min_prob``)."""
        if rank is Rank.SPECIES:
            values, positions = probs.topk(min(k, probs.shape[1]), dim=1)
            names = self.index.names
            return values, [[(names[p][0], names[p][1]) for p in row] for row in positions.tolist()]
        group, labels = self.index.rollup(rank)
        values, positions = rollup_topk(probs, group, len(labels), k, min_prob)
        return values, rolled_up_names(values, positions, labels)

    @torch.inference_mode()
    def predict(self, images: ImagesArg, rank: Rank | str, min_prob: float = 1e-9, k: int = 5,
                batch_size: int = 10, callback: Callable[[int, int], None] | None = None,
                progress: bool = False) -> list[dict]:  # fmt: skip
        """Top-``k`` predictions at ``rank`` for each image, as pybioclip's rows."""
        images = _as_list(images)
        rank = Rank.parse(rank)
        rows: dict[int, list[dict]] = {}
        done = 0
        for indices, probs, errors in self._scored_batches(
            images, self.index, batch_size, progress
        ):
            for index, reason in errors.items():
                rows[index] = [self._error_row(image_key(images[index], index), reason)]
            if probs is not None:
                values, named = self._top_at_rank(probs, rank, k, min_prob)
                for row, index in enumerate(indices):
                    key = image_key(images[index], index)
                    rows[index] = [
                        self._row(key, rank, names, common, float(values[row, j]))
                        for j, (names, common) in enumerate(named[row])
                    ]
            done += len(indices) + len(errors)
            if callback:
                callback(done, len(images))
        return [r for index in sorted(rows) for r in rows[index]]

    @torch.inference_mode()
    def predict_deepest(self, images: ImagesArg, threshold: float, batch_size: int = 10,
                        min_prob: float = 1e-9, progress: bool = False) -> list[dict]:  # fmt: skip
        """Per image, the deepest rank whose best taxon's summed probability ≥ threshold."""
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"--deepest-rank threshold must be in (0, 1] (got {threshold})")
        images = _as_list(images)
        rows: dict[int, dict] = {}
        for indices, probs, errors in self._scored_batches(
            images, self.index, batch_size, progress
        ):
            for index, reason in errors.items():
                rows[index] = self._error_row(image_key(images[index], index), reason)
            if probs is None:
                continue
            best = deepest_choices(
                lambda rank, probs=probs: self._top_at_rank(probs, rank, 1, min_prob),
                len(indices), threshold,
            )  # fmt: skip
            for row, index in enumerate(indices):
                key = image_key(images[index], index)
                rows[index] = deepest_row(key, *(best[row] or (None, (), "", 0.0)),
                                          row_of=self._row)  # fmt: skip
        return [rows[index] for index in sorted(rows)]

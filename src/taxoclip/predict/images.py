"""The one batched torch feature-extraction path (docs/architecture.md).

Predict, embed, evaluate, analyze and curation's model filter all encode images with
torch through :func:`encode_images`: decoding in DataLoader workers, batched ``inference_mode``
forward passes, and bad images (unreadable, truncated, empty, not an image) reported
with their reason while every other image is encoded. Nothing here is ever fatal for
one image. Collecting, decoding and the failure reasons are torch-free, in
:mod:`.imageio`, shared with the ONNX runtime (``--runtime onnx``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from taxoclip.errors import UsageError

# The torch-free half (collecting, decoding, reasons) is shared with the ONNX runtime;
# re-exported here, where every caller has always found it.
from .imageio import (  # noqa: F401
    IMAGE_EXTENSIONS,
    ImageInput,
    auto_workers,
    collect_images,
    describe_error,
    image_key,
    load_rgb,
)

log = logging.getLogger(__name__)


class SquashPreprocess:
    """Squash to size×size and normalise — pybioclip's tree-of-life preprocessing
    (``ToTensor`` → ``Resize((S, S), antialias=True)`` → ``Normalize``), split in two so
    workers only decode (uint8, ~50× less to pass between processes than the float
    224-px tensor) and the resize runs batched in the main process: the same kernel on
    the same values, so the same numbers as per-image torchvision."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @staticmethod
    def decode(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def batch(self, decoded: Sequence[torch.Tensor]) -> torch.Tensor:
        out = torch.empty(len(decoded), 3, self.size, self.size)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, tensor in enumerate(decoded):
            by_shape.setdefault(tuple(tensor.shape), []).append(position)
        for positions in by_shape.values():
            pixels = torch.stack([decoded[p] for p in positions]).float().div_(255.0)
            if pixels.shape[-2:] != (self.size, self.size):
                pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear",
                                       align_corners=False, antialias=True)  # fmt: skip
            out[positions] = pixels
        return out.sub_(self.mean).div_(self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.batch([self.decode(image.convert("RGB"))])[0]


class _Images(Dataset):
    def __init__(self, images: Sequence[ImageInput], preprocess: Callable) -> None:
        self.images, self.preprocess = images, preprocess
        self.prepare = preprocess.decode if isinstance(preprocess, SquashPreprocess) else preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            return index, self.prepare(load_rgb(self.images[index])), None
        except Exception as exc:  # any failure is this image's, reported, never fatal
            return index, None, describe_error(exc)


def _collate(items):
    ok = [(i, t) for i, t, _ in items if t is not None]
    errors = {i: e for i, _, e in items if e is not None}
    return [i for i, _ in ok], [t for _, t in ok], errors


@dataclass
class EncodedImages:
    """Features for the images that could be read, in input order, and the failures."""

    keys: list[str]
    features: torch.Tensor  # (n_ok, D) on CPU, float32
    ok_indices: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    n_inputs: int = 0

    @property
    def n_failed(self) -> int:
        return len(self.errors)


@torch.inference_mode()
def iter_encoded(
    model: torch.nn.Module,
    preprocess: Callable,
    images: Sequence[ImageInput],
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    normalize: bool = True,
    progress: bool = False,
) -> Iterator[tuple[list[int], torch.Tensor | None, dict[int, str]]]:
    """Per batch: input positions encoded, their features on ``device``, and failures.

    Callers reduce each batch at once (top-k against a text index, a write to disk), so
    nothing of size images × classes accumulates.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    keys = [image_key(image, i) for i, image in enumerate(images)]
    in_memory = any(isinstance(image, Image.Image) for image in images)
    loader = DataLoader(
        _Images(images, preprocess),
        batch_size=batch_size,
        num_workers=0 if in_memory else workers,
        collate_fn=_collate,
    )
    with tqdm(total=len(images), unit="img", desc="encode", disable=not progress) as bar:
        for indices, prepared, batch_errors in loader:
            for index, reason in batch_errors.items():
                log.warning("skipping %s: %s", keys[index], reason)
            features = None
            if prepared:
                if isinstance(preprocess, SquashPreprocess):
                    tensor = preprocess.batch(prepared)
                else:
                    tensor = torch.stack(prepared)
                features = model.encode_image(tensor.to(device)).float()
                if normalize:
                    features = F.normalize(features, dim=-1)
            yield indices, features, batch_errors
            bar.update(len(indices) + len(batch_errors))


def encode_images(
    model: torch.nn.Module,
    preprocess: Callable,
    images: Sequence[ImageInput],
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device = "cpu",
    normalize: bool = True,
    progress: bool = False,
) -> EncodedImages:
    """Encode ``images`` with ``model.encode_image``; unreadable ones land in ``errors``."""
    chunks, order, errors = [], [], {}
    for indices, features, batch_errors in iter_encoded(
        model, preprocess, images, batch_size, workers, device, normalize, progress
    ):
        errors.update(batch_errors)
        if features is not None:
            chunks.append(features.cpu())
            order.extend(indices)
    keys = [image_key(image, i) for i, image in enumerate(images)]
    features = torch.cat(chunks) if chunks else torch.empty(0, 0)
    return EncodedImages(keys, features, order, errors, len(images))


def as_numpy(features: torch.Tensor) -> np.ndarray:
    return features.detach().cpu().numpy().astype(np.float32, copy=False)

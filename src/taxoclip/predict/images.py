"""Image inputs and the one batched feature-extraction path (docs/architecture.md).

Predict, embed, evaluate, analyze and curation's model filter all encode images through
:func:`encode_images`: decoding in DataLoader workers, batched ``inference_mode``
forward passes, and bad images (unreadable, truncated, empty, not an image) reported
with their reason while every other image is encoded. Nothing here is ever fatal for
one image.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from taxoclip.errors import UsageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"}
)

ImageInput = str | os.PathLike | Image.Image


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files, directories (recursive, image extensions) and glob patterns, in order.

    A path that does not exist is kept as given (it becomes a per-image error later, so
    it is reported rather than silently dropped); a glob or directory that matches no
    image is a usage error.
    """
    found: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise UsageError(
                    f"directory {text} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            found.extend(files)
        elif any(ch in text for ch in "*?[") and not path.exists():
            files = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not files:
                raise UsageError(f"pattern {text} matches no files")
            found.extend(files)
        else:
            found.append(text)
    if not found:
        raise UsageError("no input images given")
    return found


def image_key(image: ImageInput, index: int) -> str:
    """pybioclip's key: the path as given, or the position for in-memory images."""
    return str(index) if isinstance(image, Image.Image) else os.fspath(image)


def load_rgb(image: ImageInput) -> Image.Image:
    """Open and fully decode an image as RGB; raises with a reason a person can act on."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.exists():
        raise FileNotFoundError("no such file")
    if path.is_dir():
        raise IsADirectoryError("is a directory")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    with Image.open(path) as opened:
        opened.load()  # decode now: truncated files fail here, not later
        return opened.convert("RGB")


def describe_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip() or name
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a readable image"
    if isinstance(exc, OSError) and "truncated" in text.lower():
        return f"truncated image ({text})"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, ValueError)):
        return text
    return f"{name}: {text}"


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


def auto_workers(value: int | None) -> int:
    """Decoding processes when ``--workers`` is not given: none on ≤ 2 cores (measured:
    they only compete with the model for the CPU there), else up to 4."""
    if value is not None:
        return value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return 0 if cores <= 2 else min(4, cores // 2)

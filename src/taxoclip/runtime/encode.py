"""Images to features: the encoder interface, opening one, and the one batched encoding loop.

Every stage that encodes images goes through :func:`iter_features` — predict, embed,
MegaDetector crops, eval, analyze, curation's model filter and training validation; serve
calls the same encoders on the images its requests bring. The loop decodes and
preprocesses in threads (:func:`~.images.iter_decoded`), runs one forward pass per batch,
and reports an image that cannot be read with its reason, never failing the others. It
imports no torch: which runtime runs is the encoder's business (:func:`open_encoder`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from taxoclip.errors import UsageError

from .images import ImageInput, image_key, iter_decoded
from .rows import error_row

log = logging.getLogger(__name__)

#: ``--runtime``: auto (ONNX Runtime for a folder made by ``taxoclip export onnx``, torch
#: otherwise), torch, onnx (fp32) or onnx-int8.
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


@runtime_checkable
class TextEncoder(Protocol):
    """A text tower: ``tokenize`` texts to int64 ids (N, context), ``encode_tokens`` ids
    (trimmed to the longest caption: the towers are causal) to float32 (N, D) features."""

    runtime: str

    def tokenize(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_tokens(self, tokens: np.ndarray, normalize: bool = True) -> np.ndarray: ...


@runtime_checkable
class ImageEncoder(Protocol):
    """An image tower, whatever runs it (torch fp32, ONNX fp32, ONNX int8).

    ``preprocess`` turns one decoded image into the float32 (3, S, S) array the tower reads
    (it runs in the decoding threads); ``encode_pixels`` encodes a stacked batch to float32
    (B, D) features, L2-normalised when ``normalize``. ``logit_scale`` is ``exp`` of the
    model's learnt temperature; ``weights`` names the weights (keys cached label embeddings);
    ``text_encoder()`` opens the same model's text tower.
    """

    runtime: str
    embed_dim: int
    image_size: int
    squash: bool
    logit_scale: float
    weights: str | os.PathLike | None

    def preprocess(self, image: Image.Image) -> np.ndarray: ...

    def encode_pixels(self, pixels: np.ndarray, normalize: bool = True) -> np.ndarray: ...

    def encode(self, images: Sequence[Image.Image], normalize: bool = True) -> np.ndarray: ...

    def text_encoder(self) -> TextEncoder: ...


# --------------------------------------------------------------------------- opening one


def choose_runtime(runtime: str, model: str | os.PathLike, device: str = "cpu") -> str:
    """``torch``, ``onnx`` or ``onnx-int8`` for ``--runtime`` on ``model``: auto picks ONNX
    for an exported folder (unless ``--device cuda``: ONNX runs on the CPU here), torch
    for anything else. Decided before torch is imported, so the ONNX path never is."""
    from .onnx import find_exported

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {runtime})")
    cuda = str(device).startswith("cuda")
    if runtime == "auto":
        return "onnx" if find_exported(model) is not None and not cuda else "torch"
    if runtime != "torch" and cuda:
        raise UsageError(
            f"--runtime {runtime} runs on the CPU; use --runtime torch for --device {device}"
        )
    return runtime


def squashes(model: str | os.PathLike, tree_of_life: bool) -> bool:
    """pybioclip's preprocessing choice: tree-of-life prediction squashes each image to
    S×S (as the published indexes were made); custom labels and embeddings squash for the
    BioCLIP models and use open_clip's centre crop for any other model."""
    from .index import TOL_MODELS

    return tree_of_life or os.fspath(model) in TOL_MODELS


def open_encoder(
    model: str | os.PathLike,
    runtime: str = "auto",
    *,
    squash: bool = False,
    device: str = "cpu",
    pretrained: str | None = None,
) -> ImageEncoder:
    """The image encoder of ``model`` under ``runtime`` (see :func:`choose_runtime`)."""
    chosen = choose_runtime(runtime, model, device)
    if chosen == "torch":
        from taxoclip.models import resolve_device

        from .torch_encoder import TorchImageEncoder

        return TorchImageEncoder.open(
            model, squash=squash, device=resolve_device(device), pretrained=pretrained
        )
    if pretrained:
        raise UsageError(
            f"--pretrained does not apply to --runtime {chosen} (the exported folder holds "
            "its weights)"
        )
    from .onnx import OnnxImageEncoder

    return OnnxImageEncoder(model, int8=chosen == "onnx-int8", squash=squash)


def open_text_encoder(
    model: str | os.PathLike,
    runtime: str = "auto",
    *,
    device: str = "cpu",
    pretrained: str | None = None,
) -> TextEncoder:
    """The text tower of ``model`` under ``runtime`` (an exported folder's ONNX one, or
    torch's: see :func:`taxoclip.runtime.onnx.text_encoder_of`)."""
    chosen = choose_runtime(runtime, model, device)
    if chosen == "torch":
        return open_encoder(model, "torch", device=device, pretrained=pretrained).text_encoder()
    from .onnx import ExportedModel, text_encoder_of

    return text_encoder_of(ExportedModel.open(model), int8=chosen == "onnx-int8")


# --------------------------------------------------------------------------- the loop


def iter_features(
    encoder: ImageEncoder,
    images: Sequence[ImageInput],
    batch_size: int = 32,
    workers: int = 0,
    normalize: bool = True,
    progress: bool = False,
) -> Iterator[tuple[list[int], np.ndarray | None, dict[int, str]]]:
    """Per batch: input positions encoded, their float32 features (None when the whole
    batch failed), and the failures (position → reason). Callers reduce each batch at once
    (scores, a write), so nothing of size images × classes accumulates."""
    from tqdm import tqdm  # here: its import is a tenth of the ONNX path's start-up

    keys = [image_key(image, i) for i, image in enumerate(images)]
    with tqdm(total=len(images), unit="img", desc="encode", disable=not progress) as bar:
        for indices, pixels, errors in iter_decoded(
            images, encoder.preprocess, batch_size, workers
        ):
            for position, reason in errors.items():
                log.warning("skipping %s: %s", keys[position], reason)
            features = encoder.encode_pixels(np.stack(pixels), normalize) if pixels else None
            yield indices, features, errors
            bar.update(len(indices) + len(errors))


@dataclass
class Encoded:
    """Features of the images that could be read (rows follow ``ok``) and the failures."""

    keys: list[str]  # every input's key (pybioclip's: the path as given, or the position)
    features: np.ndarray  # (len(ok), D) float32
    ok: list[int]  # input positions of the rows of ``features``
    errors: dict[int, str] = field(default_factory=dict)


def encode_images(
    encoder: ImageEncoder,
    images: Sequence[ImageInput],
    batch_size: int = 32,
    workers: int = 0,
    normalize: bool = True,
    progress: bool = False,
) -> Encoded:
    """Every image through :func:`iter_features`, the features gathered."""
    chunks, ok, errors = [], [], {}
    for indices, features, failed in iter_features(
        encoder, images, batch_size, workers, normalize, progress
    ):
        errors.update(failed)
        if features is not None:
            chunks.append(features)
            ok.extend(indices)
    dim = chunks[0].shape[1] if chunks else int(encoder.embed_dim or 0)
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    keys = [image_key(image, i) for i, image in enumerate(images)]
    return Encoded(keys, features, ok, errors)


#: ``score(features, keys) -> rows per image``: what a batch of features becomes.
ScoreFn = Callable[[np.ndarray, list[str]], list[list[dict]]]


def score_images(
    encoder: ImageEncoder,
    images: Sequence[ImageInput],
    score: ScoreFn,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Rows for every image in input order — ``score``'s rows for each readable image, one
    error row for each that is not — and the failures (key → reason)."""
    keys = [image_key(image, i) for i, image in enumerate(images)]
    groups: list[list[dict]] = [[] for _ in keys]
    failures: dict[str, str] = {}
    done = 0
    for indices, features, errors in iter_features(
        encoder, images, batch_size, workers, True, progress
    ):
        for position, reason in errors.items():
            groups[position] = [error_row(keys[position], reason)]
            failures[keys[position]] = reason
        if features is not None:
            scored = score(features, [keys[i] for i in indices])
            for position, rows in zip(indices, scored, strict=True):
                groups[position] = rows
        done += len(indices) + len(errors)
        if callback:
            callback(done, len(keys))
    return [row for group in groups for row in group], failures

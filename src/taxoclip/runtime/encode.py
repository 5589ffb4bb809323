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

from taxoclip.errors import InputError, UsageError

from .images import ImageInput, image_key, iter_decoded
from .rows import error_row

log = logging.getLogger(__name__)

#: ``--runtime``: auto (ONNX Runtime: an exported folder as it is, any other model through
#: the export cache, :mod:`.cache`; torch where that is impossible or on CUDA), torch,
#: onnx (fp32) or onnx-int8.
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
    """``torch``, ``onnx`` or ``onnx-int8`` for ``--runtime`` on ``model``, exporting
    nothing: auto picks ONNX for an exported folder (unless ``--device cuda``: ONNX runs on
    the CPU here), torch for anything else. ``eval`` and ``analyze``, which load torch for
    the untrained twin anyway, decide with this; :func:`open_encoder` goes further (the
    export cache). Decided before torch is imported, so the ONNX path never is."""
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


@dataclass
class Resolved:
    """What runs ``model``: the runtime, and the exported folder ONNX opens (None: torch).
    ``weights`` names the source weights of a cached export (it keys cached labels)."""

    runtime: str
    folder: str | os.PathLike | None = None
    weights: os.PathLike | None = None


def resolve_runtime(
    runtime: str, model: str | os.PathLike, device: str = "cpu", pretrained: str | None = None
) -> Resolved:
    """:func:`choose_runtime`, then for a model that is not an exported folder the export
    cache (:mod:`.cache`): ``auto`` uses it where it can — made on first use — and falls
    back to torch with one line saying why where it cannot; an explicit ``onnx`` or
    ``onnx-int8`` uses it or fails with that reason. ``auto`` on an export runs fp32
    unless its recorded int8 agreement clears the bars (:func:`.cache.auto_runtime`)."""
    from . import cache
    from .onnx import ExportedModel, find_exported

    chosen = choose_runtime(runtime, model, device)
    if find_exported(model) is not None:
        if chosen != "torch" and pretrained:
            raise UsageError(
                f"--pretrained does not apply to --runtime {chosen} (the exported folder "
                "holds its weights)"
            )
        if chosen == "onnx" and runtime == "auto":
            chosen = cache.auto_runtime(ExportedModel.open(model).record)
        return Resolved(chosen, model if chosen != "torch" else None)
    if chosen == "torch" and (runtime != "auto" or str(device).startswith("cuda")):
        return Resolved("torch")
    # auto: fp32 files (and int8 ones only once the cache makes them); else as asked
    int8 = cache.CACHE_INT8 if runtime == "auto" else chosen == "onnx-int8"
    try:
        found = cache.cached_export(model, pretrained, int8=int8)
    except cache.Unavailable as exc:
        if runtime != "auto":
            raise InputError(f"model {os.fspath(model)!r}: no ONNX export ({exc})") from None
        log.warning("running %s on torch, not ONNX Runtime: %s", os.fspath(model), exc)
        return Resolved("torch")
    if runtime == "auto":
        chosen = cache.auto_runtime(found.record)
    return Resolved(chosen, found.folder, found.weights)


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
    """The image encoder of ``model`` under ``runtime`` (see :func:`resolve_runtime`)."""
    resolved = resolve_runtime(runtime, model, device, pretrained)
    if resolved.runtime == "torch":
        from taxoclip.models import resolve_device

        from .torch_encoder import TorchImageEncoder

        return TorchImageEncoder.open(
            model, squash=squash, device=resolve_device(device), pretrained=pretrained
        )
    from .onnx import OnnxImageEncoder

    encoder = OnnxImageEncoder(resolved.folder, int8=resolved.runtime == "onnx-int8", squash=squash)
    if resolved.weights is not None:  # a cached export keeps no copy of the weights
        encoder.weights = resolved.weights
    return encoder


def open_text_encoder(
    model: str | os.PathLike,
    runtime: str = "auto",
    *,
    device: str = "cpu",
    pretrained: str | None = None,
) -> TextEncoder:
    """The text tower of ``model`` under ``runtime`` (an exported folder's ONNX one, or
    torch's: see :func:`taxoclip.runtime.onnx.text_encoder_of`)."""
    resolved = resolve_runtime(runtime, model, device, pretrained)
    if resolved.runtime == "torch":
        return open_encoder(model, "torch", device=device, pretrained=pretrained).text_encoder()
    from .onnx import ExportedModel, text_encoder_of

    # int8 text only when asked for: auto's int8 bars are the image tower's, and an index
    # must equal torch's (fp32 agrees within 1e-5 cosine, int8 does not)
    int8 = resolved.runtime == "onnx-int8" and runtime == "onnx-int8"
    return text_encoder_of(ExportedModel.open(resolved.folder), int8=int8)


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

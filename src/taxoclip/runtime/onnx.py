"""ONNX Runtime encoders and open_clip's preprocessing in numpy + PIL — no torch.

An exported model folder (``taxoclip export onnx``, docs/reference.md#onnx-model-folders)
is an ordinary open_clip model folder plus:

- ``image_encoder.onnx`` (and ``image_encoder.int8.onnx`` with ``--int8``): input
  ``pixels`` float32 (B, 3, S, S), output ``features`` float32 (B, D), *not* normalised
  (``encode_image`` of the torch model, so ``embed`` writes the same raw features);
- ``text_encoder.onnx`` (+ ``.int8``): input ``tokens`` int64 (B, L), output ``features``
  (B, D), with ``tokenizer.json`` (the BPE vocabulary and merges) so custom labels and
  ``taxoclip index`` run without torch as well;
- ``export.json``: how they were made (versions, opset, quantisation, preprocessing,
  ``logit_scale``) and their measured agreement with the torch model.

Preprocessing reproduces the torch paths exactly (to float rounding):

- ``crop`` — open_clip's validation transform: resize the shortest side to S (PIL,
  bicubic or bilinear as the config says), centre crop S×S, scale to [0, 1], normalise;
- ``squash`` — pybioclip's tree-of-life transform: ``ToTensor`` → ``Resize((S, S),
  antialias=True)`` → normalise. torch's antialiased bilinear resize is PIL's algorithm
  on float values, so it is done here per channel on PIL ``F`` (float32) images.

Importing this module imports numpy and PIL only; ``onnxruntime`` is imported when an
encoder is opened, with a clear error naming ``pip install 'taxoclip[onnx]'`` if absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from taxoclip.errors import InputError, UsageError

EXPORT_FILE = "export.json"
IMAGE_ONNX = "image_encoder.onnx"
IMAGE_ONNX_INT8 = "image_encoder.int8.onnx"
TEXT_ONNX = "text_encoder.onnx"
TEXT_ONNX_INT8 = "text_encoder.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "open_clip_config.json"  # the same names as taxoclip.models (no import: torch)
SAFETENSORS_FILE = "open_clip_model.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
INSTALL_HINT = "pip install 'taxoclip[onnx]'"


@runtime_checkable
class ImageEncoder(Protocol):
    """What predict, embed, eval and serve need from an image tower, whatever runs it.

    ``encode`` takes decoded RGB images and returns float32 (B, D) features (L2-normalised
    when ``normalize``); ``preprocess`` turns one image into the float32 (3, S, S) array
    the tower reads. ``logit_scale`` is ``exp`` of the model's learnt temperature.
    """

    embed_dim: int
    image_size: int
    squash: bool
    logit_scale: float
    runtime: str

    def preprocess(self, image: Image.Image) -> np.ndarray: ...

    def encode(self, images: Sequence[Image.Image], normalize: bool = True) -> np.ndarray: ...


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """open_clip's validation transform (``crop``) or pybioclip's squash, in numpy + PIL."""

    size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    squash: bool = False
    interpolation: str = "bicubic"

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], squash: bool = False) -> Preprocess:
        """From an open_clip ``preprocess_cfg`` (``size``, ``mean``, ``std``, …)."""
        size = cfg.get("size", 224)
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise UsageError(f"non-square input size {size} is not supported by ONNX export")
            size = size[0]
        mode = cfg.get("resize_mode") or "shortest"
        if mode == "longest" and not squash:
            raise UsageError("resize_mode 'longest' is not supported by the ONNX runtime")
        interpolation = cfg.get("interpolation") or "bicubic"
        return cls(
            size=int(size),
            mean=tuple(float(v) for v in (cfg.get("mean") or OPENAI_MEAN)),
            std=tuple(float(v) for v in (cfg.get("std") or OPENAI_STD)),
            squash=squash or mode == "squash",
            interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        size = self.size
        if self.squash:
            if image.size == (size, size):
                pixels = np.asarray(image, dtype=np.float32) / 255.0
            else:
                # torch's Resize(antialias=True) on the float tensor == PIL's bilinear on
                # float ("F") images, one channel at a time.
                channels = np.asarray(image, dtype=np.float32) / 255.0
                pixels = np.stack(
                    [
                        np.asarray(
                            Image.fromarray(np.ascontiguousarray(channels[..., c]), mode="F")
                            .resize((size, size), Image.Resampling.BILINEAR)
                        )
                        for c in range(3)
                    ],
                    axis=-1,
                )  # fmt: skip
        else:
            width, height = image.size
            if (width, height) != (size, size):
                resample = (Image.Resampling.BILINEAR if self.interpolation == "bilinear"
                            else Image.Resampling.BICUBIC)  # fmt: skip
                if width <= height:  # torchvision's Resize(int): shortest side to size
                    new_w, new_h = size, int(size * height / width)
                else:
                    new_w, new_h = int(size * width / height), size
                if (new_w, new_h) != (width, height):
                    image = image.resize((new_w, new_h), resample)
                width, height = image.size
                top = int(round((height - size) / 2.0))
                left = int(round((width - size) / 2.0))
                image = image.crop((left, top, left + size, top + size))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), 3, self.size, self.size), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self(image)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "squash": self.squash, "interpolation": self.interpolation}  # fmt: skip


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows to unit length, as ``torch.nn.functional.normalize`` (eps 1e-12)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- sessions


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise UsageError(
            f"the ONNX runtime needs onnxruntime, which is not installed: {INSTALL_HINT} "
            "(or use --runtime torch)"
        ) from exc
    return onnxruntime


def open_session(path: str | os.PathLike, threads: int | None = None):
    """An ``InferenceSession`` on the CPU; a missing or unreadable file is an InputError."""
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX model {path}: no such file (export it with `taxoclip export onnx`)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX model {path}: cannot load ({first})") from exc


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path.parent}: missing {path.name}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} {path}: expected a JSON object")
    return data


@dataclass
class ExportedModel:
    """An exported model folder: its open_clip config, export record and ONNX files."""

    folder: Path
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    record: dict[str, Any]

    @classmethod
    def open(cls, spec: str | os.PathLike) -> ExportedModel:
        folder = find_exported(spec)
        if folder is None:
            raise InputError(
                f"model {os.fspath(spec)!r}: not an exported model folder (no {IMAGE_ONNX}); "
                "make one with `taxoclip export onnx --model M --out DIR` or use --runtime torch"
            )
        config = read_json(folder / CONFIG_FILE, "model folder")
        record = read_json(folder / EXPORT_FILE, "exported model")
        model_cfg = config.get("model_cfg") or {}
        if "embed_dim" not in model_cfg:
            raise InputError(f"model folder {folder}: {CONFIG_FILE} has no model_cfg.embed_dim")
        return cls(folder, model_cfg, dict(config.get("preprocess_cfg") or {}), record)

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def logit_scale(self) -> float:
        return float(self.record.get("logit_scale", 100.0))

    def image_file(self, int8: bool = False) -> Path:
        name = IMAGE_ONNX_INT8 if int8 else IMAGE_ONNX
        path = self.folder / name
        if not path.is_file():
            hint = " (export with --int8)" if int8 else ""
            raise InputError(f"exported model {self.folder}: missing {name}{hint}")
        return path

    def text_file(self, int8: bool = False) -> Path | None:
        path = self.folder / (TEXT_ONNX_INT8 if int8 else TEXT_ONNX)
        if not path.is_file() and int8:
            path = self.folder / TEXT_ONNX
        return path if path.is_file() and (self.folder / TOKENIZER_FILE).is_file() else None


def find_exported(spec: str | os.PathLike) -> Path | None:
    """The exported model folder ``spec`` names (a model folder or a run dir), else None."""
    text = os.fspath(spec)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:") :]
    path = Path(text).expanduser()
    for folder in (path, path / "model"):
        if (folder / IMAGE_ONNX).is_file() or (folder / EXPORT_FILE).is_file():
            return folder
    return None


def _check_io(session, path: Path, name: str, shape_tail: tuple, dim: int) -> None:
    """The ONNX file matches the model config: input shape tail and output width."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise InputError(f"ONNX model {path}: expected one input and one output")
    got = tuple(inputs[0].shape[1:])
    if len(got) != len(shape_tail) or any(
        isinstance(g, int) and e is not None and g != e
        for g, e in zip(got, shape_tail, strict=False)
    ):
        raise InputError(
            f"ONNX model {path}: {name} input has shape (B, {', '.join(map(str, got))}) but the "
            f"model config wants (B, {', '.join(str(e) for e in shape_tail)}); re-export it"
        )
    out_dim = outputs[0].shape[-1]
    if isinstance(out_dim, int) and out_dim != dim:
        raise InputError(
            f"ONNX model {path}: produces D={out_dim} features but the model config says "
            f"embed_dim={dim}; re-export it with `taxoclip export onnx`"
        )


class OnnxImageEncoder:
    """The image tower of an exported folder in ONNX Runtime (fp32 or int8)."""

    def __init__(self, spec: str | os.PathLike | ExportedModel, *, int8: bool = False,
                 squash: bool = False, threads: int | None = None) -> None:  # fmt: skip
        self.exported = spec if isinstance(spec, ExportedModel) else ExportedModel.open(spec)
        self.int8 = int8
        self.runtime = "onnx-int8" if int8 else "onnx"
        self.squash = squash
        self.embed_dim = self.exported.embed_dim
        self.logit_scale = self.exported.logit_scale
        self._pre = Preprocess.from_cfg(self.exported.preprocess_cfg, squash=squash)
        self.image_size = self._pre.size
        self.path = self.exported.image_file(int8)
        self.session = open_session(self.path, threads)
        _check_io(self.session, self.path, "image",
                  (3, self.image_size, self.image_size), self.embed_dim)  # fmt: skip
        self._input = self.session.get_inputs()[0].name

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._pre(image)

    def encode_pixels(self, pixels: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Features of preprocessed (B, 3, S, S) float32 pixels."""
        (features,) = self.session.run(None, {self._input: np.ascontiguousarray(pixels)})[:1]
        features = features.astype(np.float32, copy=False)
        return l2_normalize(features) if normalize else features

    def encode(self, images: Sequence[Image.Image], normalize: bool = True) -> np.ndarray:
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.encode_pixels(self._pre.batch(images), normalize)


class OnnxTextEncoder:
    """The text tower of an exported folder with its own BPE tokenizer: no torch."""

    def __init__(self, exported: ExportedModel, *, int8: bool = False,
                 threads: int | None = None) -> None:  # fmt: skip
        from .tokenizer import BPETokenizer

        path = exported.text_file(int8)
        if path is None:
            raise InputError(f"exported model {exported.folder}: no {TEXT_ONNX} + {TOKENIZER_FILE}")
        self.path = path
        self.embed_dim = exported.embed_dim
        self.context_length = int(exported.model_cfg.get("text_cfg", {}).get("context_length", 77))
        self.tokenizer = BPETokenizer.load(exported.folder / TOKENIZER_FILE)
        self.session = open_session(path, threads)
        _check_io(self.session, path, "text", (None,), self.embed_dim)
        self._input = self.session.get_inputs()[0].name

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenizer(texts, self.context_length)

    def encode_tokens(self, tokens: np.ndarray, normalize: bool = True) -> np.ndarray:
        (features,) = self.session.run(None, {self._input: tokens.astype(np.int64)})[:1]
        features = features.astype(np.float32, copy=False)
        return l2_normalize(features) if normalize else features


def wants_onnx(runtime: str, model_spec: str) -> bool:
    """``auto`` picks ONNX for an exported folder; ``torch`` never; ``onnx*`` always."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {runtime})")
    if runtime == "auto":
        return find_exported(model_spec) is not None
    return runtime != "torch"


def open_image_encoder(model_spec: str, runtime: str = "onnx", *, squash: bool = False,
                       threads: int | None = None) -> OnnxImageEncoder:  # fmt: skip
    """The ONNX image encoder for ``--runtime`` (``auto`` → fp32, ``onnx-int8`` → int8)."""
    return OnnxImageEncoder(model_spec, int8=runtime == "onnx-int8", squash=squash,
                            threads=threads)  # fmt: skip

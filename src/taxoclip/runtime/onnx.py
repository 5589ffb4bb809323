"""ONNX Runtime encoders and open_clip's preprocessing in numpy + PIL — no torch.

An exported model folder (``taxoclip export onnx``, docs/reference.md#onnx-model-folders)
is an ordinary open_clip model folder plus:

- ``image_encoder.onnx`` (and ``image_encoder.int8.onnx`` with ``--int8``): input
  ``pixels`` float32 (B, 3, S, S), output ``features`` float32 (B, D), *not* normalised
  (``encode_image`` of the torch model, so ``embed`` writes the same raw features);
- ``text_encoder.onnx`` (+ ``.int8``): input ``tokens`` int64 (B, L), output ``features``
  (B, D), with ``tokenizer.json`` (the BPE vocabulary and merges) so custom labels and
  ``taxoclip index`` run without torch as well;
- ``text_step.onnx`` (exports since the prefix cache; fp32): the text tower on a
  key/value cache, :class:`~taxoclip.runtime.text_torch.TextStep` traced — inputs
  ``tokens``/``positions`` int64 (B, N), ``past`` float32 (layers, 2, B, heads, P,
  head_dim), ``mask`` float32 (B, N, P + N), ``pool`` int64 (B,); outputs ``features``
  (B, D) and ``present`` (layers, 2, B, heads, N, head_dim) — with which an index encodes
  each shared caption prefix once (:mod:`.prefix`). A folder without it indexes with
  ``text_encoder.onnx`` as before;
- ``export.json``: how they were made (versions, opset, quantisation, preprocessing,
  ``logit_scale``) and their measured agreement with the torch model.

Preprocessing is :mod:`.preprocess` (numpy + PIL, the torch paths' numbers). Both
encoders here satisfy :class:`~taxoclip.runtime.encode.ImageEncoder` /
:class:`~taxoclip.runtime.encode.TextEncoder`, so the one encoding loop and the one scorer
do not know which runtime runs.

Importing this module imports numpy and PIL only; ``onnxruntime`` is imported when an
encoder is opened, with a clear error naming ``pip install 'taxoclip[onnx]'`` if absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taxoclip.errors import InputError, UsageError

from .preprocess import Preprocess, l2_normalize

EXPORT_FILE = "export.json"
IMAGE_ONNX = "image_encoder.onnx"
IMAGE_ONNX_INT8 = "image_encoder.int8.onnx"
TEXT_ONNX = "text_encoder.onnx"
TEXT_ONNX_INT8 = "text_encoder.int8.onnx"
TEXT_STEP_ONNX = "text_step.onnx"
#: ``text_step.onnx``'s inputs, in the order ``encode_block`` takes them.
STEP_INPUTS = ("tokens", "positions", "past", "mask", "pool")
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "open_clip_config.json"  # the same names as taxoclip.models (no import: torch)
SAFETENSORS_FILE = "open_clip_model.safetensors"
INSTALL_HINT = "pip install 'taxoclip[onnx]'"


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

    def step_file(self) -> Path | None:
        """``text_step.onnx`` (the fp32 text tower on a key/value cache), if exported."""
        path = self.folder / TEXT_STEP_ONNX
        return path if path.is_file() and self.text_file() is not None else None


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

    def __init__(
        self,
        spec: str | os.PathLike | ExportedModel,
        *,
        int8: bool = False,
        squash: bool = False,
        threads: int | None = None,
    ) -> None:
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
        _check_io(
            self.session, self.path, "image", (3, self.image_size, self.image_size), self.embed_dim
        )
        self._input = self.session.get_inputs()[0].name
        self.weights = self.exported.folder / SAFETENSORS_FILE  # keys the label cache
        self._text = None
        text_file = self.exported.text_file(int8)
        self.text_runtime = (
            "torch"
            if text_file is None
            else ("onnx-int8" if ".int8." in text_file.name else "onnx")
        )

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

    def text_encoder(self):
        """This model's text tower (:func:`text_encoder_of`), opened once."""
        if self._text is None:
            self._text = text_encoder_of(self.exported, self.int8)
        return self._text


class OnnxTextEncoder:
    """The text tower of an exported folder with its own BPE tokenizer: no torch. With
    ``text_step.onnx`` (fp32 only) it also runs on a key/value cache: ``kv_shape`` and
    ``encode_block``, so an index encodes shared caption prefixes once (:mod:`.prefix`);
    ``kv_shape`` is None without it."""

    #: captions per forward pass (:func:`~taxoclip.runtime.text.class_text_matrix`): ONNX
    #: Runtime runs 128 sorted, trimmed captions a pass faster than 512 or 1280 (ViT-B-16)
    pass_size = 128

    def __init__(
        self, exported: ExportedModel, *, int8: bool = False, threads: int | None = None
    ) -> None:
        from .tokenizer import BPETokenizer

        path = exported.text_file(int8)
        if path is None:
            raise InputError(f"exported model {exported.folder}: no {TEXT_ONNX} + {TOKENIZER_FILE}")
        self.path = path
        self.runtime = "onnx-int8" if ".int8." in path.name else "onnx"
        self.embed_dim = exported.embed_dim
        self.context_length = int(exported.model_cfg.get("text_cfg", {}).get("context_length", 77))
        self.tokenizer = BPETokenizer.load(exported.folder / TOKENIZER_FILE)
        self.session = open_session(path, threads)
        _check_io(self.session, path, "text", (None,), self.embed_dim)
        self._input = self.session.get_inputs()[0].name
        self.kv_shape = None
        step = exported.step_file() if self.runtime == "onnx" else None
        if step is not None:
            self.step_session = open_session(step, threads)
            self.kv_shape = _kv_shape(self.step_session, step)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        return self.tokenizer(texts, self.context_length)

    def encode_tokens(self, tokens: np.ndarray, normalize: bool = True) -> np.ndarray:
        (features,) = self.session.run(None, {self._input: tokens.astype(np.int64)})[:1]
        features = features.astype(np.float32, copy=False)
        return l2_normalize(features) if normalize else features

    def encode_block(self, tokens, positions, past, mask, pool) -> tuple[np.ndarray, np.ndarray]:
        """``text_step.onnx`` on one block: (features, present), as :class:`~taxoclip.
        runtime.text_torch.TextStep`."""
        feeds = dict(zip(STEP_INPUTS, (tokens, positions, past, mask, pool), strict=True))
        features, present = self.step_session.run(["features", "present"], feeds)
        return features.astype(np.float32, copy=False), present


def _kv_shape(session, path: Path):
    """The step graph's :class:`~.prefix.KVShape`, read from its ``past`` input
    (layers, 2, batch, heads, past, head_dim)."""
    from .prefix import KVShape

    inputs = {i.name: i for i in session.get_inputs()}
    shape = inputs["past"].shape if set(STEP_INPUTS) <= set(inputs) else None
    if shape is None or len(shape) != 6 or not all(isinstance(shape[i], int) for i in (0, 3, 5)):
        raise InputError(f"ONNX model {path}: not a text step graph; re-export it")
    return KVShape(layers=shape[0], heads=shape[3], head_dim=shape[5])


def text_encoder_of(exported: ExportedModel, int8: bool = False):
    """An exported model's text tower: its ONNX one (the int8 file with ``int8``, when
    there is one); for a folder exported without it (``--no-text``), torch's, loaded from
    the folder's weights — the one case where the ONNX path imports torch."""
    if exported.text_file(int8) is not None:
        return OnnxTextEncoder(exported, int8=int8)
    from taxoclip.models import load_model

    from .text_torch import TorchTextEncoder

    loaded = load_model(str(exported.folder))
    return TorchTextEncoder(loaded.model.eval(), loaded.tokenizer)

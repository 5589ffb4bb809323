"""Runtimes for a model's towers: torch, and ONNX Runtime (fp32 / int8) without torch.

``taxoclip export onnx`` writes an exported model folder (:mod:`.export`); the ONNX
encoders and the numpy/PIL preprocessing live in :mod:`.onnx` (imports numpy, PIL and,
when an encoder opens, onnxruntime — never torch); :mod:`.torch_encoder` offers the torch
model behind the same :class:`ImageEncoder` interface. Importing this package is light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ImageEncoder": "onnx",
    "OnnxImageEncoder": "onnx",
    "OnnxTextEncoder": "onnx",
    "ExportedModel": "onnx",
    "Preprocess": "onnx",
    "find_exported": "onnx",
    "open_image_encoder": "onnx",
    "wants_onnx": "onnx",
    "RUNTIMES": "onnx",
    "TorchImageEncoder": "torch_encoder",
    "export_onnx": "export",
    "run_export_onnx": "export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_encoder(model: str, runtime: str = "auto", *, squash: bool = False,
                 device: str = "cpu", pretrained: str | None = None):  # fmt: skip
    """An :class:`ImageEncoder` for ``model`` under ``runtime`` (auto/torch/onnx/onnx-int8):
    auto picks ONNX (fp32) for an exported folder, torch otherwise."""
    from .onnx import open_image_encoder, wants_onnx

    if wants_onnx(runtime, model):
        return open_image_encoder(model, "onnx" if runtime == "auto" else runtime, squash=squash)
    from .torch_encoder import TorchImageEncoder

    return TorchImageEncoder(model, squash=squash, device=device, pretrained=pretrained)

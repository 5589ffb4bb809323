"""The engine: images and label text to features, features to scores and rows — one of each.

- :mod:`.encode` — the encoder interface (:class:`ImageEncoder`, :class:`TextEncoder`),
  :func:`open_encoder` (torch fp32, ONNX fp32 or ONNX int8, chosen before torch is
  imported), and the one batched encoding loop (threads, bad images as reasons, progress);
- :mod:`.onnx`, :mod:`.torch_encoder`, :mod:`.text_torch` — the encoders themselves;
  :mod:`.preprocess` the numpy preprocessing and the normalisation constants;
- :mod:`.images` — which files are images, collecting and decoding them;
- :mod:`.index` — the tree-of-life text index (pybioclip's files), subsets;
- :mod:`.scoring` — the one numpy scorer (softmax, rank roll-up, subset, region roll-up,
  deepest rank, custom labels and bins) and :mod:`.rows`, the rows it writes;
- :mod:`.text` — label text to classifiers, cached; :mod:`.templates`;
- :mod:`.export` — ``taxoclip export onnx``; :mod:`.cache` — the export cache that lets
  ``--runtime auto`` run any model on ONNX Runtime (exported once, on first use).

Every stage that encodes or scores uses these (predict, the pybioclip classes, serve,
eval, analyze, curation's model filter, training validation). Importing this package is
light; only the torch encoder and the export import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ImageEncoder": "encode",
    "TextEncoder": "encode",
    "RUNTIMES": "encode",
    "choose_runtime": "encode",
    "open_encoder": "encode",
    "open_text_encoder": "encode",
    "iter_features": "encode",
    "encode_images": "encode",
    "score_images": "encode",
    "Encoded": "encode",
    "OnnxImageEncoder": "onnx",
    "OnnxTextEncoder": "onnx",
    "ExportedModel": "onnx",
    "find_exported": "onnx",
    "Preprocess": "preprocess",
    "OPENAI_MEAN": "preprocess",
    "OPENAI_STD": "preprocess",
    "IMAGE_SUFFIXES": "images",
    "TextIndex": "index",
    "LabelScorer": "scoring",
    "TreeScorer": "scoring",
    "TorchImageEncoder": "torch_encoder",
    "export_onnx": "export",
    "run_export_onnx": "export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

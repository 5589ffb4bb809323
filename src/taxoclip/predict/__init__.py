"""Predict, embed, index: pybioclip's formats and API on any taxoclip model.

The stage API is ``run_index``, ``run_predict`` and ``run_embed`` (a config in, a typed
result out), as the CLI calls them. Importing this package is light; the classifiers and
feature extraction (torch, open_clip) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import (
    EmbedConfig,
    EmbedResult,
    IndexConfig,
    IndexResult,
    PredictConfig,
    PredictResult,
)

_LAZY = {
    "run_index": "dispatch",  # picks the runtime (torch or ONNX) before importing torch
    "run_predict": "dispatch",
    "run_embed": "dispatch",
    "BIOCLIP_MODEL_STR": "classifiers",
    "TOL_MODELS": "scoring",
    "BaseClassifier": "classifiers",
    "CustomLabelsBinningClassifier": "classifiers",
    "CustomLabelsClassifier": "classifiers",
    "TreeOfLifeClassifier": "classifiers",
    "EncodedImages": "images",
    "collect_images": "images",
    "encode_images": "images",
    "iter_encoded": "images",
    "TextIndex": "index",
    "build_index": "index",
    "encode_class_texts": "index",
    "read_taxa": "index",
}

__all__ = [
    "EmbedConfig",
    "EmbedResult",
    "IndexConfig",
    "IndexResult",
    "PredictConfig",
    "PredictResult",
    "Rank",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name == "Rank":
        from taxoclip.taxonomy import Rank

        return Rank
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

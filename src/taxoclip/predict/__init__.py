"""Predict, embed, index: pybioclip's formats and API on any taxoclip model.

The stage API is ``run_index``, ``run_predict`` and ``run_embed`` (a config in, a typed
result out), as the CLI calls them; the pybioclip classes are thin adapters over the same
engine (:mod:`taxoclip.runtime`). Importing this package is light; the classifiers (torch,
open_clip) load on first use of their names.
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
    "run_index": "taxoclip.predict.run",  # picks the runtime (torch or ONNX) before torch
    "run_predict": "taxoclip.predict.run",
    "run_embed": "taxoclip.predict.run",
    "BIOCLIP_MODEL_STR": "taxoclip.predict.classifiers",
    "BaseClassifier": "taxoclip.predict.classifiers",
    "CustomLabelsBinningClassifier": "taxoclip.predict.classifiers",
    "CustomLabelsClassifier": "taxoclip.predict.classifiers",
    "TreeOfLifeClassifier": "taxoclip.predict.classifiers",
    "build_index": "taxoclip.predict.index",
    "read_taxa": "taxoclip.predict.index",
    # the engine's, where callers of predict have always found them
    "TOL_MODELS": "taxoclip.runtime.index",
    "TextIndex": "taxoclip.runtime.index",
    "collect_images": "taxoclip.runtime.images",
    "Encoded": "taxoclip.runtime.encode",
    "encode_images": "taxoclip.runtime.encode",
    "iter_features": "taxoclip.runtime.encode",
    "open_encoder": "taxoclip.runtime.encode",
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
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Training: the BioCLIP 2 recipe on open_clip models, one process or torchrun DDP.

Light at import (no torch): the config, the result and :func:`run`; the heavy names
(``train``, ``TrainingError``, ``clip_loss``) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig, TrainResult, bioclip2_recipe

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "bioclip2_recipe",
    "clip_loss",
    "run",
    "train",
]

#: Heavy names and the module each lives in, imported when first asked for.
_LAZY = {"train": ".trainer", "TrainingError": ".trainer", "clip_loss": ".loss"}


def run(config: TrainConfig) -> TrainResult:
    """``taxoclip train``: run (or resume) training as ``config`` says."""
    from .trainer import train

    return train(config)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

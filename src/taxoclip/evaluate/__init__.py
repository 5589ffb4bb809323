"""Evaluate: BioCLIP 2's protocols, hierarchical metrics, the SynthToL and published suites.

Stage API: ``run(EvalConfig(model=..., data=..., suite=...)) -> EvalResult`` (what
``taxoclip eval`` calls). ``protocols`` and ``hierarchical`` are pure functions over
features; ``suites`` runs them on data with a model; ``runner`` is the stage's entry.

Importing this package is light (no torch); the names below other than the config are
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import EvalConfig, EvalResult, format_table

# name -> submodule holding it (imported on first access: torch, open_clip, sklearn)
_LAZY = {
    **dict.fromkeys(
        (
            "EvalContext",
            "Result",
            "SynthSplits",
            "read_synth_splits",
            "synth_suite",
            "synth_zero_shot",
            "folder_suite",
            "side_by_side",
            "write_results",
            "zero_shot",
            "few_shot",
        ),
        "suites",
    ),
    **dict.fromkeys(("EvalSet", "read_metadata_folder"), "dataset"),
    **dict.fromkeys(("class_embeddings", "image_features", "default_cache_dir"), "features"),
    "bioclip2_suite": "published",
}

__all__ = ["EvalConfig", "EvalResult", "format_table", "run", *sorted(_LAZY)]


def run(config: EvalConfig) -> EvalResult:
    """Evaluate ``config.model`` beside its untrained twin; print-ready rows and notes."""
    from .runner import run as run_command

    return run_command(config)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value

"""Studies that combine the stages: ``taxoclip study scaling`` (the paper's claims over
data sizes, seeds and worlds) and ``taxoclip study sweep`` (the stage-2 recipe chosen by a
criterion fixed in advance: ``sweep.run(SweepConfig(out=...)) -> SweepResult``).

Stage API: ``run(ScalingConfig(out=...)) -> ScalingResult``. Importing this package is
light; the names below other than the configs are loaded from ``scaling`` on first use.
``claims`` (the verdict rule) and ``summary`` (claims table, trends, plot) are pure.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ScalingConfig, ScalingResult, SweepConfig, SweepResult, parse_sizes

_LAZY = (
    "format_table",
    "measure",
    "plot_study",
    "select_subsets",
    "subset_count",
    "zero_shot_loaded",
)

__all__ = [
    "ScalingConfig",
    "ScalingResult",
    "SweepConfig",
    "SweepResult",
    "parse_sizes",
    "run",
    *_LAZY,
]


def run(config: ScalingConfig) -> ScalingResult:
    """Run the scaling study of ``config`` (trains, analyses, writes OUT)."""
    from .scaling import run as run_study

    return run_study(config)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".scaling", __name__), name)
    globals()[name] = value
    return value

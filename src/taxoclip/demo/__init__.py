"""``taxoclip demo``: the whole system on the embedded SynthToL default, end to end.

Stage API: ``run(DemoConfig(out=..., quick=...)) -> DemoResult``; ``demo.run`` holds the
plan and calls every other stage through its own ``run(config)``.
"""

from __future__ import annotations

from .config import DemoConfig, DemoResult

__all__ = ["DemoConfig", "DemoResult", "run"]


def run(config: DemoConfig) -> DemoResult:
    from .pipeline import run_demo

    return run_demo(config)

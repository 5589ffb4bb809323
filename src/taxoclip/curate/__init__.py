"""Curation: raw biodiversity records → a TreeOfLife-style dataset, with nothing lost.

``run(CurateConfig(...))`` (or ``curate(config)``) runs the stages of
``taxoclip.curate.plan`` (ingest → names → records → images → eval → exact → pairs → near
→ final → shards, then the ledger) on Ray Data; see ``taxoclip.curate.pipeline`` and
``docs/curate.md``. Importing this package is light: pyarrow and Ray load on first run.
"""

from __future__ import annotations

from taxoclip.curate.config import CurateConfig, CurateResult

__all__ = ["CurateConfig", "CurateResult", "curate", "run"]


def run(config: CurateConfig) -> CurateResult:
    """Curate what ``config`` describes (progress bars as ``config.progress`` says)."""
    from taxoclip.curate.pipeline import curate

    return curate(config)


def __getattr__(name: str):
    if name == "curate":  # the pipeline imports pyarrow: only when asked for
        from taxoclip.curate.pipeline import curate

        return curate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

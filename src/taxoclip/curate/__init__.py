"""Curation: raw biodiversity records → a TreeOfLife-style dataset, with nothing lost.

``curate(CurateConfig(...))`` runs ingest → names → category → images → leak → dedup →
shard on Ray Data; see ``taxoclip.curate.pipeline`` for the stages and ``docs/curate.md``.
"""

from taxoclip.curate.pipeline import CurateConfig, CurateResult, curate

__all__ = ["CurateConfig", "CurateResult", "curate"]

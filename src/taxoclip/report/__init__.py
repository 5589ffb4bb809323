"""``taxoclip report``: one self-contained HTML file from run, eval, curation and analysis dirs.

Stage API: ``run(ReportConfig(dirs=[...], out=...)) -> ReportResult``.
"""

from __future__ import annotations

from .config import ReportConfig, ReportResult
from .html import ReportInputs, build_report, detect_inputs, write_report

__all__ = [
    "ReportConfig",
    "ReportInputs",
    "ReportResult",
    "build_report",
    "detect_inputs",
    "run",
    "write_report",
]


def run(config: ReportConfig) -> ReportResult:
    """Write the report of ``config.dirs`` to ``config.out``."""
    return ReportResult(out=write_report(config.dirs, config.out))

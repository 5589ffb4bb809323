"""Config and result of ``taxoclip report`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taxoclip.config import CommandConfig, CommandResult, command, option


@command(
    "report",
    help="one self-contained HTML report from run, eval, curation and analysis dirs",
    description=(
        "Write one HTML file (inline CSS, images as data URIs, no scripts or links) from "
        "any of: a training run (params.json, metrics.jsonl), eval results (results.json), "
        "curation stats (stats.json), an analysis dir (metrics.json, plots/) and a scaling "
        "study (study.json). Each DIR is recognised by the files it holds; missing parts are "
        "listed as not available."
    ),
    run="taxoclip.report:run",
)
@dataclass(kw_only=True)
class ReportConfig(CommandConfig):
    dirs: list[str] = option(
        positional=True, metavar="DIR", help="run, eval, curation, analysis or study dir"
    )
    out: str = option("report.html", metavar="FILE", help="output file")

    def check(self) -> list[str]:
        return [] if self.dirs else ["give at least one DIR"]


@dataclass
class ReportResult(CommandResult):
    out: Path

    def lines(self) -> list[str]:
        return [f"report: {self.out}"]

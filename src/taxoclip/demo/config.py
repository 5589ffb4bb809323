"""Config and result of ``taxoclip demo`` (light: the CLI imports this for --help)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taxoclip.config import CommandConfig, CommandResult, command, option, shared


@command(
    "demo",
    help="run every stage on SynthToL and say where the results are",
    description=(
        "Run the whole system on the embedded SynthToL default: synth (with a GBIF-like raw "
        "source) → curate → train → index/predict → eval → analyze → one HTML report, "
        "whose path is printed last."
    ),
    run="taxoclip.demo:run",
)
@dataclass(kw_only=True)
class DemoConfig(CommandConfig):
    out: str = option("demo_out", metavar="DIR", help="output directory (new or empty)")
    quick: bool = option(False, help="a small, fast run (used by the tests)")
    progress: bool = shared.progress()


@dataclass
class DemoResult(CommandResult):
    out: Path
    report: Path
    seconds: float
    summary: list[str]

    def lines(self) -> list[str]:
        return [*self.summary, f"report: {self.report}"]

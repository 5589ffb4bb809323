"""Config and result of ``taxoclip eval`` (light: the CLI imports this for --help)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from taxoclip.predict.config import runtime_option

SUITES = ("synth", "bioclip2")
LABEL_TEXTS = ("index", "as-given", "sci", "com", "taxon", "sci_com", "taxon_com")


@command(
    "eval",
    help="evaluate a model: zero-/few-shot, probes, hierarchical metrics, beside an untrained "
    "baseline",
    description=(
        "Evaluate with BioCLIP 2's protocols: an evaluation folder (metadata.csv with "
        "filepath,class and optional rank columns), the SynthToL suite (--suite synth), or "
        "the published benchmarks found under --root (--suite bioclip2). Every number is "
        "printed beside the same model architecture untrained."
    ),
    run="taxoclip.evaluate:run",
)
@dataclass(kw_only=True)
class EvalConfig(CommandConfig):
    model: str = shared.model(
        required=True, help="run dir, model folder, open_clip name or hf-hub: string"
    )
    pretrained: str | None = shared.pretrained()
    data: str | None = option(
        None, metavar="DIR", help="evaluation folder, or a SynthToL folder with --suite synth"
    )
    suite: str | None = option(None, choices=SUITES, help="synth or bioclip2")
    root: str | None = option(
        None, metavar="DIR", help="folder holding the published benchmarks (--suite bioclip2)"
    )
    out: str | None = option(None, metavar="DIR", help="write results.json and results.csv here")
    label_text: str = option(
        "index",
        choices=LABEL_TEXTS,
        help="how classes are described to the text tower (default: pybioclip's index text; "
        "with --suite bioclip2, BioCLIP 2's text for each benchmark)",
    )
    baseline: bool = option(
        True, flag="--no-baseline", negate=True, help="skip the untrained baseline"
    )
    batch_size: int = shared.batch_size(64)
    cache_dir: str | None = option(
        None, metavar="DIR", help="feature cache (default ~/.cache/taxoclip/features)"
    )
    device: str = shared.device()
    offline: bool = shared.offline()
    progress: bool = shared.progress()
    runtime: str = runtime_option()  # the trained model's image tower; the twin stays torch

    def check(self) -> list[str]:
        problems = []
        if self.label_text not in LABEL_TEXTS:
            problems.append(f"--label-text must be one of {', '.join(LABEL_TEXTS)}")
        if self.suite not in (None, *SUITES):
            problems.append(f"--suite must be synth or bioclip2 (got {self.suite})")
        if self.suite in (None, "synth") and not self.data:
            problems.append(
                "--data DIR is required (an evaluation folder, or SynthToL with --suite synth)"
            )
        if self.suite == "bioclip2" and not self.root:
            problems.append("--suite bioclip2 needs --root DIR holding the benchmarks")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        return problems


@dataclass
class EvalResult(CommandResult):
    """Result rows (:class:`~taxoclip.evaluate.suites.Result`, trained and untrained) and
    notes (benchmarks skipped, and why)."""

    rows: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    out: str | Path | None = None

    def lines(self) -> list[str]:
        lines = list(self.notes) + format_table(self.rows).splitlines()
        if self.out:
            lines.append(f"results: {self.out}/results.json, {self.out}/results.csv")
        return lines

    def _failed_and_ran(self) -> tuple[list[Any], list[Any]]:
        ours = [r for r in self.rows if getattr(r, "model", "") in ("trained", "untrained")]
        failed = [r for r in ours if getattr(r, "note", "").startswith(("not read", "not run"))]
        return failed, [r for r in ours if not getattr(r, "note", "")]

    def warnings(self) -> list[str]:
        failed, ran = self._failed_and_ran()
        tasks = sorted({r.task for r in failed})
        if not tasks:
            return []
        return [
            f"{len(tasks)} benchmark(s) could not be read or run: {', '.join(tasks)}; "
            f"{'the others ran' if ran else 'none ran'} (reasons in the notes)"
        ]

    @property
    def exit_code(self) -> int:
        """3 when some benchmark could not be read or run and others ran; 1 when none ran."""
        failed, ran = self._failed_and_ran()
        if failed:
            return EXIT_PARTIAL if ran else EXIT_FAILED
        return EXIT_OK


def format_table(rows: list[Any]) -> str:
    """The trained and untrained value of each (suite, task, metric) side by side."""
    from taxoclip.predict.output import write_rows

    from .suites import side_by_side

    buffer = io.StringIO()
    write_rows(side_by_side(rows), "table", buffer)
    return buffer.getvalue()

"""``taxoclip eval``: run a suite for the model and its untrained twin, print, write."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from taxoclip.errors import UsageError
from taxoclip.models import load_model

from .features import default_cache_dir
from .suites import (
    EvalContext,
    Result,
    check_label_text,
    folder_suite,
    side_by_side,
    synth_suite,
    untrained_twin,
    write_results,
)

log = logging.getLogger(__name__)


def run_eval(
    model: str,
    data: str | None = None,
    suite: str | None = None,
    root: str | None = None,
    out: str | None = None,
    pretrained: str | None = None,
    baseline: bool = True,
    label_text: str = "index",
    batch_size: int = 64,
    cache_dir: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[list[Result], list[str]]:
    """Returns the result rows and notes (benchmarks skipped, and why)."""
    check_label_text(label_text)
    if suite not in (None, "synth", "bioclip2"):
        raise UsageError(f"--suite must be synth or bioclip2 (got {suite})")
    if suite in (None, "synth") and not data:
        raise UsageError(
            "--data DIR is required (an evaluation folder, or SynthToL with --suite synth)"
        )
    if suite == "bioclip2" and not root:
        raise UsageError("--suite bioclip2 needs --root DIR holding the benchmarks")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    models = [("trained", load_model(model, pretrained=pretrained, device=device))]
    if baseline:
        models.append(("untrained", untrained_twin(models[0][1])))
    rows: list[Result] = []
    notes: list[str] = []
    for name, loaded in models:
        loaded.model.eval()
        ctx = EvalContext(loaded, name, cache, batch_size, device, progress, label_text)
        if suite == "synth":
            rows += synth_suite(ctx, Path(data))
        elif suite == "bioclip2":
            from .published import bioclip2_suite

            suite_rows, suite_notes = bioclip2_suite(ctx, Path(root))
            rows += suite_rows
            notes = suite_notes
        else:
            rows += folder_suite(ctx, Path(data))
    if out:
        write_results(rows, Path(out))
    return rows, notes


def format_table(rows: list[Result]) -> str:
    from taxoclip.predict.output import write_rows

    buffer = io.StringIO()
    write_rows(side_by_side(rows), "table", buffer)
    return buffer.getvalue()

"""``taxoclip eval``: run a suite for the model and its untrained twin, write the results."""

from __future__ import annotations

import logging
from pathlib import Path

from taxoclip.models import load_model, untrained_twin
from taxoclip.models.device import resolve_device
from taxoclip.runtime.encode import choose_runtime, open_encoder

from .config import EvalConfig, EvalResult, format_table
from .features import default_cache_dir
from .suites import EvalContext, Result, folder_suite, synth_suite, write_results

__all__ = ["format_table", "run"]

log = logging.getLogger(__name__)


def run(config: EvalConfig) -> EvalResult:
    """Evaluate ``config.model`` (and its untrained twin unless ``baseline`` is off)."""
    device = resolve_device(config.device)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    models = [("trained", load_model(config.model, pretrained=config.pretrained, device=device))]
    if config.baseline:
        models.append(("untrained", untrained_twin(models[0][1])))
    rows: list[Result] = []
    notes: list[str] = []
    encoder = None
    if choose_runtime(config.runtime, config.model, config.device) != "torch":
        encoder = open_encoder(config.model, config.runtime, device=config.device)  # ONNX tower
    for name, loaded in models:
        loaded.model.eval()
        ctx = EvalContext(
            loaded,
            name,
            cache,
            config.batch_size,
            device,
            config.progress,
            config.label_text,
            encoder if name == "trained" else None,
        )
        if config.suite == "synth":
            rows += synth_suite(ctx, Path(config.data))
        elif config.suite == "bioclip2":
            from .published import bioclip2_suite

            suite_rows, notes = bioclip2_suite(ctx, Path(config.root))
            rows += suite_rows
        else:
            rows += folder_suite(ctx, Path(config.data))
    if config.out:
        write_results(rows, Path(config.out))
    return EvalResult(rows=rows, notes=notes, out=config.out)

"""Config and result of ``taxoclip analyze`` (light: the CLI imports this for --help)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.predict.config import runtime_option

SPLITS = ("all", "train", "test")
BASELINES = ("untrained", "none")


@command(
    "analyze",
    help="emergent properties (traits, habitat, taxonomy, variants) beside a baseline",
    description=(
        "Measure the emergent properties of a model's image embeddings (BioCLIP 2's "
        "analyses): "
        "trait alignment (finch beak length, hue, elongation), ecological alignment "
        "(habitat, split by order), taxonomic alignment, within-species separation of "
        "sex and life stage, their orthogonality to species differences and the "
        "effective dimension, each beside its null and the untrained twin of the model. "
        "--data is a SynthToL root (every metric) or an evaluation folder (whatever its "
        "columns allow; the rest is listed as skipped). --embeddings analyses precomputed "
        "features of --data's images instead of a model (any model's, run elsewhere). "
        "Beside each separation statistic, its ceiling: a small CNN trained with the "
        "labels on half of each species' images, measured on the other half. Writes "
        "metrics.json, embeddings.npz, analysis.json and plots/*.png into --out."
    ),
    run="taxoclip.analyze:run",
)
@dataclass(kw_only=True)
class AnalyzeConfig(CommandConfig):
    model: str | None = shared.model(
        None, help="run dir, model folder, open_clip name or hf-hub: string (or --embeddings)"
    )
    pretrained: str | None = shared.pretrained()
    data: str | Path = option(metavar="DIR", help="SynthToL root or evaluation folder")
    out: str | Path = option(metavar="DIR", help="output directory")
    embeddings: str | None = option(
        None,
        metavar="FILE",
        help="analyse these embeddings of --data's images instead of a model: taxoclip "
        "analyze's embeddings.npz, a .npy whose rows follow the images in the order analyze "
        "lists them, or a .parquet keyed by image (docs/analyze.md); rows are L2-normalised",
    )
    baseline_embeddings: str | None = option(
        None,
        metavar="FILE",
        help="with --embeddings: the baseline's embeddings, same formats (default: an "
        "embeddings.npz's own z_baseline, else no baseline)",
    )
    split: str = option(
        "all",
        choices=SPLITS,
        help="SynthToL split(s) to analyse (default all: the within-species metrics want "
        "many images per species and variant)",
    )
    baseline: str = option(
        "untrained",
        choices=BASELINES,
        help="measure the same architecture with random weights beside it (default "
        "untrained); none: no baseline, with --embeddings too",
    )
    seed: int = shared.seed(help="seed of nulls, folds, t-SNE and the baseline weights")
    batch_size: int = shared.batch_size(64)
    device: str = shared.device()
    offline: bool = shared.offline()
    progress: bool = shared.progress()
    runtime: str = runtime_option()  # the model's image tower; the untrained twin stays torch
    ceiling: bool = option(
        True,
        flag="--no-ceiling",
        negate=True,
        help="skip the ceiling beside each separation statistic (a small CNN trained on "
        "the images with their labels; seconds on CPU)",
    )
    # Library only: the scaling study analyses without plots; 4 is the least that splits.
    min_per_variant: int = option(4, cli=False, help="images of each variant a species needs")
    plots: bool = option(True, cli=False, help="write plots/*.png")

    def check(self) -> list[str]:
        problems = []
        if not self.model and not self.embeddings:
            problems.append("give --model or --embeddings")
        if self.model and self.embeddings:
            problems.append(
                "--model and --embeddings exclude each other (--embeddings analyses the "
                "file's rows, not a model)"
            )
        if self.baseline_embeddings and not self.embeddings:
            problems.append(
                "--baseline-embeddings needs --embeddings (a model's baseline is its "
                "untrained twin)"
            )
        if self.baseline_embeddings and self.baseline == "none":
            problems.append("--baseline none and --baseline-embeddings exclude each other")
        if self.split not in SPLITS:
            problems.append(f"--split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if self.baseline not in BASELINES:
            problems.append(
                f"--baseline must be one of {', '.join(BASELINES)} (got {self.baseline!r})"
            )
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.min_per_variant < 4:
            problems.append("min_per_variant must be >= 4 (each variant is split in halves)")
        return problems


@dataclass
class AnalysisResult(CommandResult):
    """What one analysis wrote: ``metrics`` and ``skipped`` as in metrics.json, ``summary``
    as in analysis.json, the plots written."""

    out: Path
    metrics: dict[str, dict]
    skipped: dict[str, str]
    summary: dict[str, Any]
    plots: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        summary, out = self.summary, self.out
        lines = format_summary(self).splitlines()
        lines.append(
            f"analysed {summary['n_images']} images of {summary['n_species']} "
            f"species in {summary['seconds']['total']:.1f} s"
        )
        lines.append(f"results: {out}/metrics.json, {out}/embeddings.npz, {out}/analysis.json")
        if self.plots:
            lines.append(f"plots: {', '.join(str(p) for p in self.plots)}")
        lines += [f"plot {name} skipped: {why}" for name, why in summary["plots_skipped"].items()]
        return lines


def format_summary(result: AnalysisResult) -> str:
    """A plain table of the headline statistics, one per line: value, baseline, null,
    ceiling (separation statistics) and the one-seed screen (not a claim's verdict)."""
    lines = [
        f"{'metric':34} {'statistic':17} {'model':>8} {'baseline':>8} {'null':>16} "
        f"{'ceiling':>8}  screen (one seed)"
    ]
    for name, entry in result.metrics.items():
        for stat, item in entry["stats"].items():
            null = item.get("null") or {}
            null_text = f"{_fmt(null.get('mean'))}±{_fmt(null.get('sd'))}" if null else ""
            ceiling = _fmt(item["ceiling"]) if "ceiling" in item else ""
            lines.append(
                f"{name:34} {stat:17} {_fmt(item['value']):>8} "
                f"{_fmt(item['baseline_value']):>8} {null_text:>16} {ceiling:>8}  "
                f"{item.get('verdict') or ''}"
            )
    for name, reason in result.skipped.items():
        lines.append(f"{name:34} skipped: {reason}")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(x):
        return "-"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.3g}"

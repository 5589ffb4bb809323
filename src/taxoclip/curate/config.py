"""Config and result of ``taxoclip curate`` (light: stdlib and taxoclip.config only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxoclip.config import CommandConfig, CommandResult, command, option, shared
from taxoclip.records import CATEGORIES


def comma_list(text: str) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; an empty flag means no list."""
    return text.split(",") if text else None


def available_cores() -> int:
    """CPUs this process may run on (its affinity, where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@command(
    "curate",
    help="raw biodiversity records -> resolved, filtered, deduplicated shards (Ray Data)",
    description=(
        "Curate raw records into a TreeOfLife-style dataset: ingest (Darwin Core "
        "Archive, CSV/Parquet manifest, image folder with taxa.csv, SynthToL raw "
        "source), resolve names offline against a GBIF-format backbone, fetch, check "
        "and convert images, drop exact/near duplicates and evaluation leaks, and write "
        "WebDataset shards with manifest.parquet, rejected.parquet and stats.json. "
        "Every record leaves as kept or rejected with a reason. A run cut short resumes "
        "from OUT/.work. Runs on a local Ray by default, on a cluster with --ray-address."
    ),
    run="taxoclip.curate:run",
)
@dataclass(kw_only=True)
class CurateConfig(CommandConfig):
    """Everything one curation run depends on (written to stats.json)."""

    sources: list[str] = option(
        positional=True,
        metavar="SOURCE",
        help="DwC-A folder or .zip, manifest .csv/.tsv/.parquet, image folder with taxa.csv, "
        "or a SynthToL folder made with --raw-source",
    )
    backbone: str = option(
        metavar="DIR", help="GBIF-format backbone folder (Taxon.tsv, VernacularName.tsv)"
    )
    out: str = option(metavar="DIR", help="output folder")
    exclude_eval: list[str] = option(
        [],
        append=True,
        metavar="DIR",
        help="drop near-duplicates of every image under DIR (repeatable)",
    )
    columns: str | None = option(
        None,
        metavar="MAP",
        help="manifest column map: a preset (eol, bioscan, fathomnet, taxoclip) and/or "
        "field=column pairs, comma-separated",
    )
    ray_address: str | None = option(
        None, metavar="ADDR", help="Ray cluster to run on (e.g. ray://head:10001 or auto)"
    )
    # None: every core this process may use, counted when the run starts.
    workers: int | None = option(None, metavar="N", help="local Ray CPUs (default: all cores)")
    batch_size: int = shared.batch_size(64, "records per Ray Data batch")
    min_size: int = option(224, metavar="PX", help="reject images whose shorter side is below PX")
    image_size: int = option(224, metavar="PX", help="side of the squash-resized shard images")
    jpeg_quality: int = option(90, cli=False, help="JPEG quality of the shard images")
    max_pixels: int = option(89_478_485, cli=False, help="larger images are refused as bombs")
    radius: int = option(
        10, metavar="BITS", help="PDQ Hamming radius for near-duplicates and leaks"
    )
    samples_per_shard: int = option(1000, metavar="N", help="samples per output shard")
    seed: int = shared.seed(help="shuffle seed (default 0)")
    keep_higher_rank: bool = option(
        True,
        flag="--species-only",
        negate=True,
        help="reject records resolved only above species (kept by default)",
    )
    categories: list[str] | None = option(
        None,
        metavar="LIST",
        parse=comma_list,
        help="keep only these categories: museum_specimen, camera_trap, citizen_science, "
        "other (comma-separated)",
    )
    model_filter: str | None = option(
        None,
        metavar="MODEL",
        help="drop non-organism images (labels, documents, slides) by zero-shot CLIP with "
        "this model (run dir, model folder, hf-hub: string)",
    )
    filter_threshold: float = option(0.5, metavar="P", help="drop when p(non-organism) > P")
    per_host: int = option(8, metavar="N", help="concurrent downloads per host")
    retries: int = option(3, metavar="N", help="download attempts per URL in all")
    timeout: float = option(30.0, metavar="S", help="seconds per HTTP request")
    keep_work: bool = option(
        False, help="keep OUT/.work (fetch cache, per-batch results) after success"
    )
    progress: bool = shared.progress()

    def check(self) -> list[str]:
        problems = []
        if not self.sources:
            problems.append("give at least one SOURCE")
        if self.workers is not None and self.workers < 1:
            problems.append(f"--workers must be at least 1 (got {self.workers})")
        if self.min_size < 1 or self.image_size < 16:
            problems.append("--min-size must be ≥ 1 and --image-size ≥ 16")
        if not 0 <= self.radius <= 64:
            problems.append(f"--radius must be 0–64 bits (got {self.radius})")
        if self.samples_per_shard < 1:
            problems.append("--samples-per-shard must be at least 1")
        if self.categories:
            unknown = sorted(set(self.categories) - set(CATEGORIES))
            if unknown:
                problems.append(f"--categories: unknown {unknown} (known: {', '.join(CATEGORIES)})")
        if not 0.0 <= self.filter_threshold <= 1.0:
            problems.append("--filter-threshold must be in [0, 1]")
        return problems

    def parameters(self) -> dict[str, Any]:
        """The fields the run depends on, as stats.json records them (not ``progress``)."""
        return {k: v for k, v in self.to_json().items() if k != "progress"}


@dataclass
class CurateResult(CommandResult):
    out: Path
    stats: dict
    shard_pattern: str | None

    def lines(self) -> list[str]:
        stats = self.stats
        lines = [
            f"curated {stats['records_in']} records: {stats['kept']} kept, "
            f"{stats['rejected']} rejected ({stats['invariant']})"
        ]
        stages = ", ".join(f"{k} {v}" for k, v in stats["rejected_by_stage"].items() if v)
        if stages:
            lines.append(f"rejected by stage: {stages}")
        lines.append(f"shards: {self.shard_pattern}")
        lines.append(
            f"ledgers: {self.out / 'manifest.parquet'}, {self.out / 'rejected.parquet'}, "
            f"{self.out / 'stats.json'}"
        )
        return lines

"""CurateConfig's checks and defaults, and what a CurateResult prints (no Ray needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from taxoclip.curate import CurateConfig, CurateResult
from taxoclip.curate.config import available_cores, comma_list
from taxoclip.errors import UsageError


def test_defaults_and_checks():
    config = CurateConfig(sources=["raw"], backbone="bb", out="out")
    assert config.workers is None  # all cores, counted when the run starts
    assert config.keep_higher_rank and config.exclude_eval == [] and config.progress
    assert "progress" not in config.parameters()
    assert available_cores() >= 1
    with pytest.raises(UsageError, match="--workers must be at least 1.*--radius"):
        dataclasses.replace(config, workers=0, radius=65)
    with pytest.raises(UsageError, match="--categories: unknown"):
        dataclasses.replace(config, categories=comma_list("camera_trap,zoo"))
    assert comma_list("") is None


def test_result_lines_are_what_the_cli_prints():
    stats = {
        "records_in": 10,
        "kept": 7,
        "rejected": 3,
        "invariant": "10 = 7 + 3",
        "rejected_by_stage": {"names": 1, "image": 0, "dedup": 2},
    }
    result = CurateResult(out=Path("o"), stats=stats, shard_pattern="o/shard-000000.tar")
    assert result.lines() == [
        "curated 10 records: 7 kept, 3 rejected (10 = 7 + 3)",
        "rejected by stage: names 1, dedup 2",
        "shards: o/shard-000000.tar",
        "ledgers: o/manifest.parquet, o/rejected.parquet, o/stats.json",
    ]

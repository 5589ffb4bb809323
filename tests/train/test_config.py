"""TrainConfig as the `taxoclip train` command: flags, checks, JSON, result lines, light import."""

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from taxoclip.config import COMMANDS, add_arguments, config_values
from taxoclip.errors import UsageError
from taxoclip.train import TrainConfig, TrainResult, bioclip2_recipe


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, COMMANDS["train"].config)
    return TrainConfig(**config_values(parser.parse_args(["--data", "d", "--out", "o", *argv])))


def test_flags_keep_their_old_meaning():
    default = parse()
    assert (default.grad_clip, default.progress, default.weight_decay) == (1.0, True, 0.2)
    config = parse("--grad-clip", "0", "-q", "--wd", "0.05", "--device", "cpu")
    assert (config.grad_clip, config.progress, config.weight_decay) == (None, False, 0.05)
    assert parse("--weight-decay", "0.3").weight_decay == 0.3
    assert COMMANDS["train"].run == "taxoclip.train:run"


def test_checks_name_the_flags_on_construction_and_on_replace():
    with pytest.raises(UsageError, match="--batch-size must be at least 1.*--lr must be positive"):
        TrainConfig(data="d", out="o", batch_size=0, lr=0)
    config = TrainConfig(data="d", out="o")
    with pytest.raises(UsageError, match="--text-type must be one of"):
        replace(config, text_type="nope")
    recipe = bioclip2_recipe(config)
    assert (recipe.model, recipe.batch_size, recipe.recipe) == ("ViT-L-14", 2816, "bioclip2")


def test_json_round_trip_forgets_a_resume_file_that_is_gone(tmp_path):
    checkpoint = tmp_path / "step_00000004.pt"
    checkpoint.write_bytes(b"")
    config = TrainConfig(data="d", out="o", resume=str(checkpoint), betas=(0.8, 0.9))
    stored = config.to_json()
    assert stored["betas"] == [0.8, 0.9]
    checkpoint.unlink()
    again = TrainConfig.from_json({**stored, "unknown": 1})
    assert again.resume is None and again.betas == (0.8, 0.9)
    assert config.trajectory_differences(again) == []


def test_result_lines_are_printed_by_rank_0_only():
    result = TrainResult(
        run=Path("r"),
        steps=4,
        final_loss=1.23456,
        model_dir=Path("r/model"),
        samples_per_second=1.0,
        n_substituted=2,
        val_top1=0.5,
        val="v",
    )
    assert result.lines() == [
        "trained 4 steps; final loss 1.2346",
        "zero-shot top-1 on v: 0.500",
        "2 corrupt samples were skipped (see the log)",
        "run: r  (metrics.jsonl, tensorboard/, checkpoints/)",
        "model: r/model  (open_clip local-dir: layout)",
    ]
    assert replace(result, rank=1).lines() == []


def test_the_config_and_the_package_import_without_torch():
    code = "import sys, taxoclip.train; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

"""Training end to end on real shards: outputs, exact resume after kill -9, torchrun DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from taxoclip.errors import InputError, UsageError
from taxoclip.train import TrainConfig, TrainingError, train

COMMON = ["--batch-size", "16", "--warmup", "2", "--lr", "1e-3", "--log-every", "1", "-q"]


def run_train(
    *args: str, env: dict | None = None, torchrun: int = 0
) -> subprocess.CompletedProcess:
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
                    "--master_port", str(29500 + os.getpid() % 1000), "-m", "taxoclip"]  # fmt: skip
    else:
        launcher = [sys.executable, "-m", "taxoclip"]
    return subprocess.run(
        [*launcher, "train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})},
    )


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_a_run_writes_metrics_tensorboard_checkpoints_and_a_loadable_model(
    tiny_synth, tiny_shards, tmp_path
):
    run = tmp_path / "run"
    result = train(
        TrainConfig(
            data=tiny_shards,
            out=str(run),
            epochs=2,
            batch_size=16,
            warmup=2,
            lr=1e-3,
            log_every=1,
            workers=1,
            val=str(tiny_synth / "test"),
        )  # fmt: skip
    )
    n_train = (tiny_synth / "train" / "metadata.csv").read_text().count("\n") - 1
    steps_per_epoch = n_train // 16
    assert result.steps == 2 * steps_per_epoch
    logged = losses(run)
    assert sorted(logged) == list(range(result.steps))
    assert all(map(lambda x: x == x and x > 0, logged.values()))
    assert 0.0 <= result.val_top1 <= 1.0
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == [
        "epoch_1.pt",
        "epoch_2.pt",
    ]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    params = json.loads((run / "params.json").read_text())
    assert params["steps_per_epoch"] == steps_per_epoch and params["global_batch"] == 16

    # model/ is the open_clip HF layout: plain open_clip loads it, with the trained weights.
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{run / 'model'}")
    checkpoint = torch.load(run / "checkpoints" / "epoch_2.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name
    assert set(load_file(run / "model" / "open_clip_model.safetensors")) == set(model.state_dict())


def test_kill_9_then_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_shards, tmp_path):
    args = [
        "--data",
        tiny_shards,
        "--steps",
        "40",
        "--checkpoint-every",
        "4",
        "--workers",
        "1",
        *COMMON,
    ]
    straight = tmp_path / "straight"
    done = run_train(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "taxoclip", "train", *args, "--out", str(killed)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 8:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model").exists(), "the run finished before it could be killed"
    stopped_at = json.loads(pointer.read_text())["step"]
    assert 8 <= stopped_at < 40

    resumed = run_train(*args, "--out", str(killed), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(straight / "model" / "open_clip_model.safetensors")
    b = load_file(killed / "model" / "open_clip_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The log is continuous: one line per step, the same losses as the straight run.
    assert losses(killed) == losses(straight)


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tiny_shards, tmp_path):
    base = ["--data", tiny_shards, "--steps", "4", "--workers", "0", "--warmup", "2", "--lr", "1e-3",
            "--log-every", "1", "-q"]  # fmt: skip
    one = run_train(*base, "--batch-size", "16", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run_train(*base, "--batch-size", "8", "--out", str(tmp_path / "two"), torchrun=2)
    assert two.returncode == 0, two.stderr
    assert json.loads((tmp_path / "two" / "params.json").read_text())["world_size"] == 2
    single, ddp = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert single.keys() == ddp.keys() == {0, 1, 2, 3}
    for step in single:
        # Same global batch, same data order, same caption type: the same loss, up to
        # float reduction order across two processes.
        assert abs(single[step] - ddp[step]) < 1e-4, (step, single[step], ddp[step])


def test_non_finite_loss_stops_clearly_and_keeps_the_last_good_checkpoint(
    tiny_shards, tmp_path, monkeypatch
):
    import taxoclip.train.trainer as trainer

    real_loss = trainer.clip_loss
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(trainer, "clip_loss", exploding)
    run = tmp_path / "nan"
    config = TrainConfig(data=tiny_shards, out=str(run), steps=8, batch_size=16, warmup=2,
                         checkpoint_every=2, workers=0)  # fmt: skip
    with pytest.raises(TrainingError, match=r"loss became nan at step 4.*step_00000004\.pt"):
        train(config)
    assert not (run / "model").exists()
    kept = torch.load(run / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert kept["step"] == 4 and all(torch.isfinite(t).all() for t in kept["state_dict"].values())


def test_bad_inputs_fail_clearly_and_overwrite_nothing(tiny_shards, tmp_path):
    missing = run_train(
        "--data", str(tmp_path / "none-{000000..000001}.tar"), "--out", str(tmp_path / "a"), *COMMON
    )
    assert missing.returncode == 1 and "training shard not found" in missing.stderr

    unknown = run_train(
        "--data", tiny_shards, "--model", "ViT-Nope-99", "--out", str(tmp_path / "b"), *COMMON
    )
    assert unknown.returncode == 1 and "ViT-Nope-99" in unknown.stderr

    run = tmp_path / "c"
    (run / "checkpoints").mkdir(parents=True)
    bad = run / "checkpoints" / "step_00000004.pt"
    bad.write_bytes(b"not a checkpoint")
    (run / "checkpoints" / "latest.json").write_text('{"file": "step_00000004.pt", "step": 4}')
    again = run_train("--data", tiny_shards, "--out", str(run), "--steps", "2", *COMMON)
    assert again.returncode == 2 and "already has checkpoints" in again.stderr
    unreadable = run_train(
        "--data", tiny_shards, "--out", str(run), "--steps", "2", "--resume", "latest", *COMMON
    )
    assert unreadable.returncode == 1 and "cannot read checkpoint" in unreadable.stderr
    assert bad.read_bytes() == b"not a checkpoint"
    assert sorted(p.name for p in run.rglob("*")) == [
        "checkpoints",
        "latest.json",
        "step_00000004.pt",
    ]


def test_resume_with_other_settings_is_refused(tiny_shards, tmp_path):
    run = tmp_path / "r"
    train(TrainConfig(data=tiny_shards, out=str(run), steps=2, batch_size=16, warmup=1,
                      checkpoint_every=1, workers=0))  # fmt: skip
    with pytest.raises(UsageError, match="batch_size: 16 in the checkpoint, 8 now"):
        train(TrainConfig(data=tiny_shards, out=str(run), steps=2, batch_size=8, warmup=1,
                          checkpoint_every=1, workers=0, resume="latest"))  # fmt: skip
    with pytest.raises(InputError):
        train(TrainConfig(data=tiny_shards, out=str(tmp_path / "x"), steps=1, batch_size=16,
                          model=str(tmp_path / "no-such.json")))  # fmt: skip


def test_replay_run_keeps_the_second_projection_out_of_the_model(tiny_shards, tmp_path):
    run = tmp_path / "replay"
    train(TrainConfig(data=tiny_shards, out=str(run), steps=2, batch_size=16, warmup=1,
                      replay=tiny_shards, replay_ratio=0.2, checkpoint_every=2, workers=0))  # fmt: skip
    checkpoint = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)
    visual_proj = checkpoint["state_dict"]["visual.proj"]
    assert checkpoint["replay_proj"].shape == visual_proj.shape
    assert not torch.equal(checkpoint["replay_proj"], visual_proj)  # trained apart
    exported = load_file(run / "model" / "open_clip_model.safetensors")
    assert torch.equal(exported["visual.proj"], visual_proj)
    assert not any("replay" in name for name in exported)
    assert json.loads((run / "params.json").read_text())["replay"] == tiny_shards


def test_a_previous_run_is_a_starting_point(tiny_shards, tmp_path):
    from taxoclip.train.setup import build_model

    first = tmp_path / "first"
    train(
        TrainConfig(data=tiny_shards, out=str(first), steps=2, batch_size=16, warmup=1, workers=0)
    )
    start = build_model(
        TrainConfig(data=tiny_shards, out=str(tmp_path / "second"), model=str(first)), None
    )
    exported = load_file(first / "model" / "open_clip_model.safetensors")
    for name, tensor in start.model.state_dict().items():
        assert torch.equal(tensor, exported[name]), name

"""Training end to end on real shards: outputs, exact resume after kill -9, torchrun DDP."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from taxoclip.errors import InputError, UsageError
from taxoclip.train import TrainConfig, TrainingError, train

COMMON = ["--batch-size", "16", "--warmup", "2", "--lr", "1e-3", "--log-every", "1", "-q"]


KILL_AFTER_CHECKPOINT = Path(__file__).with_name("kill_after_checkpoint.py")


def run_train(
    *args: str, torchrun: int = 0, kill_at: int | None = None
) -> subprocess.CompletedProcess:
    """``taxoclip train ARGS`` in a subprocess (under torchrun with ``torchrun`` processes);
    with ``kill_at`` it kills itself right after its step-``kill_at`` checkpoint."""
    launcher = [sys.executable]
    if torchrun:
        port = str(29500 + os.getpid() % 1000)
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(torchrun)]
        launcher += ["--master_port", port]
    if kill_at is None:
        program = ["-m", "taxoclip", "train"]
    else:
        program = [str(KILL_AFTER_CHECKPOINT), str(kill_at)]
    return subprocess.run(
        [*launcher, *program, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
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
        )
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


def same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    first = load_file(a / "model" / "open_clip_model.safetensors")
    second = load_file(b / "model" / "open_clip_model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].shape == second[name].shape, name
        if atol:
            assert torch.allclose(first[name], second[name], atol=atol, rtol=0), name
        else:
            assert torch.equal(first[name], second[name]), name


def killed_then_resumed(args: list[str], run: Path, kill_at: int, torchrun: int = 0) -> None:
    """``kill -9`` of (rank 0 of) the run right after its step-``kill_at`` checkpoint (a
    checkpoint hook: deterministic, no timing), then ``--resume latest``."""
    killed = run_train(*args, "--out", str(run), torchrun=torchrun, kill_at=kill_at)
    assert killed.returncode != 0 and not (run / "model").exists(), killed.stderr[-2000:]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == kill_at
    resumed = run_train(*args, "--out", str(run), "--resume", "latest", torchrun=torchrun)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_kill_9_then_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_shards, tmp_path):
    # Two DataLoader workers, each streaming its own shards; the kill falls inside a
    # shuffle block and a shard, so the resume re-reads both to the recorded position.
    args = [
        "--data",
        tiny_shards,
        "--steps",
        "12",
        "--checkpoint-every",
        "5",
        "--workers",
        "2",
        "--shuffle-buffer",
        "24",
        *COMMON,
    ]
    straight = tmp_path / "straight"
    done = run_train(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr
    killed_then_resumed(args, tmp_path / "killed", kill_at=5)
    same_weights(straight, tmp_path / "killed")
    # The log is continuous: one line per step, the same losses as the straight run.
    assert losses(tmp_path / "killed") == losses(straight)


#: A checkpoint's keys and a reader position's, as checkpoints were written before the run's
#: state became typed pieces (train/state.py): the format those files keep being read in.
CHECKPOINT_KEYS = {
    "epoch",
    "step",
    "name",
    "state_dict",
    "replay_proj",
    "optimizer",
    "scaler",
    "torch_rng",
    "counters",
    "config",
    "layout",
    "readers",
    "replay_readers",
}
POSITION_KEYS = {
    "shard",
    "offset",
    "block",
    "taken",
    "counted",
    "n_read_errors",
    "n_missing",
    "n_skipped",
    "n_substituted",
    "bad_shards",
}


def test_a_checkpoint_in_the_plain_dict_format_resumes_exactly(tiny_shards, tmp_path):
    common = dict(
        data=tiny_shards,
        steps=8,
        batch_size=16,
        warmup=2,
        lr=1e-3,
        log_every=1,
        workers=0,
        shuffle_buffer=24,
        checkpoint_every=4,
        replay=tiny_shards,
        replay_batch_size=4,
    )
    straight = tmp_path / "straight"
    train(TrainConfig(out=str(straight), **common))
    saved = torch.load(straight / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert set(saved) == CHECKPOINT_KEYS
    assert saved["counters"] == {"n_substituted": 0, "samples": 64}
    for position in saved["readers"] + saved["replay_readers"]:
        assert set(position) == POSITION_KEYS and isinstance(position["bad_shards"], list)
    # Rebuilt key by key from plain values, as an old writer would have left it.
    plain = {key: saved[key] for key in sorted(CHECKPOINT_KEYS)}
    plain["readers"] = [dict(position) for position in saved["readers"]]
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    torch.save(plain, resumed / "checkpoints" / "step_00000004.pt")
    pointer = {"file": "step_00000004.pt", "step": 4}
    (resumed / "checkpoints" / "latest.json").write_text(json.dumps(pointer))
    train(TrainConfig(out=str(resumed), resume="latest", **common))
    same_weights(straight, resumed)
    assert losses(resumed) == {k: v for k, v in losses(straight).items() if k >= 4}


def test_torchrun_ddp_and_fsdp_resume_exactly_and_agree(tiny_synth, tiny_shards, tmp_path):
    """Two CPU processes (gloo): DDP killed and resumed ends bit-identical to DDP
    straight; FSDP (killed and resumed too) gives the same per-step losses within 1e-4
    and exports whole tensors equal to DDP's; validation runs under both."""
    args = [
        "--data",
        tiny_shards,
        "--steps",
        "8",
        "--checkpoint-every",
        "3",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--log-every",
        "1",
        "--shuffle-buffer",
        "16",
        "--val",
        str(tiny_synth / "test"),
        "-q",
    ]
    ddp = tmp_path / "ddp"
    done = run_train(*args, "--out", str(ddp), torchrun=2)
    assert done.returncode == 0, done.stderr[-3000:]
    params = json.loads((ddp / "params.json").read_text())
    assert params["world_size"] == 2 and params["readers"] == 2
    killed_then_resumed(args, tmp_path / "ddp-killed", kill_at=3, torchrun=2)
    same_weights(ddp, tmp_path / "ddp-killed")
    assert losses(tmp_path / "ddp-killed") == losses(ddp)

    fsdp = tmp_path / "fsdp"
    killed_then_resumed([*args, "--fsdp"], fsdp, kill_at=3, torchrun=2)
    reference, sharded = losses(ddp), losses(fsdp)
    assert reference.keys() == sharded.keys() == set(range(8))
    for step in reference:
        assert abs(reference[step] - sharded[step]) < 1e-4, (step, reference, sharded)
    same_weights(ddp, fsdp, atol=1e-4)  # model/ holds whole tensors, as DDP's
    checkpoint = torch.load(fsdp / "checkpoints" / "step_00000006.pt", weights_only=True)
    expected = torch.load(ddp / "checkpoints" / "step_00000006.pt", weights_only=True)
    for name, tensor in expected["state_dict"].items():
        assert checkpoint["state_dict"][name].shape == tensor.shape, name
        assert torch.allclose(checkpoint["state_dict"][name], tensor, atol=1e-4, rtol=0), name
    for run in (ddp, fsdp):
        vals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [v["step"] for v in vals if "val_zeroshot_top1" in v] == [7]  # 1 epoch = 8 steps

    # Another world size cannot continue the data order: refused, naming the difference.
    with pytest.raises(UsageError, match="processes: 2 in the checkpoint, 1 now"):
        train(
            TrainConfig(
                data=tiny_shards,
                out=str(ddp),
                steps=8,
                batch_size=8,
                warmup=2,
                lr=1e-3,
                log_every=1,
                workers=0,
                shuffle_buffer=16,
                val=str(tiny_synth / "test"),
                resume="latest",
            )
        )


def test_a_truncated_shard_is_reported_and_the_run_goes_on(tiny_synth, tmp_path):
    folder = tiny_synth / "shards"
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(folder / "shard-000000.tar", data)
    shutil.copy(folder / "sizes.json", data)
    whole = (folder / "shard-000001.tar").read_bytes()
    (data / "shard-000001.tar").write_bytes(whole[: len(whole) // 2])
    result = train(
        TrainConfig(
            data=str(data / "shard-{000000..000001}.tar"),
            out=str(tmp_path / "run"),
            steps=8,
            batch_size=16,
            warmup=1,
            workers=0,
            shuffle_buffer=16,
        )
    )
    assert result.steps == 8 and (tmp_path / "run" / "model").is_dir()
    assert result.n_read_errors > 0
    assert result.bad_shards == [str(data / "shard-000001.tar")]
    assert any("damaged shards" in line for line in result.lines())


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
    config = TrainConfig(
        data=tiny_shards,
        out=str(run),
        steps=8,
        batch_size=16,
        warmup=2,
        checkpoint_every=2,
        workers=0,
    )
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
    train(
        TrainConfig(
            data=tiny_shards,
            out=str(run),
            steps=2,
            batch_size=16,
            warmup=1,
            checkpoint_every=1,
            workers=0,
        )
    )
    with pytest.raises(UsageError, match="batch_size: 16 in the checkpoint, 8 now"):
        train(
            TrainConfig(
                data=tiny_shards,
                out=str(run),
                steps=2,
                batch_size=8,
                warmup=1,
                checkpoint_every=1,
                workers=0,
                resume="latest",
            )
        )
    with pytest.raises(InputError):
        train(
            TrainConfig(
                data=tiny_shards,
                out=str(tmp_path / "x"),
                steps=1,
                batch_size=16,
                model=str(tmp_path / "no-such.json"),
            )
        )


def test_replay_run_keeps_the_second_projection_out_of_the_model(tiny_shards, tmp_path):
    run = tmp_path / "replay"
    train(
        TrainConfig(
            data=tiny_shards,
            out=str(run),
            steps=2,
            batch_size=16,
            warmup=1,
            replay=tiny_shards,
            replay_ratio=0.2,
            checkpoint_every=2,
            workers=0,
        )
    )
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


def test_lock_image_trains_only_the_last_groups_of_the_image_tower(tiny_shards, tmp_path):
    from taxoclip.train.setup import build_model

    run = tmp_path / "locked"
    config = TrainConfig(
        data=tiny_shards, out=str(run), steps=2, batch_size=16, warmup=1, lock_image=2, workers=0
    )
    train(config)
    start = build_model(config, None).model.state_dict()  # the same seeded start
    trained = load_file(run / "model" / "open_clip_model.safetensors")
    last = len([k for k in start if k.endswith(".ln_1.weight") and "visual" in k]) - 1
    unlocked = ("visual.proj", "visual.ln_post.", f"visual.transformer.resblocks.{last}.")
    for name, tensor in start.items():
        moved = not torch.equal(tensor, trained[name])
        if name.startswith(unlocked):
            assert moved or not name.endswith("weight"), f"{name} should train"
        elif name.startswith("visual."):
            assert not moved, f"{name} should stay frozen"
    assert any(  # the text tower still trains
        not torch.equal(start[k], trained[k]) for k in start if k.startswith("transformer.")
    )
    assert json.loads((run / "params.json").read_text())["lock_image"] == 2
    with pytest.raises(UsageError, match="--lock-image"):
        train(TrainConfig(data=tiny_shards, out=str(tmp_path / "bad"), lock_image=-1))


def test_the_loss_is_reduced_over_ranks_only_at_log_steps(tiny_shards, tmp_path, monkeypatch):
    import taxoclip.train.trainer as trainer

    calls = []
    real = trainer.mean_over_ranks
    monkeypatch.setattr(trainer, "mean_over_ranks", lambda v, env: calls.append(1) or real(v, env))
    run = tmp_path / "quiet"
    train(
        TrainConfig(
            data=tiny_shards, out=str(run), steps=6, batch_size=16, warmup=1, log_every=3, workers=0
        )
    )
    assert len(calls) == 3 and sorted(losses(run)) == [0, 2, 5]  # first, every 3rd, last


def test_caption_text_trains_on_a_general_corpus(tmp_path):
    """Stage 1 of the two stages: the web corpus' plain captions, identical ones positives."""
    from taxoclip.data import ShardSet, read_shards
    from taxoclip.synth import SynthConfig, generate
    from taxoclip.train.data import text_type_for_step

    synth = tmp_path / "synth"
    generate(synth, SynthConfig(species=10, images_per_species=4, seed=2, web=120), progress=False)
    web = ShardSet.load(synth / "web" / "shards", prefix="web").pattern
    run = tmp_path / "stage1"
    result = train(
        TrainConfig(
            data=web,
            out=str(run),
            text_type="caption",
            caption_positives=True,
            steps=3,
            batch_size=16,
            warmup=1,
            workers=0,
        )
    )
    assert result.steps == 3 and (run / "model" / "open_clip_model.safetensors").is_file()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["text_type"] for r in logged} == {"caption"}
    assert text_type_for_step(0, 5, "caption") == "caption"
    # the corpus has no taxonomic captions: any other text type finds nothing to read
    assert all("taxon.txt" not in s for s in read_shards(web, decode=False))

"""``taxoclip study sweep`` end to end on a tiny SynthToL (plumbing: two configurations, a
few steps), the criterion against the numbers in the files, and the study's new flags.

The choice is recomputed here from sweep-runs.json's raw values (each run's seen-species
top-1 and web recall@5, the general model's), independently of the code under test.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from taxoclip.cli import make_config, parse
from taxoclip.errors import UsageError
from taxoclip.study import ScalingConfig, SweepConfig
from taxoclip.study.config import PRESETS, SWEEP_CRITERION, apply_preset
from taxoclip.study.record import StudyRun
from taxoclip.study.sweep import Recipe, choose, score
from taxoclip.study.sweep import run as run_sweep

BATCH = 16
LR = 3e-4
EPOCHS = (1, 2)
REPLAY = 0.3


def _config(out: Path, **changes) -> SweepConfig:
    return SweepConfig(
        out=out,
        lrs=[LR],
        epochs=list(EPOCHS),
        replay_ratios=[REPLAY],
        curve_epochs=[1],
        species=16,
        images_per_species=8,
        image_size=32,
        web=200,
        world_seeds=[0],
        stage1_epochs=1,
        batch_size=BATCH,
        workers=0,  # no DataLoader process to start per run
        seed=0,
        device="cpu",
        progress=False,
        **changes,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = run_sweep(_config(out))
    return result, json.loads((out / "sweep.json").read_text())


def _raw(out: Path) -> dict:
    return json.loads((out / "sweep-runs.json").read_text())


def test_every_configuration_trained_as_its_recipe_says(sweep):
    result, data = sweep
    runs = _raw(result.out)["runs"]
    general = runs["w0/general"]
    assert sorted(runs) == ["w0/general", "w0/s0/lr0.0003-e1-r0.3", "w0/s0/lr0.0003-e2-r0.3"]
    stage1 = json.loads((Path(general["model"]).parent / "params.json").read_text())
    assert stage1["text_type"] == "caption"  # the study's stage 1
    for epochs in EPOCHS:
        run = runs[f"w0/s0/lr0.0003-e{epochs}-r0.3"]
        params = json.loads((Path(run["run"]) / "params.json").read_text())
        # the flags reach the training config the run recorded
        assert params["lr"] == LR and params["replay_ratio"] == REPLAY
        assert params["model"] == general["model"] and params["text_type"] == "random"
        assert run["steps"] == epochs * (params["n_train_samples"] // BATCH)
        assert run["lr"] == LR and run["replay_ratio"] == REPLAY
        assert (Path(run["analysis"]) / "metrics.json").is_file()
        assert not (Path(run["run"]) / "checkpoints").exists()  # dropped, as the study does


def test_the_choice_follows_the_criterion_on_the_numbers_in_the_file(sweep):
    result, data = sweep
    assert data["criterion"] == SWEEP_CRITERION
    assert SWEEP_CRITERION in "\n".join(result.lines())
    runs = _raw(result.out)["runs"]
    general_r5 = runs["w0/general"]["values"]["web.retrieval_r5"]["value"]
    expected = []
    for entry in data["configurations"]:
        values = runs[f"w0/s0/{entry['name']}"]["values"]
        top1 = values["zero_shot.seen_top1"]["value"]
        share = values["web.retrieval_r5"]["value"] / general_r5
        assert entry["mean_seen_top1"] == pytest.approx(top1)
        assert entry["mean_web_share"] == pytest.approx(share)
        assert entry["eligible"] == (share >= 0.9)
        if share >= 0.9:
            expected.append((-round(top1, 9), entry["epochs"], entry["name"]))
    chosen = [c["name"] for c in data["configurations"] if c["chosen"]]
    if expected:
        assert chosen == [min(expected)[2]] and data["chosen"]["name"] == min(expected)[2]
    else:
        assert chosen == [] and data["chosen"] is None and "none chosen" in data["why"]
    assert result.table.count("| 0.0003 |") == 2  # one row per configuration
    assert (result.out / "sweep.md").read_text().startswith(result.table)
    assert "Criterion (fixed before the sweep)" in result.table


def test_learning_curve_inside_the_longest_run(sweep):
    result, data = sweep
    steps_per_epoch = data["configurations"][0]["steps"]["0"]  # the 1-epoch run
    inside = [p for p in data["curves"] if not p["final"]]
    assert [(p["run_epochs"], p["epochs"], p["steps"]) for p in inside] == [(2, 1, steps_per_epoch)]
    assert 0.0 <= inside[0]["seen_top1"] <= 1.0 and 0.0 <= inside[0]["web_r5"] <= 1.0
    finals = sorted((p["epochs"], p["steps"]) for p in data["curves"] if p["final"])
    assert finals == [(1, steps_per_epoch), (2, 2 * steps_per_epoch)]
    longest = _raw(result.out)["runs"]["w0/s0/lr0.0003-e2-r0.3"]
    assert longest["seconds"]["curve"] == pytest.approx(inside[0]["seconds"], abs=0.02)


def test_resume_skips_what_was_measured(sweep):
    result, data = sweep
    raw = _raw(result.out)
    kept = Path(raw["runs"]["w0/s0/lr0.0003-e2-r0.3"]["model"])
    stamp = kept.stat().st_mtime_ns
    del raw["runs"]["w0/s0/lr0.0003-e1-r0.3"]  # as if cut short before this one
    (result.out / "sweep-runs.json").write_text(json.dumps(raw))
    again = run_sweep(_config(result.out, resume=True))
    assert kept.stat().st_mtime_ns == stamp  # not trained again
    assert [c["name"] for c in again.sweep["configurations"]] == [
        c["name"] for c in data["configurations"]
    ]
    assert None not in [c["mean_seen_top1"] for c in again.sweep["configurations"]]
    assert len(_raw(result.out)["runs"]) == 3
    with pytest.raises(UsageError, match="--resume"):
        run_sweep(_config(result.out))


def _scored(index: int, epochs: int, top1: float | None, share: float | None):
    run = StudyRun.from_json(
        {
            "kind": "stage2",
            "steps": epochs * 10,
            "values": {
                "zero_shot.seen_top1": {"value": top1},
                "web.retrieval_r5": {"value": None if share is None else share * 0.5},
            },
        }
    )
    return score(Recipe(1e-4, epochs, 0.2), index, {0: run}, {0: 0.5}, 0.9)


def test_choose_is_the_criterion():
    a = _scored(0, 12, 0.40, 0.95)
    b = _scored(1, 6, 0.40, 0.91)  # ties with a: fewer epochs wins
    c = _scored(2, 6, 0.55, 0.85)  # better, but forgets the web: not eligible
    d = _scored(3, 3, None, 0.99)  # not measured: not eligible
    assert (a.eligible, b.eligible, c.eligible, d.eligible) == (True, True, False, False)
    assert a.mean_web_share == pytest.approx(0.95)
    assert choose([a, b, c, d]) is b
    assert choose([a, c]) is a
    assert choose([c, d]) is None


def test_scaling_flags_and_the_gpu_preset():
    command, args = parse(
        ["study", "scaling", "--out", "x", "--lr", "1e-4", "--replay-ratio", "0.3"]
        + ["--preset", "gpu", "--seeds", "4"]
    )
    config = make_config(command, args)
    assert (config.lr, config.replay_ratio, config.preset) == (1e-4, 0.3, "gpu")
    resolved = apply_preset(config)
    assert resolved.seeds == 4  # given explicitly (not at its default): kept
    defaults = ScalingConfig(out="x")
    for name, value in PRESETS["gpu"].items():
        if name != "seeds":
            assert getattr(resolved, name) == value, name
            assert getattr(defaults, name) != value, name  # the preset changes it
    untouched = {f.name for f in fields(ScalingConfig)} - set(PRESETS["gpu"]) - {"preset", "out"}
    for name in untouched - {"lr", "replay_ratio"}:
        assert getattr(resolved, name) == getattr(defaults, name), name
    assert apply_preset(defaults) is defaults
    with pytest.raises(UsageError, match="--replay-ratio"):
        ScalingConfig(out="x", replay_ratio=1.0)
    with pytest.raises(UsageError, match="--lrs"):
        SweepConfig(out="x", lrs=[0.0])

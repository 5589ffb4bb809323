"""``taxoclip study scaling`` end to end on a tiny SynthToL (plumbing, not science: the
default study's numbers are a benchmark, bench/study_claims.py).

Counts are recomputed here from SynthToL's own train/metadata.csv and from the written
shards, independently of the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from taxoclip.cli import main
from taxoclip.data import read_shards
from taxoclip.errors import UsageError
from taxoclip.report import write_report
from taxoclip.study import ScalingConfig
from taxoclip.study import run as run_study
from taxoclip.study.record import SCHEMA_FILE, StudyRecord
from taxoclip.study.scaling import subset_count
from taxoclip.synth import SynthConfig, generate

FRACTIONS = (0.34, 0.67, 1.0)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    config = ScalingConfig(
        out=out,
        species=24,
        images_per_species=10,
        image_size=32,
        web=300,
        sizes=FRACTIONS,
        seeds=len(SEEDS),
        world_seeds=[0],
        epochs=1,
        stage1_epochs=1,
        batch_size=32,
        seed=0,
        device="cpu",
        progress=False,
    )
    result = run_study(config)
    return result, json.loads((out / "study.json").read_text())


@pytest.fixture(scope="module")
def train_meta(study):
    return pd.read_csv(study[0].out / "world-0" / "synth" / "train" / "metadata.csv")


def _expected_counts(train_meta: pd.DataFrame) -> list[int]:
    per_species = train_meta.groupby("species_id").size()
    return [int(sum(max(1, int(f * n + 1e-9)) for n in per_species)) for f in FRACTIONS]


def test_every_run_of_the_design_with_a_model(study, train_meta):
    result, data = study
    n = _expected_counts(train_meta)
    per_seed = [f"size-{c}" for c in n] + [f"flat-{n[-1]}", f"no-replay-{n[-1]}", "untrained"]
    expected = ["w0/general"] + [f"w0/s{s}/{name}" for s in SEEDS for name in per_seed]
    assert sorted(data["runs"]) == sorted(expected)
    for name, run in data["runs"].items():
        model = result.runs[name]
        assert (model / "open_clip_config.json").is_file(), name
        assert (model / "open_clip_model.safetensors").is_file(), name
        if run["kind"] not in ("general", "untrained"):
            assert (Path(run["analysis"]) / "metrics.json").is_file()
    assert data["model_seeds"] == list(SEEDS) and data["recipe"] == "two-stage"
    assert json.loads((result.out / "runs.json").read_text()).keys() == data["runs"].keys()


def test_sizes_follow_the_train_metadata_and_keep_the_species(study, train_meta):
    result, data = study
    counts = _expected_counts(train_meta)
    assert data["sizes"] == counts and data["worlds"][0]["sizes"] == counts
    assert all(b > a for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] == len(train_meta)
    species = set(train_meta["species_id"].astype(int))
    keys_by_size = []
    for n in counts:
        run = data["runs"][f"w0/s0/size-{n}"]
        samples = list(read_shards(run["shards"], decode=False))
        assert len(samples) == n
        assert {int(s["json"]["species_id"]) for s in samples} == species
        keys_by_size.append({s["__key__"] for s in samples})
        params = json.loads((Path(run["run"]) / "params.json").read_text())
        assert params["n_train_samples"] == n
    assert keys_by_size[0] < keys_by_size[1] < keys_by_size[2]  # nested subsets
    assert subset_count(6, 0.34) == 2 and subset_count(1, 0.1) == 1


def test_stage_two_starts_from_the_general_model_and_replays_the_web(study):
    result, data = study
    general = data["runs"]["w0/general"]["model"]
    stage1 = json.loads((result.out / "world-0" / "stage1" / "params.json").read_text())
    assert stage1["text_type"] == "caption" and stage1["caption_positives"] is True
    assert "/web/shards/web-" in stage1["data"]
    steps = set()
    for name, run in data["runs"].items():
        if run["kind"] in ("general", "untrained"):
            continue
        params = json.loads((Path(run["run"]) / "params.json").read_text())
        assert params["model"] == general, name  # from the stage-1 weights
        assert params["text_type"] == ("sci" if run["kind"] == "flat" else "random")
        if run["kind"] == "no_replay":
            assert params["replay"] is None
        else:
            assert params["replay"] == stage1["data"] and params["replay_batch_size"] is None
        steps.add(run["steps"])
    assert steps == {data["steps_per_run"]}  # the same steps for every stage-2 run


def test_flat_run_trains_on_scientific_names_only(study, train_meta):
    result, data = study
    flat = next(r for r in data["runs"].values() if r["kind"] == "flat")
    by_key = {
        p.rsplit("/", 1)[-1][:-4]: row
        for p, row in zip(train_meta["filepath"], train_meta.to_dict("records"), strict=True)
    }
    for sample in read_shards(flat["shards"], decode=False, require=("jpg", "sci.txt")):
        row = by_key[sample["__key__"]]
        assert sample["sci.txt"] == f"a photo of {row['species']}."
        assert row["kingdom"] not in sample["sci.txt"] and row["family"] not in sample["sci.txt"]


def test_every_model_measured_the_same_way(study):
    result, data = study
    keys = None
    for name, run in data["runs"].items():
        values = run["values"]
        keys = keys or set(values)
        assert set(values) == keys, name
        for key in (
            "zero_shot.seen_top1",
            "zero_shot.unseen_genus_top1",
            "web.retrieval_r5",
            "web.crest_auc",
        ):
            assert values[key]["value"] is None or 0.0 <= values[key]["value"] <= 1.0
        metrics = json.loads((Path(run["analysis"]) / "metrics.json").read_text())
        cell = metrics["metrics"]["taxonomic"]["stats"]["spearman"]
        assert values["taxonomic.spearman"]["value"] == cell["value"]
        assert values["taxonomic.spearman"]["null_mean"] == cell["null"]["mean"]
    assert {"separation_sex.probe_accuracy", "orthogonality_life_stage.fraction_outside"} <= keys


def test_claims_and_trends_in_their_stable_form(study):
    result, data = study
    assert data["claims"] and data["trends"] and data["verdict_rule"]
    verdicts = {"holds", "does not hold", "inconclusive"}
    n_max = data["sizes"][-1]
    for claim in data["claims"]:
        assert set(claim) >= {
            "claim",
            "statistic",
            "size",
            "mean",
            "sd",
            "n_seeds",
            "baselines",
            "verdict",
        }
        assert set(claim["baselines"]) == {"untrained", "general", "flat", "no_replay", "null"}
        assert claim["verdict"] in verdicts and claim["size"] == n_max
        assert claim["n_seeds"] in (0, len(SEEDS))
        values = [
            data["runs"][f"w0/s{s}/size-{n_max}"]["values"][claim["statistic"]]["value"]
            for s in SEEDS
        ]
        if None not in values:
            assert claim["mean"] == pytest.approx(sum(values) / len(values))
    for entry in data["trends"]:
        assert set(entry) >= {"claim", "statistic", "slope", "ci_low", "ci_high", "verdict"}
        assert entry["verdict"] in verdicts
    # every statistic, not only the claims', as mean and sd per kind and size
    kinds = {
        (r["kind"], r["size"])
        for r in data["statistics"]
        if r["statistic"] == "trait_hue.pc1_spearman"
    }
    assert kinds == {
        *(("stage2", n) for n in data["sizes"]),
        ("flat", n_max),
        ("no_replay", n_max),
        ("general", None),
        ("untrained", None),
    }


def test_plot_table_and_report(study, tmp_path):
    result, data = study
    with Image.open(result.out / "scaling.png") as image:
        image.load()
        assert image.size[0] > 400
    lines = result.table.splitlines()
    assert "untrained" in lines[0] and "general" in lines[0] and "no_replay" in lines[0]
    assert any(line.startswith("sexes separated") for line in lines)
    html = write_report([result.out], tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="claims"' in html and 'id="study"' in html
    assert html.index('id="claims"') < html.index('id="study"')  # the claims come first
    assert "sexes separated" in html and "replicate(s)" in html


def _check_schema(document: dict) -> None:
    """``document`` against study/study.schema.json (jsonschema is a dev dependency)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_study_json_follows_its_schema_and_its_record(study):
    result, data = study
    _check_schema(data)
    # The record reads and writes the file unchanged, and is what the result holds.
    assert StudyRecord.from_json(data).to_json() == data
    assert result.study.to_json() == data
    runs = json.loads((result.out / "runs.json").read_text())
    assert runs == data["runs"]
    flat_key = "w0/s0/flat-" + str(data["sizes"][-1])
    flat = result.study.runs[flat_key]
    assert flat.kind == "flat" and flat.text_type == "sci" and flat.steps >= 1
    seen = data["runs"][flat_key]["values"]["zero_shot.seen_top1"]["value"]
    assert flat.value("zero_shot.seen_top1") == seen
    # The demo's one-seed form of it (kind "claims": no design; runs need no model).
    stage2 = {
        "kind": "stage2",
        "world": 0,
        "seed": 0,
        "n_train": 120,
        "values": data["runs"][flat_key]["values"],
    }
    demo = {
        "kind": "claims",
        "recipe": "two-stage",
        "budget": "one run",
        "note": "one seed",
        "claims": data["claims"],
        "trends": [],
        "runs": {"w0/s0/stage2": stage2, "w0/general": data["runs"]["w0/general"]},
    }
    _check_schema(demo)


def test_resume_keeps_what_was_measured_and_runs_the_rest(study):
    result, data = study
    runs = json.loads((result.out / "runs.json").read_text())
    dropped = "w0/s1/no-replay-" + str(data["sizes"][-1])
    kept_model = Path(runs["w0/s0/flat-" + str(data["sizes"][-1])]["model"])
    stamp = kept_model.stat().st_mtime_ns
    del runs[dropped]  # as if the study had stopped before this run was measured
    (result.out / "runs.json").write_text(json.dumps(runs))
    config = ScalingConfig(
        out=result.out,
        species=24,
        images_per_species=10,
        image_size=32,
        web=300,
        sizes=FRACTIONS,
        seeds=len(SEEDS),
        world_seeds=[0],
        epochs=1,
        stage1_epochs=1,
        batch_size=32,
        seed=0,
        device="cpu",
        progress=False,
        resume=True,
    )
    again = run_study(config)
    assert set(again.study.runs) == set(data["runs"])
    assert kept_model.stat().st_mtime_ns == stamp  # not trained again
    assert again.study.runs[dropped].steps == data["steps_per_run"]  # trained now
    assert not (Path(again.study.runs[dropped].run) / "checkpoints").exists()
    with pytest.raises(UsageError, match="--resume"):
        run_study(ScalingConfig(**{**config.to_json(), "resume": False}))


def test_scratch_recipe_has_no_general_model(tmp_path):
    result = run_study(
        ScalingConfig(
            out=tmp_path / "s",
            recipe="scratch",
            species=16,
            images_per_species=8,
            sizes=FRACTIONS,
            seeds=1,
            world_seeds=[1],
            epochs=1,
            batch_size=16,
            ablation=True,
            device="cpu",
            progress=False,
        )
    )
    kinds = sorted(r.kind for r in result.study.runs.values())
    assert kinds == ["flat", "stage2", "stage2", "stage2", "untrained"]
    assert not (result.out / "world-1" / "synth" / "web").exists()
    assert all(c.baselines["general"] is None for c in result.study.claims)
    _check_schema(json.loads((result.out / "study.json").read_text()))


def _status(argv: list[str]) -> int:
    """The exit status of ``taxoclip ARGV``: a flag argparse cannot parse exits from within
    argparse (status 2), a value the config refuses returns 2."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(UsageError):
        ScalingConfig(out=tmp_path, sizes=(0.5, 1.0))
    with pytest.raises(UsageError):
        ScalingConfig(out=tmp_path, sizes=(0.5, 1.0, 1.5))
    assert main(["study", "scaling", "--out", str(tmp_path / "x"), "--sizes", "0.5,1"]) == 2
    assert "at least 3" in capsys.readouterr().err
    assert _status(["study", "scaling", "--out", str(tmp_path / "x"), "--sizes", "a,b,c"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["study", "scaling", "--help"])
    assert exc.value.code == 0
    assert "--ablation" in capsys.readouterr().out
    assert _status(["study", "scaling", "--out", str(tmp_path / "x"), "--world-seeds", "0,0"]) == 2
    assert _status(["study", "scaling", "--out", str(tmp_path / "x"), "--recipe", "x"]) == 2
    with pytest.raises(UsageError, match="single --world-seeds"):
        ScalingConfig(out=tmp_path, data=tmp_path, world_seeds=[0, 1])
    synth = tmp_path / "plain"
    generate(synth, SynthConfig(species=12, images_per_species=8), progress=False)
    with pytest.raises(UsageError, match="no web corpus"):
        run_study(ScalingConfig(out=tmp_path / "y", data=synth, world_seeds=[0], batch_size=8))
    assert not (tmp_path / "x").exists()
    assert math.isfinite(FRACTIONS[0])

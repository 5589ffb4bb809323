"""``taxoclip study scaling`` end to end on a tiny SynthToL (plumbing, not science).

Counts are recomputed here from SynthToL's own train/metadata.csv and from the written
shards, independently of the code under test.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from PIL import Image

from taxoclip.cli import main
from taxoclip.data import read_shards
from taxoclip.errors import UsageError
from taxoclip.report import write_report
from taxoclip.study import ScalingConfig
from taxoclip.study import run as run_study
from taxoclip.study.scaling import subset_count

FRACTIONS = (0.34, 0.67, 1.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    config = ScalingConfig(
        out=out, species=20, images_per_species=8, image_size=32, sizes=FRACTIONS, epochs=1,
        batch_size=32, ablation=True, seed=0, device="cpu", progress=False,
    )  # fmt: skip
    result = run_study(config)
    return result, json.loads((out / "study.json").read_text())


@pytest.fixture(scope="module")
def train_meta(study):
    return pd.read_csv(study[0].out / "synth" / "train" / "metadata.csv")


def _expected_counts(train_meta: pd.DataFrame) -> list[int]:
    per_species = train_meta.groupby("species_id").size()
    return [int(sum(max(1, int(f * n + 1e-9)) for n in per_species)) for f in FRACTIONS]


def test_three_sizes_and_a_flat_run_each_with_a_model(study, train_meta):
    result, data = study
    counts = _expected_counts(train_meta)
    names = [f"size-{n}" for n in counts] + [f"flat-{counts[-1]}"]
    assert list(data["runs"]) == names
    for name in names:
        assert (result.out / "runs" / name / "model" / "open_clip_config.json").is_file()
        assert (result.out / "runs" / name / "model" / "open_clip_model.safetensors").is_file()
        assert (result.out / "analysis" / name / "metrics.json").is_file()
    assert (result.out / "analysis" / "untrained" / "metrics.json").is_file()


def test_sizes_follow_the_train_metadata_and_keep_the_species(study, train_meta):
    result, data = study
    counts = _expected_counts(train_meta)
    assert data["sizes"] == counts
    assert all(b > a for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] == len(train_meta)
    species = set(train_meta["species_id"].astype(int))
    keys_by_size = []
    for n in counts:
        run = data["runs"][f"size-{n}"]
        samples = list(read_shards(run["shards"], decode=False))
        assert len(samples) == n
        assert {int(s["json"]["species_id"]) for s in samples} == species
        keys_by_size.append({s["__key__"] for s in samples})
        params = json.loads((result.out / "runs" / f"size-{n}" / "params.json").read_text())
        assert params["n_train_samples"] == n
    assert keys_by_size[0] < keys_by_size[1] < keys_by_size[2]  # nested subsets
    assert subset_count(6, 0.34) == 2 and subset_count(1, 0.1) == 1


def test_same_steps_budget_is_recorded_and_kept(study):
    result, data = study
    assert data["budget"] == "steps" and data["budget_why"]
    steps = {run["steps"] for run in data["runs"].values()}
    assert steps == {data["steps_per_run"]} and data["steps_per_run"] >= 1


def test_flat_run_trains_on_scientific_names_only(study, train_meta):
    result, data = study
    for name, run in data["runs"].items():
        params = json.loads((result.out / "runs" / name / "params.json").read_text())
        expected = "sci" if name.startswith("flat-") else "random"
        assert params["text_type"] == expected == run["text_type"]
    flat = next(r for n, r in data["runs"].items() if n.startswith("flat-"))
    assert flat["kind"] == "flat" and flat["n_train"] == data["sizes"][-1]
    by_key = {p.rsplit("/", 1)[-1][:-4]: row for p, row in zip(
        train_meta["filepath"], train_meta.to_dict("records"), strict=True)}  # fmt: skip
    for sample in read_shards(flat["shards"], decode=False, require=("jpg", "sci.txt")):
        row = by_key[sample["__key__"]]
        assert sample["sci.txt"] == f"a photo of {row['species']}."
        assert row["kingdom"] not in sample["sci.txt"] and row["family"] not in sample["sci.txt"]


def test_every_metric_for_every_run_with_baseline_and_null(study):
    result, data = study
    baseline = json.loads((result.out / "analysis" / "untrained" / "metrics.json").read_text())
    for name, run in data["runs"].items():
        metrics = json.loads((result.out / "analysis" / name / "metrics.json").read_text())
        expected = {f"{m}.{s}" for m, e in metrics["metrics"].items() for s in e["stats"]}
        assert expected and set(run["stats"]) == expected
        for key, entry in run["stats"].items():
            metric, stat = key.split(".", 1)
            assert entry["value"] == metrics["metrics"][metric]["stats"][stat]["value"]
            assert entry["baseline_value"] == baseline["metrics"][metric]["stats"][stat]["value"]
            if metrics["metrics"][metric]["stats"][stat]["null"] is not None:
                assert set(entry["null"]) == {"mean", "sd"}
                assert entry["verdict"] in {"holds", "does not hold", "inconclusive"}
        for key in ("zero_shot.seen_top1", "zero_shot.unseen_top1"):
            assert 0.0 <= run["zero_shot"][key] <= 1.0
        assert run["seconds"]["train"] > 0
    base_zero = data["baseline"]["zero_shot"]
    assert all(0.0 <= v <= 1.0 for v in base_zero.values())
    for row in data["rows"]:
        assert row["data_size"] in data["sizes"]
        assert row["ablation"] == row["run"].startswith("flat-")


def test_plot_table_and_report(study, tmp_path):
    result, data = study
    with Image.open(result.out / "scaling.png") as image:
        image.load()
        assert image.size[0] > 400
    lines = result.table.splitlines()
    assert "flat n=" in lines[0] and "untrained" in lines[0]
    assert any(line.startswith("taxonomic.spearman") for line in lines)
    html = write_report([result.out], tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="study"' in html and "flat labels" in html


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
    assert not (tmp_path / "x").exists()
    assert math.isfinite(FRACTIONS[0])

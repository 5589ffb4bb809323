"""taxoclip eval end to end on SynthToL: every task, trained beside untrained, cached."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from taxoclip.evaluate import EvalConfig
from taxoclip.evaluate import run as run_eval
from taxoclip.evaluate.dataset import read_metadata_folder
from taxoclip.evaluate.features import image_features
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "synth"
    generate(
        out, SynthConfig(species=30, images_per_species=8, image_size=32, seed=4), progress=False
    )
    return out


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """A model briefly trained on the synth shards is not needed for the plumbing: a saved
    random model stands in; the trained-vs-untrained gap is measured in the closing notes."""
    return saved_model(tmp_path_factory.mktemp("model") / "m", seed=1)


def test_synth_suite_reports_every_task_beside_the_baseline(synth, trained, tmp_path):
    rows = run_eval(
        EvalConfig(
            model=str(trained),
            data=str(synth),
            suite="synth",
            out=str(tmp_path / "res"),
            cache_dir=str(tmp_path / "cache"),
            device="cpu",
            progress=False,
        )
    ).rows
    tasks = {(r.task, r.metric, r.model) for r in rows}
    for model in ("trained", "untrained"):
        for task, metric in [
            ("seen species", "zero-shot top-1"),
            ("seen species", "zero-shot top-5"),
            ("seen species", "zero-shot top-1 genus"),
            ("seen species", "1-shot"),
            ("seen species", "5-shot"),
            ("seen species", "mistake severity (ranks)"),
            ("unseen species", "zero-shot top-1 family"),
            ("habitat", "linear probe accuracy"),
            ("beak length", "ridge R² (5-fold)"),
        ]:
            assert (task, metric, model) in tasks, (task, metric, model)
    for r in rows:
        if "top" in r.metric or "1-shot" in r.metric or "accuracy" in r.metric:
            assert 0.0 <= r.value <= 1.0, r
    # 2 test images per species here: 5-shot has no query left, reported as NaN, not a crash.
    assert all(r.value != r.value for r in rows if r.metric == "5-shot")
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert len(saved) == len(rows)
    assert (
        (tmp_path / "res" / "results.csv").read_text().startswith("suite,task,metric,value,model,n")
    )


def test_feature_cache_is_used_on_a_rerun(synth, trained, tmp_path, monkeypatch):
    from taxoclip.models import load_model

    loaded = load_model(trained)
    evalset = read_metadata_folder(synth / "test")
    first = image_features(loaded, evalset.filepaths, tmp_path)
    import taxoclip.evaluate.features as features_module

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(features_module, "encode_images", no_encoding)
    second = image_features(loaded, evalset.filepaths, tmp_path)
    assert np.array_equal(first.values, second.values) and np.array_equal(first.ok, second.ok)


def test_missing_files_are_reported_and_the_rest_evaluated(synth, trained, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    lines = (synth / "test" / "metadata.csv").read_text().splitlines()
    rows = [f"{synth / 'test'}/{line}" for line in lines[1:]]  # absolute paths are allowed
    rows.append(rows[0].replace("/images/", "/images/missing-", 1))
    (folder / "metadata.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    evalset = read_metadata_folder(folder)
    assert len(evalset.missing) == 1 and len(evalset) == len(rows) - 1
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "taxoclip",
            "eval",
            "--model",
            str(trained),
            "--data",
            str(folder),
            "-q",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-baseline",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "no such file" in done.stderr and "zero-shot top-1" in done.stdout

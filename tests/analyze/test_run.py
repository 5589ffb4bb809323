"""taxoclip analyze end to end: a tiny SynthToL, a tiny saved model, every output checked.

The model is a saved random initialisation (plumbing, not science); its untrained twin
is drawn from another seed, so the two embeddings differ. Counts are recomputed here from
SynthToL's own ground-truth files, independently of the code under test.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from taxoclip.analyze import (
    AnalyzeConfig,
    compute_metrics,
    load_embeddings,
    read_analysis_data,
    render_plots,
    run,
)
from taxoclip.cli import main
from taxoclip.errors import InputError, UsageError
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed")

SPECIES, PER_SPECIES, MIN_PER = 24, 14, 4
VERDICTS = {"holds", "does not hold", "inconclusive"}
SYNTH_METRICS = {
    "trait_finch_beak_length",
    "trait_hue",
    "trait_elongation",
    "ecological_habitat",
    "taxonomic",
    "separation_sex",
    "separation_sex_monomorphic",
    "separation_life_stage",
    "orthogonality_sex",
    "orthogonality_life_stage",
    "effective_dimension",
}
PLOTS = ("tsne.png", "variants_3d.png", "finch_beak.png")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "synth"
    config = SynthConfig(species=SPECIES, images_per_species=PER_SPECIES, image_size=32)
    generate(out, config, progress=False)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("model") / "m", seed=1)


@pytest.fixture(scope="module")
def analysis(synth, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    result = run(
        AnalyzeConfig(
            model=str(model), data=str(synth), out=str(out), seed=0, device="cpu", progress=False
        )
    )
    return result, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def truth(synth):
    images = pd.read_csv(synth / "images.csv")
    species = pd.read_csv(synth / "species.csv")
    return images.merge(species, on="species_id"), species


def _count_usable(frame: pd.DataFrame, column: str, a: str, b: str) -> int:
    counts = frame.groupby("species_id")[column].value_counts().unstack(fill_value=0)
    for value in (a, b):
        if value not in counts:
            counts[value] = 0
    return int(((counts[a] >= MIN_PER) & (counts[b] >= MIN_PER)).sum())


def _in(value, low, high) -> bool:
    return value is not None and low - 1e-9 <= value <= high + 1e-9


# --------------------------------------------------------------------------- metrics.json


def test_every_metric_is_reported_for_model_and_baseline(analysis):
    _, payload = analysis
    metrics, skipped = payload["metrics"], payload["skipped"]
    assert set(metrics) | set(skipped) == SYNTH_METRICS
    assert all(isinstance(reason, str) and reason for reason in skipped.values())
    assert "verdict_basis" in payload and "centroids" in payload
    for name, entry in metrics.items():
        assert entry["model"] is not None and entry["baseline"] is not None, name
        assert entry["stats"], name
        for stat, item in entry["stats"].items():
            assert isinstance(item["value"], float), (name, stat)
            assert isinstance(item["baseline_value"], float), (name, stat)
            if entry["kind"] == "effective_dimension":
                assert item["null"] is None and item["verdict"] is None
                assert item["higher_is_better"] is None
                continue
            assert set(item["null"]) == {"mean", "sd"}, (name, stat)
            assert item["verdict"] in VERDICTS, (name, stat)


def test_numbers_lie_in_their_ranges(analysis):
    _, payload = analysis
    dim = None
    for name, entry in payload["metrics"].items():
        kind = entry["kind"]
        for side in ("model", "baseline"):
            result = entry[side]
            if kind == "trait_alignment":
                assert _in(result["pc1_spearman"], 0, 1), name
                assert result["ridge_r2"] is None or result["ridge_r2"] <= 1, name
            elif kind == "ecological_alignment":
                for key in ("probe_accuracy", "majority_accuracy", "null_probe_accuracy"):
                    assert _in(result[key], 0, 1), (name, key)
                assert _in(result["cosine_gap"], -2, 2), name
            elif kind == "taxonomic_alignment":
                assert _in(result["spearman"], -1, 1), name
            elif kind == "intra_species_separation":
                assert _in(result["probe_accuracy"], 0, 1), name
                assert _in(result["null_probe_accuracy"], 0, 1), name
                assert result["fdr"] is not None and result["fdr"] >= 0, name
            elif kind == "orthogonality":
                assert _in(result["fraction_outside"], 0, 1), name
                assert _in(result["mean_abs_cos"], 0, 1), name
                assert _in(result["null_fraction_outside"], 0, 1), name
            elif kind == "effective_dimension":
                dim = entry["embed_dim"]
                assert _in(result["images"], 1, dim), name
                assert _in(result["centroids"], 1, dim), name


def test_counts_match_the_ground_truth(analysis, truth, synth):
    _, payload = analysis
    metrics, skipped = payload["metrics"], payload["skipped"]
    images, species = truth
    adults = images[images.life_stage == "adult"]
    expected = {
        "separation_sex": _count_usable(adults[adults.sex_strength > 0], "sex", "female", "male"),
        "separation_sex_monomorphic": _count_usable(
            adults[adults.sex_strength == 0], "sex", "female", "male"
        ),
        "separation_life_stage": _count_usable(images, "life_stage", "adult", "juvenile"),
    }
    assert expected["separation_sex"] > 0 and expected["separation_life_stage"] > 0
    for name, count in expected.items():
        if count == 0:
            assert name in skipped
            continue
        entry = metrics[name]
        assert entry["n_used"]["species"] == count, name
        for side in ("model", "baseline"):
            assert entry[side]["n_species_used"] == count, (name, side)
    finches = int(species.is_finch.sum())
    assert metrics["trait_finch_beak_length"]["n_used"]["species"] == finches
    assert metrics["trait_finch_beak_length"]["model"]["n_species"] == finches
    with_adults = adults.species_id.nunique()
    assert metrics["taxonomic"]["n_used"] == {
        "species": with_adults,
        "pairs": with_adults * (with_adults - 1) // 2,
    }
    orders = species[species.species_id.isin(adults.species_id)].order.nunique()
    assert metrics["ecological_habitat"]["n_used"]["orders"] == orders
    assert metrics["effective_dimension"]["n_used"]["images"] == len(images)
    for name in ("orthogonality_sex", "orthogonality_life_stage"):
        if name in metrics:
            n_used = metrics[name]["n_used"]
            assert n_used["group_rank"] in ("genus", "family", "order")
            assert 1 <= n_used["species"] <= expected[name.replace("orthogonality", "separation")]


def test_json_is_strict_and_analysis_summary_is_complete(analysis, synth, model):
    result, _ = analysis
    text = (result.out / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    summary = json.loads((result.out / "analysis.json").read_text())
    assert summary["model"] == str(model)
    assert summary["data"] == str(synth.resolve())
    assert summary["data_kind"] == "synthtol"
    assert summary["n_images"] == SPECIES * PER_SPECIES
    assert summary["n_species"] == SPECIES
    assert {"load", "embed", "metrics", "plots", "total"} <= set(summary["seconds"])


# --------------------------------------------------------------------------- embeddings


def test_embeddings_npz_holds_both_models_for_every_image(analysis, truth):
    result, payload = analysis
    images, _ = truth
    with np.load(result.out / "embeddings.npz", allow_pickle=False) as data:
        z, zb = data["z_model"], data["z_baseline"]
        assert (
            z.shape
            == zb.shape
            == (len(images), payload["metrics"]["effective_dimension"]["embed_dim"])
        )
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-4)
        assert not np.allclose(z, zb)
        for key in ("species", "sex", "life_stage", "split", "filepath"):
            assert data[key].shape == (len(images),), key
        assert sorted(set(data["sex"].tolist())) == ["female", "male"]
        assert set(data["split"].tolist()) == {"train", "test"}


def test_metrics_recompute_from_the_npz_alone(analysis):
    """The same seed on the saved embeddings gives the same numbers (no model needed)."""
    result, payload = analysis
    emb = load_embeddings(result.out)
    del emb.z["baseline"]  # the model's side is enough, at half the time
    metrics, skipped = compute_metrics(emb, seed=0)
    assert skipped == payload["skipped"]
    assert set(metrics) == set(payload["metrics"])
    for name, entry in metrics.items():
        assert entry["baseline"] is None
        for key, value in payload["metrics"][name]["model"].items():
            if isinstance(value, float):
                assert math.isclose(entry["model"][key], value, rel_tol=1e-6), (name, key)


# --------------------------------------------------------------------------- plots


@needs_mpl
def test_every_plot_is_a_readable_png(analysis):
    result, _ = analysis
    assert sorted(p.name for p in result.plots) == sorted(PLOTS)
    for name in PLOTS:
        path = result.out / "plots" / name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width >= 800 and 400 <= image.height <= 2000, (name, image.size)


@needs_mpl
def test_plots_regenerate_from_the_npz(analysis, tmp_path):
    result, _ = analysis
    written, skipped = render_plots(load_embeddings(result.out), tmp_path, seed=0)
    assert not skipped
    assert sorted(p.name for p in written) == sorted(PLOTS)


@pytest.mark.skipif(HAS_MPL, reason="matplotlib is installed")
def test_without_matplotlib_the_plots_are_reported_skipped(analysis):
    result, _ = analysis
    summary = json.loads((result.out / "analysis.json").read_text())
    assert "matplotlib" in summary["plots_skipped"]["all"]


@needs_mpl
def test_plot_scaling_from_constructed_rows(tmp_path):
    from taxoclip.analyze.plots import plot_scaling

    rows = [
        {
            "data_size": size,
            "metric": metric,
            "value": value + 0.01 * seed,
            "baseline_value": base,
            "seed": seed,
        }
        for size, scale in ((1_000, 0.2), (10_000, 0.5), (100_000, 0.8))
        for metric, value, base in (("finch |rho|", scale, 0.3), ("habitat probe", scale / 2, 0.4))
        for seed in range(3)
    ]
    rows.append({"data_size": 1_000, "metric": "orthogonality", "value": 0.9})
    path = plot_scaling(rows, tmp_path / "scaling.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 300
    with pytest.raises(ValueError, match="data_size"):
        plot_scaling([{"metric": "x", "value": 1.0}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least one row"):
        plot_scaling([], tmp_path / "bad.png")


# --------------------------------------------------------------------------- command line


def test_cli_analyze_writes_results(synth, model, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "analyze",
        "--model",
        str(model),
        "--data",
        str(synth),
        "--out",
        str(out),
        "--split",
        "test",
        "--baseline",
        "none",
        "--seed",
        "3",
        "-q",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "metrics.json" in printed and "effective_dimension" in printed
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["split"] == "test" and payload["seed"] == 3 and payload["baseline"] is None
    for entry in payload["metrics"].values():
        assert entry["baseline"] is None
        assert all(item["baseline_value"] is None for item in entry["stats"].values())
    summary = json.loads((out / "analysis.json").read_text())
    with (synth / "test" / "metadata.csv").open() as handle:
        assert summary["n_images"] == sum(1 for _ in csv.DictReader(handle))


def test_cli_bad_data_fails_naming_the_folder(model, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert (
        main(
            ["analyze", "--model", str(model), "--data", str(missing), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["analyze", "--model", str(model), "--data", str(empty), "--out", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err
    assert str(empty) in err and "metadata.csv" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_usage_errors(model, synth, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--model", str(model), "--data", str(synth)])  # no --out
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "analyze",
                "--model",
                str(model),
                "--data",
                str(synth),
                "--out",
                str(tmp_path),
                "--baseline",
                "flat",
            ]
        )
    assert exc.value.code == 2


# --------------------------------------------------------------------------- eval folder


@pytest.fixture(scope="module")
def folder(synth, truth, tmp_path_factory):
    """An evaluation folder over SynthToL's training images: class + lineage + habitat +
    one numeric per-species trait; no sex, life stage or finch columns."""
    _, species = truth
    out = tmp_path_factory.mktemp("evalfolder")
    table = species.set_index("species_id")
    rows = []
    with (synth / "train" / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            info = table.loc[int(row["species_id"])]
            rows.append(
                {
                    "filepath": str((synth / "train" / row["filepath"]).resolve()),
                    "class": row["class"],
                    **{
                        k: row[k]
                        for k in (
                            "kingdom",
                            "phylum",
                            "class_",
                            "order",
                            "family",
                            "genus",
                            "species_epithet",
                        )
                    },
                    "habitat": info["habitat"],
                    "wing": f"{info['elongation'] * 2:.4f}",
                }
            )
    with (out / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out, len(rows)


def test_an_eval_folder_gives_what_its_columns_allow(folder, model, tmp_path):
    path, n_rows = folder
    result = run(
        AnalyzeConfig(
            model=str(model),
            data=str(path),
            out=str(tmp_path / "out"),
            baseline="none",
            plots=False,
            device="cpu",
            progress=False,
        )
    )
    payload = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"taxonomic", "ecological_habitat", "trait_wing", "effective_dimension"} <= set(
        payload["metrics"]
    )
    assert not {"trait_hue", "separation_sex"} & set(payload["metrics"])
    skipped = payload["skipped"]
    for name in (
        "trait_finch_beak_length",
        "separation_sex",
        "separation_sex_monomorphic",
        "separation_life_stage",
        "orthogonality_sex",
        "orthogonality_life_stage",
    ):
        assert skipped.get(name), name
    assert "is_finch" in skipped["trait_finch_beak_length"]
    assert "sex" in skipped["separation_sex"]
    assert result.summary["data_kind"] == "folder"
    assert result.summary["n_images"] == n_rows
    assert _in(payload["metrics"]["trait_wing"]["model"]["pc1_spearman"], 0, 1)


def test_reading_data_errors(folder, tmp_path):
    path, _ = folder
    with pytest.raises(UsageError, match="no split column"):
        read_analysis_data(path, "test")
    with pytest.raises(UsageError, match="--split"):
        read_analysis_data(path, "validation")
    with pytest.raises(InputError, match="no such folder"):
        read_analysis_data(tmp_path / "missing")

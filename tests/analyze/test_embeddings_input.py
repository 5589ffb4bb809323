"""taxoclip analyze --embeddings: precomputed features of the data folder's images.

A real analysis of a tiny saved model writes embeddings.npz; the same rows are then given
back as that file, as a .npy in data order and as Parquet files keyed three ways, and
every metric must come out the same. Bad files fail with one line naming the file and
the reason. The ceiling (analyze/ceiling.py) is checked on the same world.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxoclip.analyze import AnalyzeConfig, read_analysis_data, run
from taxoclip.analyze.ceiling import held_out_half, labels
from taxoclip.analyze.data import embedded_from, load_embeddings, read_embeddings
from taxoclip.cli import main
from taxoclip.errors import InputError, UsageError
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model

# Enough images per species that each half (the ceiling's) keeps >= 4 of each variant.
SPECIES, PER_SPECIES = 8, 48


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "synth"
    generate(
        out, SynthConfig(species=SPECIES, images_per_species=PER_SPECIES, image_size=32), False
    )
    return out


@pytest.fixture(scope="module")
def analysed(synth, tmp_path_factory):
    model = saved_model(tmp_path_factory.mktemp("model") / "m", seed=1)
    out = tmp_path_factory.mktemp("first") / "out"
    result = run(
        AnalyzeConfig(model=str(model), data=str(synth), out=str(out), plots=False, progress=False)
    )
    return result, json.loads((out / "metrics.json").read_text())


def _again(synth, tmp_path, embeddings, **extra):
    config = AnalyzeConfig(
        embeddings=str(embeddings),
        data=str(synth),
        out=str(tmp_path / "again"),
        plots=False,
        progress=False,
        **extra,
    )
    result = run(config)
    return result, json.loads((tmp_path / "again" / "metrics.json").read_text())


def _same_model_numbers(first: dict, second: dict, side: str = "model") -> None:
    assert set(first["metrics"]) == set(second["metrics"])
    assert first["skipped"] == second["skipped"]
    for name, entry in first["metrics"].items():
        assert second["metrics"][name][side] == entry[side], (name, side)
        for stat, item in entry["stats"].items():
            assert second["metrics"][name]["stats"][stat].get("ceiling") == item.get("ceiling")


def test_the_npz_analyze_wrote_gives_identical_metrics(analysed, synth, tmp_path):
    first, payload = analysed
    result, again = _again(synth, tmp_path, first.out / "embeddings.npz")
    _same_model_numbers(payload, again)
    _same_model_numbers(payload, again, "baseline")  # the file's own z_baseline
    summary = json.loads((result.out / "analysis.json").read_text())
    assert summary["model"] is None and summary["weights"] is None
    assert summary["embeddings"]["file"] == str(first.out / "embeddings.npz")
    assert "z_baseline of" in summary["baseline"] and again["baseline"] == summary["baseline"]
    assert summary["n_images"] == SPECIES * PER_SPECIES


def test_npy_in_data_order_and_no_baseline(analysed, synth, tmp_path):
    first, payload = analysed
    emb = load_embeddings(first.out)
    images = read_analysis_data(synth)
    assert emb.filepath.tolist() == images.filepaths  # the order the docs promise
    np.save(tmp_path / "z.npy", emb.z["model"])
    result, again = _again(synth, tmp_path, tmp_path / "z.npy")
    for name, entry in payload["metrics"].items():
        assert again["metrics"][name]["model"] == entry["model"], name
        assert again["metrics"][name]["baseline"] is None
    assert again["baseline"] is None and result.summary["baseline"] is None
    # rows of any length are L2-normalised on load
    np.save(tmp_path / "scaled.npy", emb.z["model"].astype(np.float64) * 3.0)
    read = read_embeddings(tmp_path / "scaled.npy", images, synth)
    np.testing.assert_allclose(np.linalg.norm(read.z, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(read.z, emb.z["model"], atol=1e-6)


def test_parquet_keyed_by_path_id_or_columns(analysed, synth, tmp_path):
    first, payload = analysed
    emb = load_embeddings(first.out)
    images = read_analysis_data(synth)
    z = emb.z["model"]
    order = np.random.default_rng(0).permutation(len(z))  # rows in any order
    relative = [p.split(str(synth.resolve()) + "/", 1)[1] for p in emb.filepath.tolist()]
    ids = [int(p.rsplit("/", 1)[1].split(".")[0]) for p in relative]
    by_path = pa.table(
        {"filepath": [relative[i] for i in order], "embedding": [z[i].tolist() for i in order]}
    )
    pq.write_table(by_path, tmp_path / "by_path.parquet")
    by_id = pa.table(
        {"image_id": [ids[i] for i in order]}
        | {f"d{j}": z[order, j].astype(np.float64) for j in range(z.shape[1])}
    )
    pq.write_table(by_id, tmp_path / "by_id.parquet")
    baseline = pa.table(
        {
            "key": [emb.filepath[i] for i in order],
            "v": [emb.z["baseline"][i].tolist() for i in order],
        }
    )
    pq.write_table(baseline, tmp_path / "baseline.parquet")
    # each file gives back the very rows analyze embedded, in the data's order
    for name, kind, rows in (
        ("by_path", "parquet column 'embedding' keyed by 'filepath'", z),
        ("by_id", f"parquet, {z.shape[1]} numeric columns keyed by 'image_id'", z),
        ("baseline", "parquet column 'v' keyed by 'key'", emb.z["baseline"]),
    ):
        read = read_embeddings(tmp_path / f"{name}.parquet", images, synth)
        assert np.array_equal(read.z, rows), name
        assert read.source.startswith(kind), (name, read.source)
    assert "image id" in read_embeddings(tmp_path / "by_id.parquet", images, synth).source
    # and analyze reads them so, with the baseline file as the baseline; no ceiling asked
    result, again = _again(
        synth,
        tmp_path,
        tmp_path / "by_path.parquet",
        baseline_embeddings=str(tmp_path / "baseline.parquet"),
        ceiling=False,
    )
    for name, entry in payload["metrics"].items():
        assert again["metrics"][name]["model"] == entry["model"], name
        assert again["metrics"][name]["baseline"] == entry["baseline"], name
    assert result.summary["baseline"].startswith(
        f"--baseline-embeddings {tmp_path / 'baseline.parquet'}"
    )
    assert result.summary["ceiling"] == {"skipped": "--no-ceiling"}
    assert all("ceiling" not in e for e in again["metrics"].values())


def test_bad_files_fail_naming_the_file_and_the_reason(analysed, synth, tmp_path, capsys):
    first, _ = analysed
    z = load_embeddings(first.out).z["model"]
    n = len(z)
    np.save(tmp_path / "short.npy", z[:-3])
    nan = z.copy()
    nan[5, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "flat.npy", z[:, 0])
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    (tmp_path / "z.csv").write_text("1,2\n")
    keys = [f"train/images/s9999/{i:07d}.jpg" for i in range(n)]
    pq.write_table(pa.table({"filepath": keys, "e": z.tolist()}), tmp_path / "keys.parquet")
    cases = {
        "short.npy": f"{n - 3} rows, but --data",
        "nan.npy": "rows with NaN or infinite values: 1 (first: row 5)",
        "flat.npy": f"shape ({n},)",
        "junk.npy": "cannot read it as a .npy array",
        "missing.npz": "no such file",
        "keys.parquet": "have no row (first: ",
    }
    for name, reason in cases.items():
        argv = ["analyze", "--embeddings", str(tmp_path / name), "--data", str(synth)]
        assert main([*argv, "--out", str(tmp_path / "o"), "-q"]) == 1, name
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err and reason in err, (name, err)
        assert "Traceback" not in err
    # the parquet error also names the rows that match no image
    with pytest.raises(InputError, match="rows name no image of it") as caught:
        run(AnalyzeConfig(embeddings=str(tmp_path / "keys.parquet"), data=str(synth), out="x"))
    assert "s9999" in str(caught.value)
    with pytest.raises(UsageError, match="unknown suffix '.csv'"):
        run(AnalyzeConfig(embeddings=str(tmp_path / "z.csv"), data=str(synth), out="x"))
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_usage_errors_of_the_flags(synth, tmp_path):
    for argv, says in (
        ([], "give --model or --embeddings"),
        (["--model", "m", "--embeddings", "e.npz"], "exclude each other"),
        (["--model", "m", "--baseline-embeddings", "b.npz"], "needs --embeddings"),
    ):
        with pytest.raises(UsageError, match=says):
            AnalyzeConfig(data=str(synth), out=str(tmp_path), **_kwargs(argv))


def _kwargs(argv: list[str]) -> dict:
    return {
        argv[i].removeprefix("--").replace("-", "_"): argv[i + 1] for i in range(0, len(argv), 2)
    }


# --------------------------------------------------------------------------- ceiling


def test_ceiling_halves_each_cell_and_trains_on_the_other_half(synth):
    images = read_analysis_data(synth)
    ok = np.ones(len(images.filepaths), dtype=bool)
    emb = embedded_from(images, {"model": np.eye(len(ok), 4, dtype=np.float32)}, ok)
    measured = held_out_half(emb, seed=0)
    cells = {}
    for i, cell in enumerate(zip(emb.species, emb.sex, emb.life_stage, strict=True)):
        cells.setdefault(cell, []).append(measured[i])
    for cell, flags in cells.items():
        assert sum(flags) == (len(flags) + 1) // 2, cell
    assert not np.array_equal(measured, held_out_half(emb, seed=1))
    codes = labels(emb)
    adult = emb.life_stage == "adult"
    assert (codes["sex"][~adult] == -1).all()  # no sex label on juveniles
    assert set(codes["sex"][adult].tolist()) == {0, 1}
    assert set(codes["life_stage"].tolist()) == {0, 1}


def test_ceiling_sits_beside_each_separation_statistic(analysed):
    result, payload = analysed
    summary = result.summary["ceiling"]
    assert summary["images_trained"] + summary["images_measured"] == SPECIES * PER_SPECIES
    # trained with the labels, it reads life stage on images it never saw
    assert summary["accuracy"]["measured"]["life_stage"] > 0.8
    separation = [
        k for k, e in payload["metrics"].items() if e["kind"] == "intra_species_separation"
    ]
    assert "separation_life_stage" in separation
    for name, entry in payload["metrics"].items():
        has = name in separation
        for stat, item in entry["stats"].items():
            assert ("ceiling" in item) == has, (name, stat)
    stage = payload["metrics"]["separation_life_stage"]
    ceiling = stage["ceiling"]["stats"]["probe_accuracy"]
    assert stage["stats"]["probe_accuracy"]["ceiling"] == ceiling["value"]
    # what the labels make learnable is far above the null and above a random network
    assert ceiling["value"] > ceiling["null"]["mean"] + 0.2
    assert ceiling["value"] > stage["stats"]["probe_accuracy"]["value"]
    assert stage["ceiling"]["n_used"]["images"] == pytest.approx(
        stage["n_used"]["images"] / 2, rel=0.1
    )

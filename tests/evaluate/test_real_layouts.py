"""Benchmark loaders on fixtures written in the released layouts (headers and paths as the
public releases have them; images from a tiny SynthToL), and the published suite with the
published columns, absent benchmarks and a broken one."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import unicodedata
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxoclip.cli import main
from taxoclip.evaluate import published_numbers as paper
from taxoclip.evaluate.benchmarks import (
    CAMERA_TRAP_COLUMNS,
    HERBARIUM_SPLITS_FILE,
    RARE_SPECIES_CATALOG,
    RARE_SPECIES_CATALOG_COLUMNS,
    load_benchmark,
    load_herbarium19,
)
from taxoclip.synth import SynthConfig, generate
from tests.helpers import saved_model


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> list[dict[str, str]]:
    """48 SynthToL images (8 species × 6) with their metadata rows, paths absolute."""
    out = tmp_path_factory.mktemp("synth") / "synth"
    generate(
        out, SynthConfig(species=8, images_per_species=6, image_size=32, seed=4), progress=False
    )
    records = []
    for split in ("train", "test"):
        with (out / split / "metadata.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                records.append({**row, "path": str(out / split / row["filepath"])})
    # species interleaved: any slice of a few records holds several species
    rank: dict[str, int] = {}
    keyed = []
    for r in sorted(records, key=lambda r: (r["species"], r["path"])):
        rank[r["species"]] = rank.get(r["species"], -1) + 1
        keyed.append(((rank[r["species"]], r["species"]), r))
    return [r for _, r in sorted(keyed, key=lambda item: item[0])]


def _write_csv(
    path: Path, header: list[str] | tuple[str, ...], rows: list[list[object]], delimiter: str = ","
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def _ranks(r: dict[str, str]) -> list[str]:
    return [
        r["kingdom"],
        r["phylum"],
        r["class_"],
        r["order"],
        r["family"],
        r["genus"],
        r["species_epithet"],
    ]


def _taxon_com(r: dict[str, str]) -> str:
    common = r["common_name"]
    return " ".join(_ranks(r)) + (f" with common name {common}" if common else "")


# ------------------------------------------------------------------ real-layout writers


def make_camera_traps(root: Path, synth: list[dict], sets: dict[str, int]) -> dict[str, list]:
    """IDLE-OO Camera Traps: ``<set>-balanced.csv`` (the released header, no ``class``),
    ``filepath`` = ``<set>/<uuid>.png`` relative to ``data/test/``."""
    folder = root / "camera_trap"
    written = {}
    start = 0
    for set_name, count in sets.items():
        rows = []
        for k, r in enumerate(synth[start : start + count]):
            image_id = str(uuid.UUID(int=start + k + 1))
            relative = f"{set_name}/{image_id}.png"
            target = folder / "data" / "test" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(r["path"]).save(target)
            base = f"https://example.org/{relative}"
            rows.append(
                [
                    base,
                    base,
                    base,
                    image_id,
                    f"seq{k}",
                    f"loc{k % 2}",
                    0,
                    r["common_name"],
                    r["species"],
                    r["common_name"],
                    *_ranks(r)[:2],
                    r["class_"],
                    *_ranks(r)[3:],
                    relative,
                ]
            )
        _write_csv(folder / f"{set_name}-balanced.csv", CAMERA_TRAP_COLUMNS, rows)
        written[set_name] = synth[start : start + count]
        start += count
    return written


def make_rare_species_release(root: Path, synth: list[dict]) -> Path:
    """Hugging Face ``imageomics/rare_species``: ``dataset/<Kingdom-…-species>/<content>_<page>
    _eol-full-size-copy.jpg`` + ``metadata/rarespecies-catalog.csv``."""
    folder = root / "rare_species"
    rows = []
    for k, r in enumerate(synth):
        content, page = 10_000 + k, 500 + int(r["species_id"])
        class_dir = "-".join(_ranks(r))
        target = folder / "dataset" / class_dir / f"{content}_{page}_eol-full-size-copy.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r["path"], target)
        rows.append(
            [
                f"rs{k}",
                content,
                page,
                *_ranks(r)[:6],
                r["species_epithet"],
                r["species"],
                r["common_name"],
            ]
        )
    rows.append(["rs-gone", 99_999, 1, *_ranks(synth[0])[:6], "gone", "Gone gone", "gone"])
    _write_csv(folder / RARE_SPECIES_CATALOG, RARE_SPECIES_CATALOG_COLUMNS, rows)
    return folder


def make_herbarium(root: Path, synth: list[dict], classes: int = 12, per_class: int = 4) -> Path:
    """GCD layout: ``small-train/<id>/`` and ``small-validation/<id>/`` folders named by class
    id (sorted as strings, as ImageFolder sorts them) + the Old/New class-split pickle."""
    folder = root / "herbarium19"
    for c in range(classes):
        for i in range(per_class):
            r = synth[(c * per_class + i) % len(synth)]
            shutil.copyfile(r["path"], _mk(folder / "small-train" / str(c) / f"{c}_{i}.jpg"))
        shutil.copyfile(synth[c]["path"], _mk(folder / "small-validation" / str(c) / "v.jpg"))
    with (folder / HERBARIUM_SPLITS_FILE).open("wb") as handle:
        # indices into the sorted folder names 0, 1, 10, 11, 2, …, 9
        pickle.dump({"Old": np.arange(0, classes, 2), "New": np.arange(1, classes, 2)}, handle)
    return folder


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_meta_album(root: Path, synth: list[dict]) -> Path:
    """Three Meta-Album sets: the release form (``labels.csv`` + ``info.json`` + ``images/``),
    the release form with ``info.json`` renaming the columns (tab-separated), and BioCLIP's
    ``metadata.csv`` with NFD class names over NFC folders on disk."""
    folder = root / "meta_album"
    plankton = folder / "PLK_Mini"
    rows = []
    for k, r in enumerate(synth[:6]):
        shutil.copyfile(r["path"], _mk(plankton / "images" / f"p{k}.jpg"))
        rows.append([f"p{k}.jpg", r["species"], r["family"]])
    _write_csv(plankton / "labels.csv", ["FILE_NAME", "CATEGORY", "SUPER_CATEGORY"], rows)
    (plankton / "info.json").write_text(
        json.dumps(
            {
                "dataset_name": "Plankton",
                "image_column_name": "FILE_NAME",
                "category_column_name": "CATEGORY",
                "has_super_categories": True,
                "super_category_column_name": "SUPER_CATEGORY",
                "images_in_sub_folder": True,
                "csv_with_tab": False,
            }
        )
    )
    insects = folder / "set2" / "INS_Mini"
    rows = []
    for k, r in enumerate(synth[6:10]):
        shutil.copyfile(r["path"], _mk(insects / "images" / f"i{k}.jpg"))
        rows.append([f"i{k}.jpg", r["species"]])
    _write_csv(insects / "labels.csv", ["file", "label"], rows, delimiter="\t")
    (insects / "info.json").write_text(
        json.dumps(
            {
                "image_column_name": "file",
                "category_column_name": "label",
                "has_super_categories": False,
                "images_in_sub_folder": True,
                "csv_with_tab": True,
            }
        )
    )
    fungi = folder / "fungi"
    names = [
        "Cortinarius caperatus (Pers.) Fr.",
        "Hygrocybe citrinovirens (J.E. Lange) Jul. Schäff.",
    ]
    rows = []
    for k, name in enumerate(names * 2):
        shutil.copyfile(synth[k]["path"], _mk(fungi / "val" / name / f"f{k}.jpg"))
        decomposed = unicodedata.normalize("NFD", name)
        rows.append([k, f"{decomposed}/f{k}.jpg", decomposed])
    _write_csv(fungi / "metadata.csv", ["", "filepath", "class"], rows)
    return folder


# -------------------------------------------------------------------------- loaders


def test_camera_traps_release_layout(synth, tmp_path):
    written = make_camera_traps(tmp_path, synth, {"desert-lion": 6, "ENA24": 4})
    sets = load_benchmark("camera_trap", tmp_path)
    assert [s.name for s in sets] == ["camera_trap/desert-lion", "camera_trap/ENA24"]
    lion = sets[0]
    assert len(lion) == 6 and not lion.missing
    assert lion.labels == [_taxon_com(r) for r in written["desert-lion"]]
    assert lion.lineages[0].klass == written["desert-lion"][0]["class_"]
    assert lion.common_names[0] == written["desert-lion"][0]["common_name"]
    assert Path(lion.extra["image_root"]) == tmp_path / "camera_trap" / "data" / "test"
    assert all(p.endswith(".png") and "/data/test/desert-lion/" in p for p in lion.filepaths)
    assert len(sets[1]) == 4 and len(set(sets[1].labels)) == len(
        {r["species"] for r in written["ENA24"]}
    )


def test_rare_species_release_layout(synth, tmp_path):
    make_rare_species_release(tmp_path, synth)
    data = load_benchmark("rare_species", tmp_path)
    assert len(data) == 48 and len(set(data.labels)) == 8
    by_path = dict(zip(data.filepaths, range(len(data)), strict=True))
    for k, r in enumerate(synth):
        i = by_path[
            str(next((tmp_path / "rare_species" / "dataset").rglob(f"{10_000 + k}_*")).resolve())
        ]
        assert data.labels[i] == r["species"]
        assert data.lineages[i].ranks == tuple(_ranks(r))
        assert data.common_names[i] == r["common_name"]
    assert [reason for _, reason in data.missing] == ["no image for catalog row ('99999', '1')"]


def test_herbarium19_bioclip2_protocol(synth, tmp_path):
    make_herbarium(tmp_path, synth, classes=12, per_class=4)
    data = load_benchmark("herbarium19", tmp_path)
    assert len(data) == 48  # small-train only: small-validation is not in the pool
    assert not any("small-validation" in p for p in data.filepaths)
    order = sorted(str(c) for c in range(12))  # "0", "1", "10", "11", "2", …
    assert data.extra["class_names"] == order
    assert data.extra["known_classes"] == [order[i] for i in range(0, 12, 2)]
    assert data.extra["n_clusters"] == 12
    old_positions = [
        i for i, label in enumerate(data.labels) if label in data.extra["known_classes"]
    ]
    assert len(old_positions) == 24
    splits = np.array(data.splits)
    assert (splits == "train").sum() == int(0.8 * 24) == 19  # labelled: 80 % of Old, seeded
    assert (splits == "test").sum() == 48 - 19  # scored: the rest of small-train
    # the GCD code's draw, literally: np.random.seed(0); np.random.choice(range(n), ...)
    np.random.seed(0)
    expected = np.random.choice(range(24), replace=False, size=int(0.8 * 24))
    labelled = np.flatnonzero(splits == "train")
    assert sorted(labelled) == sorted(np.array(old_positions)[expected])
    assert all(data.labels[i] in data.extra["known_classes"] for i in labelled)
    seeded = load_herbarium19(tmp_path / "herbarium19", seed=1)
    assert (np.array(seeded.splits) == "train").sum() == 19
    assert seeded.splits != data.splits


def test_meta_album_release_forms_and_nfc(synth, tmp_path):
    make_meta_album(tmp_path, synth)
    sets = {s.name: s for s in load_benchmark("meta_album", tmp_path)}
    assert set(sets) == {"meta_album/plankton", "meta_album/insects", "meta_album/fungi"}
    plankton = sets["meta_album/plankton"]
    assert plankton.labels == [r["species"] for r in synth[:6]]
    assert plankton.extra["super_categories"] == [r["family"] for r in synth[:6]]
    insects = sets["meta_album/insects"]  # info.json renames the columns; tab-separated
    assert insects.labels == [r["species"] for r in synth[6:10]] and not insects.missing
    fungi = sets["meta_album/fungi"]  # NFD in the CSV, NFC on disk: found, compared as NFC
    schaff = "Hygrocybe citrinovirens (J.E. Lange) Jul. Schäff."
    assert unicodedata.is_normalized("NFC", schaff)
    assert fungi.labels == ["Cortinarius caperatus (Pers.) Fr.", schaff] * 2
    assert all(unicodedata.is_normalized("NFC", label) for label in fungi.labels)
    assert len(fungi) == 4 and not fungi.missing and len(fungi.classes) == 2


def test_published_table_is_consistent():
    """The means in the table are the means of its columns (a typo check)."""
    for table in (paper.ZERO_SHOT, paper.BEYOND):
        for model, values in table.items():
            assert abs(np.mean(values[:-1]) - values[-1]) < 0.051, model
    assert paper.published("BioCLIP 2", paper.COLUMNS[0]) == 74.9


# ------------------------------------------------------------------------ the suite


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("model") / "t32", seed=3)


def _eval(model_dir, root, out, cache, *extra) -> int:
    return main(
        [
            "eval",
            "--model",
            str(model_dir),
            "--suite",
            "bioclip2",
            "--root",
            str(root),
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
            "-q",
            *extra,
        ]
    )


def test_suite_prints_published_columns_and_goes_on_past_a_broken_benchmark(
    synth, model_dir, tmp_path, capsys
):
    root = tmp_path / "benchmarks"
    make_camera_traps(root, synth, {"desert-lion": 8, "island": 8})
    make_rare_species_release(root, synth)
    # the real ENA24 CSV read by the old loader failed; here one set is broken outright
    _write_csv(root / "camera_trap" / "ENA24-balanced.csv", ["url_gcp", "image_id"], [["x", "y"]])
    code = _eval(model_dir, root, tmp_path / "out", tmp_path / "cache")
    printed = capsys.readouterr()
    assert code == 3, printed.err
    assert "could not read camera_trap/ENA24" in printed.out and "filepath" in printed.out
    assert "camera_trap/ENA24" in printed.err
    header = next(line for line in printed.out.splitlines() if line.startswith("| suite"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:6] == ["suite", "task", "metric", "n", "trained", "untrained"]
    assert columns[6:] == [paper.label(m) for m in paper.SHOWN]
    lines = {
        tuple(c.strip() for c in line.strip("|").split("|")[1:3]): line
        for line in printed.out.splitlines()
        if line.startswith("| bioclip2")
    }
    nabirds = lines[("nabirds", "zero-shot top-1")]  # absent: published numbers, not on disk
    assert (
        "not on disk" in nabirds
        and "0.749" in nabirds
        and "0.588" in nabirds
        and "0.665" in nabirds
    )
    rare = lines[("rare_species", "zero-shot top-1")]  # present: ours beside 76.8 / 37.1 / 35.2
    assert "0.768" in rare and "0.371" in rare and "not on disk" not in rare
    assert "0.539" in lines[("camera_trap", "zero-shot top-1 (mean of sets)")]
    assert "not read" in lines[("camera_trap/ENA24", "zero-shot top-1")]
    assert "incomplete" in lines[(paper.ZERO_SHOT_MEAN_TASK, "zero-shot top-1")]

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    by_key = {(r["task"], r["metric"], r["model"]): r for r in saved}
    assert by_key[("nabirds", "zero-shot top-1", "BioCLIP 2 (published)")][
        "value"
    ] == pytest.approx(0.749)
    assert by_key[("nabirds", "zero-shot top-1", "trained")]["note"] == "not on disk"
    assert by_key[("herbarium19", "GCD accuracy (all)", "CLIP ViT-L/14 (published)")][
        "value"
    ] == pytest.approx(0.182)
    ena = by_key[("camera_trap/ENA24", "zero-shot top-1", "untrained")]
    assert ena["note"].startswith("not read:") and "filepath" in ena["note"]
    ours = by_key[("rare_species", "zero-shot top-1", "trained")]
    assert 0.0 <= ours["value"] <= 1.0 and ours["n"] == 48 and ours["note"] == ""
    lion = by_key[("camera_trap/desert-lion", "zero-shot top-1", "trained")]
    island = by_key[("camera_trap/island", "zero-shot top-1", "trained")]
    mean = by_key[("camera_trap", "zero-shot top-1 (mean of sets)", "trained")]
    assert mean["value"] == pytest.approx((lion["value"] + island["value"]) / 2)
    header_csv = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert header_csv == "suite,task,metric,value,model,n,note"
    assert "BioCLIP 2 (published)" in (tmp_path / "out" / "results.csv").read_text()


def test_suite_exits_1_when_no_benchmark_could_run(model_dir, tmp_path, capsys):
    root = tmp_path / "benchmarks"
    _write_csv(root / "camera_trap" / "island-balanced.csv", ["url_gcp", "image_id"], [["x", "y"]])
    code = _eval(model_dir, root, tmp_path / "out", tmp_path / "cache", "--no-baseline")
    printed = capsys.readouterr()
    assert code == 1
    assert "none ran" in printed.err
    assert "0.749" in printed.out  # the published numbers are shown all the same

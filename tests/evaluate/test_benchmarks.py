"""Loaders for the published benchmarks, each on a tiny fixture in that benchmark's layout."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxoclip.errors import InputError
from taxoclip.evaluate.benchmarks import (
    BENCHMARKS,
    FISHNET_ATTRIBUTES,
    PUBLISHED,
    find_benchmarks,
    load_benchmark,
)


def _image(path: Path, color: tuple[int, int, int] = (10, 120, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_rare_species(root: Path) -> Path:
    folder = root / "rare_species"
    header = ["", "kingdom", "phylum", "cls", "order", "family", "genus", "species"]
    header += ["common_name", "filepath", "class"]
    lineage_a = ["Animalia", "Mollusca", "Bivalvia", "Unionida", "Unionidae", "Cyclonaias"]
    lineage_b = ["Animalia", "Chordata", "Reptilia", "Testudines", "Geoemydidae", "Pangshura"]
    rows = [
        [0, *lineage_a, "tuberculata", "purple wartyback", "d/a1.jpg", "Cyclonaias tuberculata"],
        [1, *lineage_a, "tuberculata", "purple wartyback", "d/a2.jpg", "Cyclonaias tuberculata"],
        [2, *lineage_b, "sylhetensis", "Assam Roofed Turtle", "d/b1.jpg", "Pangshura sylhetensis"],
        [
            3,
            *lineage_b,
            "sylhetensis",
            "Assam Roofed Turtle",
            "d/gone.jpg",
            "Pangshura sylhetensis",
        ],
    ]
    _csv(folder / "metadata.csv", header, rows)
    for name in ("a1", "a2", "b1"):
        _image(folder / "d" / f"{name}.jpg")
    return folder


def make_nabirds(root: Path) -> Path:
    folder = root / "nabirds"
    (folder / "images.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "images.txt").write_text(
        "id1 0295/a.jpg\nid2 0295/b.jpg\nid3 0296/c.jpg\nid4 0296/missing.jpg\n"
    )
    (folder / "classes.txt").write_text("295 Mallard (Female/Eclipse)\n296 American Robin\n")
    (folder / "image_class_labels.txt").write_text("id1 295\nid2 295\nid3 296\nid4 296\n")
    (folder / "train_test_split.txt").write_text("id1 1\nid2 0\nid3 1\nid4 0\n")
    for rel in ("0295/a.jpg", "0295/b.jpg", "0296/c.jpg"):
        _image(folder / "images" / rel)
    return folder


def make_meta_album(root: Path) -> Path:
    folder = root / "meta_album"
    # BioCLIP layout for fungi: metadata.csv, images under val/<class>/.
    fungi = folder / "fungi"
    rows = [
        [0, "Amanita excelsa Gonn. & Rabenh./1.JPG", "Amanita excelsa Gonn. & Rabenh."],
        [1, "Mycena crocata (Schrad.) P.Kumm./2.JPG", "Mycena crocata (Schrad.) P.Kumm."],
    ]
    _csv(fungi / "metadata.csv", ["", "filepath", "class"], rows)
    for _, rel, _ in rows:
        _image(fungi / "val" / rel)
    # Meta-Album release layout for plankton, under its dataset code.
    plankton = folder / "PLK_Mini"
    _csv(
        plankton / "labels.csv",
        ["FILE_NAME", "CATEGORY", "SUPER_CATEGORY"],
        [["p1.jpg", "Acantharia", "Rhizaria"], ["p2.jpg", "Copepoda", "Crustacea"]],
    )
    _image(plankton / "images" / "p1.jpg")
    _image(plankton / "images" / "p2.jpg")
    return folder


def make_camera_trap(root: Path) -> Path:
    folder = root / "camera_trap"
    header = ["", "kingdom", "phylum", "cls", "order", "family", "genus", "species"]
    header += ["common_name", "filepath", "class"]
    lion = ["Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae", "Panthera", "leo"]
    _csv(
        folder / "desert-lion-balanced.csv",
        header,
        [
            [0, *lion, "lion", "x1.jpg", "Panthera leo"],
            [1, *lion, "lion", "x2.jpg", "Panthera leo"],
        ],
    )
    _image(folder / "data" / "test" / "desert-lion" / "x1.jpg")
    _image(folder / "data" / "test" / "desert-lion" / "x2.jpg")
    return folder


def make_newt(root: Path) -> Path:
    folder = root / "newt"
    header = ["id", "task", "label", "split", "task_cluster", "task_subcluster"]
    rows = [
        ["a", "ml_bio_raptor_utility_pole", 1, "train", "context", ""],
        ["b", "ml_bio_raptor_utility_pole", 0, "test", "context", ""],
        ["c", "fgvcx_plant_pathology_healthy_vs_sick", 0, "train", "health", "plant"],
        ["d", "fgvcx_plant_pathology_healthy_vs_sick", 1, "test", "health", "plant"],
    ]
    _csv(folder / "newt2021_labels.csv", header, rows)
    for image_id in "abcd":
        _image(folder / "newt2021_images" / f"{image_id}.jpg")
    return folder


def _fishnet_row(image: str, folder: str, attrs: list[object]) -> list[object]:
    # CSV positions (0-based): image 3, folder 12, attributes 14-22; BioCLIP 2's fishnet.py
    # counts one more because polars' with_row_index() prepends a column.
    row: list[object] = [f"c{i}" for i in range(23)]
    row[3] = f"some/prefix/{image}"
    row[12] = folder
    row[14:23] = attrs
    return row


def make_fishnet(root: Path) -> Path:
    folder = root / "fishnet"
    header = [f"col{i}" for i in range(14)] + list(FISHNET_ATTRIBUTES)
    _csv(
        folder / "train.csv",
        header,
        [
            _fishnet_row("f1.jpg", "Salmonidae", ["pelagic", 0, 1, 0, 1, 0, 1, 1, 0]),
            _fishnet_row("f2.jpg", "Gobiidae", ["benthic", 1, 0, 1, 0, 0, 0, 1, 1]),
            _fishnet_row("f9.jpg", "Gobiidae", ["benthic", "", 0, 1, 0, 0, 0, 1, 1]),
        ],
    )
    _csv(
        folder / "test.csv",
        header,
        [_fishnet_row("f3.jpg", "Salmonidae", ["benthic", 0, 0, 0, 0, 1, 1.0, 0, 0])],
    )
    _image(folder / "Image_Library" / "Salmonidae" / "f1.jpg")
    _image(folder / "Image_Library" / "Gobiidae" / "f2.jpg")
    _image(folder / "Image_Library" / "Salmonidae" / "f3.jpg")
    return folder


def make_awa2(root: Path) -> Path:
    folder = root / "awa2"
    folder.mkdir(parents=True)
    (folder / "classes.txt").write_text("1\tantelope\n2\tgrizzly+bear\n3\tkiller+whale\n")
    (folder / "predicates.txt").write_text("1\tblack\n2\twhite\n3\tblue\n4\tbrown\n")
    (folder / "predicate-matrix-binary.txt").write_text("0 1 0 1\n1 0 0 1\n1 1 1 0\n")
    (folder / "trainclasses.txt").write_text("antelope\ngrizzly+bear\n")
    (folder / "testclasses.txt").write_text("killer+whale\n")
    _image(folder / "JPEGImages" / "antelope" / "antelope_10001.jpg")
    _image(folder / "JPEGImages" / "grizzly+bear" / "grizzly+bear_10001.jpg")
    _image(folder / "JPEGImages" / "killer+whale" / "killer+whale_10001.jpg")
    _image(folder / "JPEGImages" / "killer+whale" / "killer+whale_10002.jpg")
    return folder


def make_herbarium19(root: Path) -> Path:
    folder = root / "herbarium19"
    for split, count in (("small-train", 2), ("small-validation", 1)):
        for class_name in ("0", "1", "2"):
            for i in range(count):
                _image(folder / split / class_name / f"{class_name}_{i}.jpg")
    with (folder / "herbarium_19_class_splits.pkl").open("wb") as handle:
        pickle.dump({"Old": np.array([0, 2]), "New": [1]}, handle)
    return folder


def make_plantdoc(root: Path) -> Path:
    folder = root / "plantdoc"
    _image(folder / "train" / "Apple leaf" / "t1.jpg")
    _image(folder / "train" / "Apple Scab Leaf" / "t2.png")
    _image(folder / "test" / "Apple leaf" / "s1.jpg")
    return folder


# ------------------------------------------------------------------------- tests


def test_registry_names_protocols() -> None:
    assert set(BENCHMARKS) == {
        "nabirds",
        "meta_album",
        "rare_species",
        "camera_trap",
        "newt",
        "fishnet",
        "awa2",
        "herbarium19",
        "plantdoc",
    }
    assert BENCHMARKS["fishnet"].protocols == ("mlp_attributes_exact_match",)
    assert BENCHMARKS["newt"].protocols == ("svm_binary_tasks",)
    assert BENCHMARKS["awa2"].protocols == ("mlp_attributes_macro_f1",)
    assert BENCHMARKS["herbarium19"].protocols == ("gcd",)
    assert BENCHMARKS["plantdoc"].protocols == ("few_shot_1",)
    assert BENCHMARKS["rare_species"].protocols == ("zero_shot", "few_shot")
    assert PUBLISHED == {"zero_shot_species_mean_10": 55.6, "beyond_species_mean": 57.5}


def test_rare_species(tmp_path: Path) -> None:
    folder = make_rare_species(tmp_path)
    data = load_benchmark("rare_species", tmp_path)
    assert len(data) == 3
    assert data.labels == ["Cyclonaias tuberculata"] * 2 + ["Pangshura sylhetensis"]
    assert data.filepaths[0] == str((folder / "d" / "a1.jpg").resolve())
    assert data.missing == [(str((folder / "d" / "gone.jpg").resolve()), "no such file")]
    lineage = data.lineages[2]
    assert lineage.ranks == (
        "Animalia",
        "Chordata",
        "Reptilia",
        "Testudines",
        "Geoemydidae",
        "Pangshura",
        "sylhetensis",
    )
    assert data.common_names[0] == "purple wartyback"


def test_nabirds_release_layout(tmp_path: Path) -> None:
    make_nabirds(tmp_path)
    data = load_benchmark("nabirds", tmp_path)
    assert len(data) == 3
    assert data.labels == ["Mallard (Female/Eclipse)", "Mallard (Female/Eclipse)", "American Robin"]
    assert data.splits == ["train", "test", "train"]
    assert len(data.missing) == 1 and data.missing[0][0].endswith("missing.jpg")


def test_meta_album_both_layouts(tmp_path: Path) -> None:
    make_meta_album(tmp_path)
    sets = load_benchmark("meta_album", tmp_path)
    by_name = {s.name: s for s in sets}
    assert set(by_name) == {"meta_album/fungi", "meta_album/plankton"}
    fungi = by_name["meta_album/fungi"]
    assert fungi.labels == ["Amanita excelsa Gonn. & Rabenh.", "Mycena crocata (Schrad.) P.Kumm."]
    assert all(Path(p).is_file() and "/val/" in p for p in fungi.filepaths)
    plankton = by_name["meta_album/plankton"]
    assert plankton.labels == ["Acantharia", "Copepoda"]
    assert plankton.extra["super_categories"] == ["Rhizaria", "Crustacea"]


def test_camera_trap(tmp_path: Path) -> None:
    make_camera_trap(tmp_path)
    sets = load_benchmark("camera_trap", tmp_path)
    assert [s.name for s in sets] == ["camera_trap/desert-lion"]
    lion = sets[0]
    assert len(lion) == 2 and lion.labels == ["Panthera leo"] * 2
    assert lion.lineages[0].genus == "Panthera" and lion.lineages[0].klass == "Mammalia"
    assert not lion.missing


def test_newt(tmp_path: Path) -> None:
    make_newt(tmp_path)
    data = load_benchmark("newt", tmp_path)
    assert data.task_type == "binary_tasks"
    assert len(data) == 4
    assert data.labels == ["1", "0", "0", "1"]
    assert data.splits == ["train", "test", "train", "test"]
    assert (
        data.task_ids
        == ["ml_bio_raptor_utility_pole"] * 2 + ["fgvcx_plant_pathology_healthy_vs_sick"] * 2
    )
    assert data.extra["task_subcluster"] == ["none", "none", "plant", "plant"]


def test_fishnet(tmp_path: Path) -> None:
    make_fishnet(tmp_path)
    data = load_benchmark("fishnet", tmp_path)
    assert data.task_type == "attributes"
    assert len(data) == 3
    assert data.splits == ["train", "train", "test"]
    assert data.labels == ["Salmonidae", "Gobiidae", "Salmonidae"]
    assert data.attribute_names == list(FISHNET_ATTRIBUTES)
    np.testing.assert_array_equal(
        data.attributes,
        [[1, 0, 1, 0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1, 1, 0, 0]],
    )
    assert data.extra["dropped_rows_without_attributes"] == 1


def test_awa2(tmp_path: Path) -> None:
    make_awa2(tmp_path)
    data = load_benchmark("awa2", tmp_path)
    assert data.task_type == "attributes"
    assert data.labels == ["antelope", "grizzly+bear", "killer+whale", "killer+whale"]
    assert data.splits == ["train", "train", "test", "test"]
    assert data.attribute_names == ["black", "white", "blue", "brown"]
    np.testing.assert_array_equal(
        data.attributes, [[0, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0], [1, 1, 1, 0]]
    )


def test_herbarium19(tmp_path: Path) -> None:
    make_herbarium19(tmp_path)
    data = load_benchmark("herbarium19", tmp_path)
    assert data.task_type == "category_discovery"
    assert len(data) == 6  # small-train only (BioCLIP 2's protocol)
    assert data.labels == ["0", "0", "1", "1", "2", "2"]
    # a seeded 80 % of the 4 Old-class images labelled (int(0.8 * 4) = 3), the rest scored
    assert data.splits.count("train") == 3 and data.splits.count("test") == 3
    assert data.splits[2:4] == ["test", "test"]  # New class: never labelled
    assert data.extra["known_classes"] == ["0", "2"]
    assert data.extra["novel_classes"] == ["1"]


def test_herbarium19_refuses_unsafe_pickle(tmp_path: Path) -> None:
    folder = make_herbarium19(tmp_path)
    with (folder / "herbarium_19_class_splits.pkl").open("wb") as handle:
        pickle.dump({"Old": [Path("x")]}, handle)
    with pytest.raises(InputError, match="herbarium_19_class_splits.pkl"):
        load_benchmark("herbarium19", tmp_path)


def test_plantdoc(tmp_path: Path) -> None:
    make_plantdoc(tmp_path)
    data = load_benchmark("plantdoc", tmp_path)
    assert data.labels == ["Apple Scab Leaf", "Apple leaf", "Apple leaf"]
    assert data.splits == ["train", "train", "test"]


def test_find_benchmarks_reports_skipped(tmp_path: Path) -> None:
    make_newt(tmp_path)
    make_awa2(tmp_path)
    found, skipped = find_benchmarks(tmp_path)
    assert found == ["newt", "awa2"]
    skipped_names = [name for name, _ in skipped]
    assert set(skipped_names) == set(BENCHMARKS) - {"newt", "awa2"}
    reasons = dict(skipped)
    assert str(tmp_path / "fishnet") in reasons["fishnet"]


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    folder = make_newt(tmp_path)
    _csv(folder / "newt2021_labels.csv", ["id", "task", "label"], [["a", "t", 1]])
    with pytest.raises(InputError, match=r"newt2021_labels\.csv.*split"):
        load_benchmark("newt", tmp_path)
    folder = make_awa2(tmp_path / "other")
    (folder / "predicate-matrix-binary.txt").write_text("0 1 0 1\n1 0 x 1\n1 1 1 0\n")
    with pytest.raises(InputError, match=r"predicate-matrix-binary\.txt: line 2"):
        load_benchmark("awa2", tmp_path / "other")


def test_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown benchmark"):
        load_benchmark("birds525", tmp_path)
    with pytest.raises(InputError, match="no folder"):
        load_benchmark("plantdoc", tmp_path)


def test_awa2_missing_class_folder_is_not_fatal(tmp_path: Path) -> None:
    folder = make_awa2(tmp_path)
    for image in (folder / "JPEGImages" / "antelope").iterdir():
        image.unlink()
    (folder / "JPEGImages" / "antelope").rmdir()
    data = load_benchmark("awa2", tmp_path)
    assert data.labels == ["grizzly+bear", "killer+whale", "killer+whale"]
    assert data.missing == [(str((folder / "JPEGImages" / "antelope").resolve()), "no such folder")]

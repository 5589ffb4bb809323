"""``taxoclip predict --detections``: MegaDetector batch output in and out, on SynthToL
composites (several animals per picture at known boxes) with a real tiny model."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from taxoclip.cli import main
from taxoclip.predict.megadetector import SCHEMA_PATH, crop_box, label_of, read_detections
from tests.predict.composites import make_camera_trap

ADDED_INFO = {"classifier", "classification_completion_time", "classifier_metadata"}


@pytest.fixture(scope="module")
def camera(synth_small, tmp_path_factory):
    """Composites plus fields MegaDetector and Timelapse add that we do not know."""
    out = tmp_path_factory.mktemp("camera")
    md_path, truth = make_camera_trap(synth_small, out, pictures=3, per_picture=3)
    md = json.loads(md_path.read_text())
    md["x_project"] = {"site": "A1", "nested": [1, 2.5, None, "é"]}
    md["images"][0]["datetime"] = "2026:01:01 06:00:00"
    md["images"][0]["detections"][0]["x_track"] = 17
    md["info"]["summary_report"] = "written by MD"
    md_path.write_text(json.dumps(md, indent=1, ensure_ascii=False))
    return out, md_path, truth


def _strip_ours(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc.pop("classification_categories", None)
    doc.pop("classification_category_descriptions", None)
    for key in ADDED_INFO:
        doc["info"].pop(key, None)
    for image in doc["images"]:
        for det in image.get("detections") or []:
            det.pop("classifications", None)
    return doc


def _predict(*args: str) -> int:
    return main(["predict", *map(str, args), "-q"])


def test_round_trip_classifies_every_animal_box_and_keeps_the_rest(
    camera, model_224, index_224, tmp_path, capsys
):
    out, md_path, truth_path = camera
    target = tmp_path / "md_taxoclip.json"
    code = _predict(out, "--detections", md_path, "--output", target, "--model", model_224,
                    "--index", index_224, "--k", 3)  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "classified 9 animal detections (of 15" in capsys.readouterr().out
    source, result = json.loads(md_path.read_text()), json.loads(target.read_text())
    jsonschema.validate(result, json.loads(SCHEMA_PATH.read_text()))
    assert _strip_ours(result) == source  # every field we did not add, as it was read
    truth = list(csv.DictReader(truth_path.open()))
    names = result["classification_categories"]
    assert set(names) == set(result["classification_category_descriptions"])
    for image in result["images"]:
        for j, det in enumerate(image["detections"]):
            animal = det["category"] == "1" and det["conf"] >= 0.2
            assert ("classifications" in det) == animal
            if animal:
                assert len(det["classifications"]) == 3
                assert all(cid in names for cid, _ in det["classifications"])
                scores = [s for _, s in det["classifications"]]
                assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
                assert any(t["file"] == image["file"] and int(t["detection"]) == j for t in truth)
    info = result["info"]
    assert info["classifier"].startswith("taxoclip ")
    assert info["classifier_metadata"]["detection_threshold"] == 0.2
    assert info["classifier_metadata"]["n_classified"] == 9
    rows = list(csv.DictReader(target.with_suffix(".csv").open()))
    assert len(rows) == 15  # one per detection, classified or not
    assert {r["note"] for r in rows if not r["label"]} == {
        "category person: not classified", "conf 0.05 below --detection-threshold 0.2"}  # fmt: skip
    assert all(r["rank"] == "species" and " " in r["label"] for r in rows if r["label"])


def test_classifications_equal_classifying_the_same_crops(camera, model_224, index_224, tmp_path):
    """The crops go through the one feature path: same numbers as predicting them directly."""
    from taxoclip.predict import TreeOfLifeClassifier

    out, md_path, _ = camera
    target = tmp_path / "md.json"
    assert _predict(out, "--detections", md_path, "--output", target, "--model", model_224,
                    "--index", index_224, "--crop-padding", 0.1) == 0  # fmt: skip
    result = json.loads(target.read_text())
    classifier = TreeOfLifeClassifier(model_str=str(model_224), index=index_224)
    crops, expected = [], []
    for image in result["images"]:
        picture = Image.open(out / image["file"]).convert("RGB")
        for det in image["detections"]:
            if "classifications" in det:
                box, note = crop_box(det["bbox"], picture.width, picture.height, 0.1)
                assert note == ""
                crops.append(picture.crop(box))
                expected.append(det["classifications"])
    rows = classifier.predict(crops, "species", k=5)
    names, descriptions = result["classification_categories"], result[
        "classification_category_descriptions"]  # fmt: skip
    for position, classes in enumerate(expected):
        direct = [r for r in rows if r["file_name"] == str(position)]
        assert [names[c] for c, _ in classes] == [r["species"] for r in direct]
        assert [descriptions[c] for c, _ in classes] == [label_of(r)[1] for r in direct]
        assert [s for _, s in classes] == pytest.approx([r["score"] for r in direct], abs=1e-4)


def test_a_classified_file_is_reclassified_whole(camera, model_224, index_224, tmp_path, capsys):
    """Output fed back in (or another classifier's): old classes are replaced, never mixed."""
    out, md_path, _ = camera
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--model", model_224, "--index", index_224, "--workers", 2]
    assert _predict(out, "--detections", md_path, "--output", first, "--cls", "a,b", *common) == 0
    assert _predict(out, "--detections", first, "--output", second, "--k", 2, *common) == 0
    assert "replaced the classifications it held" in capsys.readouterr().err
    result = json.loads(second.read_text())
    assert "a" not in result["classification_categories"].values()
    for image in result["images"]:
        for det in image["detections"]:
            assert all(c in result["classification_categories"] for c, _ in
                       det.get("classifications", []))  # fmt: skip
            assert det["category"] != "1" or det["conf"] < 0.2 or len(det["classifications"]) == 2


def test_custom_labels_and_rank(camera, model_224, index_224, tmp_path):
    out, md_path, _ = camera
    target = tmp_path / "cls.json"
    assert _predict(out, "--detections", md_path, "--output", target, "--model", model_224,
                    "--cls", "climber,runner,swimmer") == 0  # fmt: skip
    result = json.loads(target.read_text())
    assert sorted(result["classification_categories"].values()) == ["climber", "runner", "swimmer"]
    assert "classification_category_descriptions" not in result
    target = tmp_path / "family.json"
    assert _predict(out, "--detections", md_path, "--output", target, "--model", model_224,
                    "--index", index_224, "--rank", "family") == 0  # fmt: skip
    rows = list(csv.DictReader(target.with_suffix(".csv").open()))
    assert {r["rank"] for r in rows if r["label"]} == {"family"}


def test_missing_image_gets_failure_and_exit_3(camera, model_224, index_224, tmp_path, capsys):
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    md["images"].append({"file": "images/gone.jpg", "detections": [
        {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}]})  # fmt: skip
    broken = tmp_path / "md_missing.json"
    broken.write_text(json.dumps(md))
    target = tmp_path / "out.json"
    code = _predict(out, "--detections", broken, "--output", target, "--model", model_224,
                    "--index", index_224)  # fmt: skip
    assert code == 3
    assert "1 of 4 images failed" in capsys.readouterr().err
    result = json.loads(target.read_text())
    gone = result["images"][-1]
    assert "no such file" in gone["failure"] and "classifications" not in gone["detections"][0]
    jsonschema.validate(result, json.loads(SCHEMA_PATH.read_text()))
    rows = list(csv.DictReader(target.with_suffix(".csv").open()))
    assert rows[-1]["error"] == "no such file"


def test_boxes_outside_the_image_are_clipped_and_noted(camera, model_224, index_224, tmp_path,
                                                        capsys):  # fmt: skip
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    dets = md["images"][1]["detections"]
    dets.append({"category": "1", "conf": 0.7, "bbox": [0.85, 0.8, 0.3, 0.4]})  # past the corner
    dets.append({"category": "1", "conf": 0.7, "bbox": [1.2, 0.1, 0.1, 0.1]})  # wholly outside
    broken = tmp_path / "md_edges.json"
    broken.write_text(json.dumps(md))
    target = tmp_path / "edges.json"
    assert _predict(out, "--detections", broken, "--output", target, "--model", model_224,
                    "--index", index_224) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "reaches outside the image: clipped" in err and "lies outside the image" in err
    result = json.loads(target.read_text())
    clipped, outside = result["images"][1]["detections"][-2:]
    assert "classifications" in clipped and "classifications" not in outside
    rows = [r for r in csv.DictReader(target.with_suffix(".csv").open())
            if r["file"] == md["images"][1]["file"]]  # fmt: skip
    assert "clipped" in rows[-2]["note"] and "not classified" in rows[-1]["note"]


def test_crop_box_pixels_padding_and_clipping():
    assert crop_box([0.25, 0.5, 0.5, 0.25], 200, 100) == ((50, 50, 150, 75), "")
    assert crop_box([0.25, 0.5, 0.5, 0.25], 200, 100, 0.1) == ((40, 47, 160, 78), "")
    box, note = crop_box([0.9, 0.9, 0.2, 0.2], 100, 100)
    assert box == (90, 90, 100, 100) and "clipped" in note
    assert crop_box([0.0, 0.0, 1.0, 1.0001], 10, 10) == ((0, 0, 10, 10), "")  # rounding: no note
    assert crop_box([0.5, 0.5, 0.0, 0.1], 10, 10)[0] is None


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("images"), "images"),
        (lambda d: d.pop("info"), "info"),
        (lambda d: d["info"].update(format_version="2.0"), "info.format_version"),
        (lambda d: d.update(detection_categories=["animal"]), "detection_categories"),
        (lambda d: d["images"][1].update(file=None), "images[1].file"),
        (lambda d: d["images"][0]["detections"][1].update(bbox=[0.1, 0.2, 0.3]),
         "images[0].detections[1].bbox"),
        (lambda d: d["images"][2]["detections"][0].update(category="9"),
         "images[2].detections[0].category"),
        (lambda d: d["images"][0]["detections"][0].update(conf="high"),
         "images[0].detections[0].conf"),
    ],
)  # fmt: skip
def test_not_megadetector_output_names_the_field(camera, tmp_path, edit, field):
    _, md_path, _ = camera
    md = json.loads(md_path.read_text())
    edit(md)
    broken = tmp_path / "bad.json"
    broken.write_text(json.dumps(md))
    with pytest.raises(Exception) as info:
        read_detections(broken)
    assert f": {field}:" in str(info.value) and "not MegaDetector batch output" in str(info.value)


def test_image_root_is_the_same_as_the_folder_argument(camera, model_224, index_224, tmp_path):
    out, md_path, _ = camera
    given, rooted = tmp_path / "given.json", tmp_path / "rooted.json"
    common = ["--detections", md_path, "--model", model_224, "--index", index_224]
    assert _predict(out, *common, "--output", given) == 0
    assert _predict(*common, "--image-root", out, "--output", rooted) == 0
    strip = lambda path: _strip_ours(json.loads(path.read_text()))  # noqa: E731
    first, second = json.loads(given.read_text()), json.loads(rooted.read_text())
    assert [d.get("classifications") for i in first["images"] for d in i["detections"]] == [
        d.get("classifications") for i in second["images"] for d in i["detections"]
    ]
    assert strip(given) == strip(rooted)
    assert _predict(out, *common, "--image-root", out, "--output", rooted) == 2  # both
    assert _predict("--image-root", out, "--model", model_224) == 2  # not without --detections


def test_bad_detections_input_exit_codes(camera, model_224, index_224, tmp_path, capsys):
    out, md_path, _ = camera
    not_md = tmp_path / "list.json"
    not_md.write_text("[1, 2]")
    code = _predict(out, "--detections", not_md, "--output", tmp_path / "o.json",
                    "--model", model_224, "--index", index_224)  # fmt: skip
    assert code == 1 and "top level: expected an object" in capsys.readouterr().err
    assert _predict(out, "--detections", md_path, "--model", model_224) == 2  # no --output
    assert "--output must name the .json" in capsys.readouterr().err
    assert _predict(out, out, "--detections", md_path, "--output", tmp_path / "o.json") == 2
    assert _predict(out, "--detections", md_path, "--output", tmp_path / "o.json",
                    "--detection-threshold", 1.5) == 2  # fmt: skip


def test_schema_rejects_what_megadetector_would_not_write():
    schema = json.loads(Path(SCHEMA_PATH).read_text())
    good = {"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
            "images": [{"file": "a.jpg", "detections": [
                {"category": "1", "conf": 0.5, "bbox": [0, 0, 1, 1],
                 "classifications": [["0", 0.9]]}]}]}  # fmt: skip
    jsonschema.validate(good, schema)
    bad = copy.deepcopy(good)
    bad["images"][0]["detections"][0]["classifications"] = [[0, 0.9]]  # id must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_detections_with_a_region_report_the_rank_landed(camera, synth_small, model_224,
                                                          index_224, tmp_path):  # fmt: skip
    out, md_path, truth_path = camera
    truth = list(csv.DictReader(truth_path.open()))
    region = tmp_path / "region.csv"
    region.write_text("scientificName\n" + truth[0]["species"] + "\n")
    target = tmp_path / "region.json"
    assert _predict(out, "--detections", md_path, "--output", target, "--model", model_224,
                    "--index", index_224, "--region", region) == 0  # fmt: skip
    result = json.loads(target.read_text())
    assert result["info"]["classifier_metadata"]["region"] == str(region)
    names = set(result["classification_categories"].values())
    allowed_species = {truth[0]["species"]}
    assert all(" " not in n or n in allowed_species for n in names)  # others rolled up
    rows = [r for r in csv.DictReader(target.with_suffix(".csv").open()) if r["label"]]
    assert len(rows) == 9 and {r["rank"] for r in rows} <= {
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "species",
    }
    assert all((r["rank"] == "species") == (r["label"] in allowed_species) for r in rows)

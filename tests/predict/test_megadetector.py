"""``taxoclip predict --detections``: MegaDetector batch output in and out, on SynthToL
composites (several animals per picture at known boxes) with a real tiny model, and on
real files from the field (../shared/real-samples/megadetector). Every output is checked
against our schema and, where ``make venv`` installed it, MegaDetector's own validator and
smoothing (tests/predict/md_reference.py)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import NamedTuple

import jsonschema
import pytest
from PIL import Image

from taxoclip import __version__
from taxoclip.cli import main
from taxoclip.predict.megadetector import (
    SCHEMA_PATH,
    crop_box,
    label_of,
    read_detections,
    taxonomy_string,
    written_version,
)
from tests.predict import md_reference
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
    code = _predict(
        out,
        "--detections",
        md_path,
        "--output",
        target,
        "--model",
        model_224,
        "--index",
        index_224,
        "--k",
        3,
    )
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
        "category person: not classified",
        "conf 0.05 below --detection-threshold 0.2",
    }
    assert all(r["rank"] == "species" and " " in r["label"] for r in rows if r["label"])
    md_reference.assert_accepts(target)


def test_classifications_equal_classifying_the_same_crops(camera, model_224, index_224, tmp_path):
    """The crops go through the one feature path: same numbers as predicting them directly."""
    from taxoclip.predict import TreeOfLifeClassifier

    out, md_path, _ = camera
    target = tmp_path / "md.json"
    assert (
        _predict(
            out,
            "--detections",
            md_path,
            "--output",
            target,
            "--model",
            model_224,
            "--index",
            index_224,
            "--crop-padding",
            0.1,
        )
        == 0
    )
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
    names, descriptions = (
        result["classification_categories"],
        result["classification_category_descriptions"],
    )
    for position, classes in enumerate(expected):
        direct = [r for r in rows if r["file_name"] == str(position)]
        assert [names[c] for c, _ in classes] == [r["species"] for r in direct]
        assert [descriptions[c] for c, _ in classes] == [label_of(r)[1] for r in direct]
        assert [s for _, s in classes] == pytest.approx([r["score"] for r in direct], abs=1e-4)
    md_reference.assert_accepts(target)


def test_a_classified_file_fed_back_is_reclassified(camera, model_224, index_224, tmp_path, capsys):
    """Output fed back in: every box it classified is classified again, so the first run's
    categories are no longer used and go; ours are numbered after them all the same."""
    out, md_path, _ = camera
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--model", model_224, "--index", index_224, "--workers", 2]
    assert _predict(out, "--detections", md_path, "--output", first, "--cls", "a,b", *common) == 0
    assert _predict(out, "--detections", first, "--output", second, "--k", 2, *common) == 0
    err = capsys.readouterr().err
    assert f"holds taxoclip {__version__}'s classifications: replaced on 9, kept on 0" in err
    assert "taxoclip's categories are numbered from 2" in err
    result = json.loads(second.read_text())
    names = result["classification_categories"]
    assert "a" not in names.values() and min(map(int, names)) == 2
    assert "earlier_classifier" not in result["info"]["classifier_metadata"]
    for image in result["images"]:
        for det in image["detections"]:
            assert all(c in names for c, _ in det.get("classifications", []))
            assert det["category"] != "1" or det["conf"] < 0.2 or len(det["classifications"]) == 2
    md_reference.assert_accepts(first, second)


def test_custom_labels_and_rank(camera, model_224, index_224, tmp_path):
    out, md_path, _ = camera
    target = tmp_path / "cls.json"
    assert (
        _predict(
            out,
            "--detections",
            md_path,
            "--output",
            target,
            "--model",
            model_224,
            "--cls",
            "climber,runner,swimmer",
        )
        == 0
    )
    result = json.loads(target.read_text())
    assert sorted(result["classification_categories"].values()) == ["climber", "runner", "swimmer"]
    assert "classification_category_descriptions" not in result
    target = tmp_path / "family.json"
    assert (
        _predict(
            out,
            "--detections",
            md_path,
            "--output",
            target,
            "--model",
            model_224,
            "--index",
            index_224,
            "--rank",
            "family",
        )
        == 0
    )
    rows = list(csv.DictReader(target.with_suffix(".csv").open()))
    assert {r["rank"] for r in rows if r["label"]} == {"family"}
    # a family's taxonomy string stops at family: MegaDetector's smoothing reads its level
    descriptions = json.loads(target.read_text())["classification_category_descriptions"]
    assert all(
        d.startswith(";") and d.split(";")[3] and not d.split(";")[4] for d in descriptions.values()
    )
    md_reference.assert_accepts(tmp_path / "cls.json", target)


def test_a_missing_picture_is_reported_and_kept_as_read(
    camera, model_224, index_224, tmp_path, capsys
):
    """MegaDetector did process it: its boxes stay (no ``failure``, which would make them
    null); the CSV, stderr and the exit status say we could not read it."""
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    md["images"].append(
        {
            "file": "images/gone.jpg",
            "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}],
        }
    )
    broken = tmp_path / "md_missing.json"
    broken.write_text(json.dumps(md))
    target = tmp_path / "out.json"
    code = _predict(
        out, "--detections", broken, "--output", target, "--model", model_224, "--index", index_224
    )
    assert code == 3
    assert "1 of 4 images failed" in capsys.readouterr().err
    result = json.loads(target.read_text())
    assert result["images"][-1] == md["images"][-1]
    assert result["info"]["classifier_metadata"]["n_failed"] == 1
    jsonschema.validate(result, json.loads(SCHEMA_PATH.read_text()))
    rows = list(csv.DictReader(target.with_suffix(".csv").open()))
    assert rows[-1]["error"] == "no such file"
    md_reference.assert_accepts(target)


def test_boxes_outside_the_image_are_clipped_and_noted(
    camera, model_224, index_224, tmp_path, capsys
):
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    dets = md["images"][1]["detections"]
    dets.append({"category": "1", "conf": 0.7, "bbox": [0.85, 0.8, 0.3, 0.4]})  # past the corner
    dets.append({"category": "1", "conf": 0.7, "bbox": [1.2, 0.1, 0.1, 0.1]})  # wholly outside
    broken = tmp_path / "md_edges.json"
    broken.write_text(json.dumps(md))
    target = tmp_path / "edges.json"
    assert (
        _predict(
            out,
            "--detections",
            broken,
            "--output",
            target,
            "--model",
            model_224,
            "--index",
            index_224,
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "reaches outside the image: clipped" in err and "lies outside the image" in err
    result = json.loads(target.read_text())
    clipped, outside = result["images"][1]["detections"][-2:]
    assert "classifications" in clipped and "classifications" not in outside
    rows = [
        r
        for r in csv.DictReader(target.with_suffix(".csv").open())
        if r["file"] == md["images"][1]["file"]
    ]
    assert "clipped" in rows[-2]["note"] and "not classified" in rows[-1]["note"]
    md_reference.assert_accepts(target)


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
        (lambda d: d["info"].update(format_version="3.0"), "info.format_version"),  # animl-py's
        (lambda d: d["info"].update(format_version=True), "info.format_version"),
        (lambda d: d.update(detection_categories=["animal"]), "detection_categories"),
        (lambda d: d["images"][1].update(file=None), "images[1].file"),
        (
            lambda d: d["images"][0]["detections"][1].update(bbox=[0.1, 0.2, 0.3]),
            "images[0].detections[1].bbox",
        ),
        (
            lambda d: d["images"][2]["detections"][0].update(category="9"),
            "images[2].detections[0].category",
        ),
        (
            lambda d: d["images"][0]["detections"][0].update(conf="high"),
            "images[0].detections[0].conf",
        ),
    ],
)
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
    md_reference.assert_accepts(given, rooted)
    assert _predict(out, *common, "--image-root", out, "--output", rooted) == 2  # both
    assert _predict("--image-root", out, "--model", model_224) == 2  # not without --detections


def test_bad_detections_input_exit_codes(camera, model_224, index_224, tmp_path, capsys):
    out, md_path, _ = camera
    not_md = tmp_path / "list.json"
    not_md.write_text("[1, 2]")
    code = _predict(
        out,
        "--detections",
        not_md,
        "--output",
        tmp_path / "o.json",
        "--model",
        model_224,
        "--index",
        index_224,
    )
    assert code == 1 and "top level: expected an object" in capsys.readouterr().err
    assert _predict(out, "--detections", md_path, "--model", model_224) == 2  # no --output
    assert "--output must name the .json" in capsys.readouterr().err
    assert _predict(out, out, "--detections", md_path, "--output", tmp_path / "o.json") == 2
    assert (
        _predict(
            out,
            "--detections",
            md_path,
            "--output",
            tmp_path / "o.json",
            "--detection-threshold",
            1.5,
        )
        == 2
    )


def test_schema_rejects_what_megadetector_would_not_write():
    schema = json.loads(Path(SCHEMA_PATH).read_text())
    good = {
        "info": {"format_version": "1.4"},
        "detection_categories": {"1": "animal"},
        "images": [
            {
                "file": "a.jpg",
                "detections": [
                    {
                        "category": "1",
                        "conf": 0.5,
                        "bbox": [0, 0, 1, 1],
                        "classifications": [["0", 0.9]],
                    }
                ],
            }
        ],
    }
    jsonschema.validate(good, schema)
    bad = copy.deepcopy(good)
    bad["images"][0]["detections"][0]["classifications"] = [[0, 0.9]]  # id must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    failed = copy.deepcopy(good)
    failed["images"][0]["failure"] = "Failure image access"  # then detections must be null
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(failed, schema)
    failed["images"][0]["detections"] = None
    jsonschema.validate(failed, schema)


def test_detections_with_a_region_report_the_rank_landed(
    camera, synth_small, model_224, index_224, tmp_path
):
    out, md_path, truth_path = camera
    truth = list(csv.DictReader(truth_path.open()))
    region = tmp_path / "region.csv"
    region.write_text("scientificName\n" + truth[0]["species"] + "\n")
    target = tmp_path / "region.json"
    assert (
        _predict(
            out,
            "--detections",
            md_path,
            "--output",
            target,
            "--model",
            model_224,
            "--index",
            index_224,
            "--region",
            region,
        )
        == 0
    )
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
    md_reference.assert_accepts(target)


# --------------------------------------------------------------------------- the format's variants
# Files written by hand after MegaDetector's format document (megadetector-output-format.md),
# around the composites' pictures and boxes.


@pytest.mark.parametrize(
    ("said", "written", "note"),
    [
        ("1.4", "1.4", None),
        ("1.6", "1.6", None),  # a newer version read is kept
        (1.4, "1.4", "info.format_version 1.4 written as '1.4'"),  # a number, as some tools write
        (1, "1.4", "info.format_version 1 written as '1.4'"),
        ("1.1", "1.4", "info.format_version '1.1' written as '1.4'"),  # validator reads >= 1.3
        (None, "1.4", "no info.format_version: read as 1.x, written as '1.4'"),  # zamba's
    ],
)
def test_format_version_is_read_as_text_or_number_and_written_as_text(said, written, note):
    data = {"info": {} if said is None else {"format_version": said}}
    assert written_version(data, "md.json") == (
        written,
        None if note is None else f"--detections md.json: {note}",
    )


def test_a_numeric_or_missing_version_gives_output_megadetector_reads(
    camera, model_224, tmp_path, capsys
):
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    md["info"]["format_version"] = 1.4
    # a video (the format's frame_rate, frames_processed, frame_number): noted, not read
    md["images"].append(
        {
            "file": "clips/v.mp4",
            "frame_rate": 30,
            "frames_processed": [0, 30],
            "detections": [
                {"category": "1", "conf": 0.9, "frame_number": 30, "bbox": [0.1, 0.1, 0.2, 0.2]}
            ],
        }
    )
    numeric, unsaid = tmp_path / "numeric.json", tmp_path / "unsaid.json"
    numeric.write_text(json.dumps(md))
    del md["info"]["format_version"]
    unsaid.write_text(json.dumps(md))
    for source in (numeric, unsaid):
        target = tmp_path / f"out-{source.name}"
        assert (
            _predict(
                out,
                "--detections",
                source,
                "--output",
                target,
                "--model",
                model_224,
                "--cls",
                "climber,runner",
            )
            == 0
        )
        result = json.loads(target.read_text())
        assert result["info"]["format_version"] == "1.4"
        assert result["images"][-1] == md["images"][-1]
        assert result["info"]["classifier_metadata"]["n_classified"] == 9
        md_reference.assert_accepts(target)
    err = capsys.readouterr().err
    assert "info.format_version 1.4 written as '1.4'" in err
    assert "no info.format_version: read as 1.x, written as '1.4'" in err
    assert "clips/v.mp4 detection 0: a video's frame: not classified" in err


def test_renamed_categories_are_chosen_by_name_or_id(camera, model_224, tmp_path, capsys):
    """AddaxAI names detection categories after its own classes, so no "animal" is left:
    every category but people and vehicles is cropped, or those --detection-categories names."""
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    md["detection_categories"] = {"1": "Red fox", "2": "Human", "3": "Car", "4": "roe deer"}
    for image in md["images"]:
        image["detections"][0]["category"] = "4"  # one animal per picture is a deer
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(md))
    targets = []

    def run(*flags: str) -> tuple[int, str, str]:
        targets.append(tmp_path / f"out{len(targets)}.json")
        code = _predict(
            out,
            "--detections",
            renamed,
            "--output",
            targets[-1],
            "--model",
            model_224,
            "--cls",
            "climber,runner",
            *flags,
        )
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run()[:2] == (
        0,
        "classified 9 Red fox/roe deer detections (of 15 in "
        f"{renamed}) in 3 images; wrote {targets[0]} and "
        f"{targets[0].with_suffix('.csv')}\n",
    )
    assert "classified 3 roe deer detections" in run("--detection-categories", "ROE DEER")[1]
    rows = list(csv.DictReader(targets[-1].with_suffix(".csv").open()))
    assert sum(r["note"] == "category Red fox: not classified" for r in rows) == 9
    assert "classified 9 Red fox/roe deer" in run("--detection-categories", "1, roe deer")[1]
    md_reference.assert_accepts(*targets)
    code, _, err = run("--detection-categories", "moose,deer")
    assert code == 2 and err.strip().endswith(
        f"--detection-categories 'moose', 'deer': not in --detections {renamed}, whose "
        "detection categories are 1 'Red fox', 2 'Human', 3 'Car', 4 'roe deer'"
    )
    md["detection_categories"] = {"1": "person", "2": "Vehicle", "3": "empty", "4": "humans"}
    renamed.write_text(json.dumps(md))
    code, _, err = run()
    assert code == 1 and "no animal category to classify" in err


def test_earlier_classifications_stay_where_we_do_not_classify(
    camera, model_224, index_224, tmp_path, capsys
):
    """A file an earlier classifier already classified: its classes stay on the boxes we do
    not classify (too faint, on a picture we cannot read), ours replace them on the others;
    ids never collide and every category keeps a description."""
    out, md_path, _ = camera
    md = json.loads(md_path.read_text())
    md["info"].update(
        format_version="1.6",
        classifier="speciesnet v4",
        classification_completion_time="2026-01-02 10:00:00",
        classifier_metadata={"typical_classification_threshold": 0.75},
    )
    md["classification_categories"] = {"0": "red fox", "7": "badger", "9": "elk"}
    md["classification_category_descriptions"] = {
        "0": "0a1b;mammalia;carnivora;canidae;vulpes;vulpes;red fox",
        "7": "7c2d;mammalia;carnivora;mustelidae;meles;meles;european badger",
        "9": "9e3f;mammalia;artiodactyla;cervidae;cervus;canadensis;elk",
    }
    for image in md["images"]:
        for det in image["detections"]:
            if det["category"] == "1":
                det["classifications"] = [["7", 0.8], ["0", 0.15]]
    md["images"].append(
        {
            "file": "images/gone.jpg",
            "detections": [
                {
                    "category": "1",
                    "conf": 0.9,
                    "bbox": [0.1, 0.1, 0.2, 0.2],
                    "classifications": [["0", 0.9]],
                }
            ],
        }
    )
    earlier, target = tmp_path / "earlier.json", tmp_path / "mixed.json"
    earlier.write_text(json.dumps(md))
    assert (
        _predict(
            out,
            "--detections",
            earlier,
            "--output",
            target,
            "--model",
            model_224,
            "--index",
            index_224,
            "--k",
            3,
        )
        == 3
    )
    assert (
        "holds speciesnet v4's classifications: replaced on 9, kept on 4 detections (those "
        "not classified here); taxoclip's categories are numbered from 10"
    ) in capsys.readouterr().err
    result = json.loads(target.read_text())
    names, descriptions = (
        result["classification_categories"],
        result["classification_category_descriptions"],
    )
    ours = {k for k in names if int(k) >= 10}
    assert set(names) == ours | {"0", "7"}  # elk: no detection refers to it any more
    assert set(descriptions) == set(names)
    assert {k: descriptions[k] for k in ("0", "7")} == {
        k: md["classification_category_descriptions"][k] for k in ("0", "7")
    }
    assert all(descriptions[k].count(";") == 6 for k in ours)
    gone = md["images"][-1]
    for before, after in zip(md["images"], result["images"], strict=True):
        for det_before, det_after in zip(before["detections"], after["detections"], strict=True):
            ids = {c for c, _ in det_after.get("classifications", [])}
            if before is not gone and det_before["category"] == "1" and det_before["conf"] >= 0.2:
                assert len(ids) == 3 and ids <= ours
            else:
                assert det_after == det_before
    metadata = result["info"]["classifier_metadata"]
    assert metadata["earlier_classifier"] == {
        "classifier": "speciesnet v4",
        "classification_completion_time": "2026-01-02 10:00:00",
        "classifier_metadata": {"typical_classification_threshold": 0.75},
    }
    assert metadata["typical_classification_threshold"] == 0.5
    assert result["info"]["format_version"] == "1.6"
    md_reference.assert_accepts(target)


def test_our_taxonomy_strings_are_the_ones_megadetector_parses():
    """MegaDetector's smoothing (wi_taxonomy_utils.clean_taxonomy_string) reads the seven-part
    Wildlife Insights string, lower case, starting at class; ``|`` separates descriptions."""
    lineage = ["Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Vulpes", "vulpes"]
    fox = ";mammalia;carnivora;canidae;vulpes;vulpes;red fox"
    assert taxonomy_string(lineage, "Red fox") == fox
    assert taxonomy_string(lineage[:5], "Canidae") == ";mammalia;carnivora;canidae;;;canidae"
    assert taxonomy_string(lineage[:2], "Chordata") == ";;;;;;chordata"  # above class
    assert taxonomy_string([], "a;b|c") == ";;;;;;a,b/c"
    row = dict(
        zip(
            ("kingdom", "phylum", "class", "order", "family", "genus", "species_epithet"),
            lineage,
            strict=True,
        ),
        species="Vulpes vulpes",
        common_name="",
    )
    assert label_of(row) == (
        "Vulpes vulpes",
        ";mammalia;carnivora;canidae;vulpes;vulpes;vulpes vulpes",
        "species",
    )


def test_megadetector_validator_refuses_what_we_wrote_before(tmp_path):
    """The check is not empty: MegaDetector's validator refuses a failed picture that keeps
    its boxes, as taxoclip wrote them before."""
    if not md_reference.available():
        pytest.skip(md_reference.MISSING)
    doc = {
        "info": {"format_version": "1.4"},
        "detection_categories": {"1": "animal"},
        "images": [
            {
                "file": "a.jpg",
                "failure": "taxoclip: cannot read image",
                "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1]}],
            }
        ],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    (verdict,) = md_reference.verdicts((path, ["animal"]))
    assert verdict["errors"] == ["Image a.jpg has a failure value but a non-null detections array"]


# --------------------------------------------------------------------------- real files

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"  # beside the checkout
REAL_SAMPLES = SHARED / "real-samples" / "megadetector"


class Real(NamedTuple):
    """What a real file gives when the pictures at even places in its list are laid out and
    the others are missing (counted by hand from the files: boxes of categories other than
    people and vehicles with conf >= 0.2, on laid-out pictures; pictures with such boxes
    that are missing)."""

    classified: int
    failed: int
    version: str  # written
    smoothing: str = "ok"  # or the start of MegaDetector's error
    warning: str = ""  # the validator's warning about a field of theirs, kept as read


#: file → its outcome, or the reason it is refused
REAL_OUTCOMES: dict[str, Real | str] = {
    # renamed categories (no "animal"), earlier classes without descriptions, extra keys
    "addaxai_nzi_deployment002_v1.4_excerpt.json": Real(
        3, 1, "1.4", warning="non-standard key forbidden_classes"
    ),
    "animlml_small_animal_sample_v1.6.json": Real(3, 3, "1.6"),  # one category: "object"
    "animlpy_md_gt_v3.0.json": "info.format_version: expected 1.x (MegaDetector's formats are "
    "1.0 to 1.6), got '3.0'",
    "ct_expected_output_DRAFT_v1.1.json": Real(12, 10, "1.4"),  # 1.1: the validator reads >= 1.3
    "md_format_doc_example_v1.6.json": Real(1, 0, "1.6"),  # failures, a video, a classified box
    # its descriptions ("animalia;…;didelphisvirginiana", six parts) stay on the 10 missing
    # pictures' boxes, and MegaDetector's smoothing refuses them, as it refuses the file read
    "zamba_ena24_md_annotations_v1.4.json": Real(
        11, 10, "1.4", smoothing="ValueError: Invalid taxonomy string: animalia;chordata;"
    ),
    "zamba_megadetector_output_noversion.json": Real(  # "info": {}
        1, 1, "1.4", warning="corrupted_image.jpg has a failure value, should also have a null"
    ),
}


def _lay_out_pictures(md: dict, root: Path) -> None:
    """Small real JPEGs at the relative paths of the pictures at even places in the file's
    list; the others, and absolute paths (outside the test), stay missing."""
    root.mkdir()
    for k, image in enumerate(md["images"][::2]):
        path = Path(image["file"])
        if not path.is_absolute():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.effect_noise((160, 120), 20 + k).convert("RGB").save(root / path, quality=90)


@pytest.mark.parametrize("name", sorted(REAL_OUTCOMES))
def test_real_megadetector_files(name, model_224, index_224, tmp_path, capsys):
    """Each real file from the field is read (or refused, saying why), its boxes on the
    laid-out pictures classified, the rest kept as read, and MegaDetector's validator and
    smoothing take the output as they take the file itself."""
    source = REAL_SAMPLES / name
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"{REAL_SAMPLES}: ../shared/real-samples not present in this clone")
    md = json.loads(source.read_text(encoding="utf-8"))
    _lay_out_pictures(md, tmp_path / "pictures")
    target = tmp_path / "out.json"
    code = _predict(
        tmp_path / "pictures",
        "--detections",
        source,
        "--output",
        target,
        "--model",
        model_224,
        "--index",
        index_224,
        "--k",
        3,
    )
    expected = REAL_OUTCOMES[name]
    if isinstance(expected, str):
        assert code == 1 and expected in capsys.readouterr().err and not target.exists()
        return
    assert code == (3 if expected.failed else 0)
    result = json.loads(target.read_text(encoding="utf-8"))
    metadata = result["info"]["classifier_metadata"]
    assert (metadata["n_classified"], metadata["n_failed"], result["info"]["format_version"]) == (
        expected.classified,
        expected.failed,
        expected.version,
    )
    names = result["classification_categories"]
    assert set(result["classification_category_descriptions"]) == set(names)
    ours = set(names) - set(md.get("classification_categories", {}))
    classified = 0
    for before, after in zip(md["images"], result["images"], strict=True):
        assert {k: v for k, v in after.items() if k != "detections"} == {
            k: v for k, v in before.items() if k != "detections"
        }
        for det_before, det_after in zip(
            before.get("detections") or [], after.get("detections") or [], strict=True
        ):
            if {c for c, _ in det_after.get("classifications", [])} & ours:
                classified += 1
                det_after = {k: v for k, v in det_after.items() if k != "classifications"}
                det_before = {k: v for k, v in det_before.items() if k != "classifications"}
            assert det_after == det_before  # what we did not classify is as it was read
    assert classified == expected.classified
    if not md_reference.available():
        pytest.skip(md_reference.MISSING)
    categories = metadata["detection_categories"]
    verdict, theirs = md_reference.verdicts((target, categories), (source, categories))
    assert verdict["errors"] == []
    # the one warning there may be is about a field of theirs, kept as read
    assert len(verdict["warnings"]) == bool(expected.warning)
    assert all(expected.warning in w for w in verdict["warnings"])
    assert verdict["image"].startswith(expected.smoothing)
    assert verdict["sequence"].startswith(expected.smoothing)
    if expected.smoothing != "ok":  # the file read is refused the same way
        assert theirs["image"].startswith(expected.smoothing)


def test_every_real_megadetector_file_is_tested():
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"{REAL_SAMPLES}: ../shared/real-samples not present in this clone")
    assert sorted(p.name for p in REAL_SAMPLES.glob("*.json")) == sorted(REAL_OUTCOMES)

import csv
import hashlib
import json
import struct
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from PIL import Image
from rapidfuzz.distance import Levenshtein

import taxoclip.synth.raw as raw_package
from taxoclip.cli import main
from taxoclip.synth import SynthConfig, generate
from taxoclip.synth.raw import backbone, dwca, misnames, occurrences, spec

CONFIG = SynthConfig(species=30, images_per_species=8, image_size=32, seed=5, raw_source=True)


def read_table(path: Path, delimiter: str = "\t") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load_rgb(path: Path, size: int = 32) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32)


def pdq_distance(a: Path, b: Path) -> int:
    hashes = []
    for path in (a, b):
        with Image.open(path) as image:
            hashes.append(pdqhash.compute(np.asarray(image.convert("RGB")))[0])
    return int((hashes[0] != hashes[1]).sum())


class Raw:
    """The generated raw source, parsed once."""

    def __init__(self, out: Path):
        self.out = out
        self.raw = out / "raw"
        self.dwca = self.raw / "dwca"
        self.occurrences = read_table(self.dwca / "occurrence.txt")
        self.media = read_table(self.dwca / "multimedia.txt")
        self.truth = read_table(self.raw / "truth.csv", delimiter=",")
        self.taxa = read_table(self.raw / "backbone" / "Taxon.tsv")
        self.vernacular = read_table(self.raw / "backbone" / "VernacularName.tsv")
        self.species = {int(r["species_id"]): r for r in read_table(out / "species.csv", ",")}
        self.images = read_table(out / "images.csv", ",")
        self.occurrence = {r["gbifID"]: r for r in self.occurrences}
        self.by_file = {r["file"]: r for r in self.truth}
        self.names = {r["canonicalName"] for r in self.taxa}

    def rows(self, fault: str) -> list[dict[str, str]]:
        return [r for r in self.truth if fault in r["faults"].split(";")]

    def path(self, row: dict[str, str]) -> Path:
        return self.dwca / row["file"]

    def name(self, row: dict[str, str]) -> str:
        return self.occurrence[row["gbifID"]]["scientificName"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Raw:
    out = tmp_path_factory.mktemp("raw") / "synth"
    result = generate(out, CONFIG, progress=False)
    assert result.raw_source == out / "raw"
    return Raw(out)


def test_archive_parses_and_every_media_row_joins_an_existing_file(raw):
    assert list(raw.occurrences[0]) == list(dwca.OCCURRENCE_COLUMNS)
    assert list(raw.media[0]) == list(dwca.MULTIMEDIA_COLUMNS)
    ids = [r["gbifID"] for r in raw.occurrences]
    assert len(set(ids)) == len(ids) and ids == sorted(ids, key=int)
    assert {r["gbifID"] for r in raw.media} == set(ids)
    for row in raw.media:
        assert row["identifier"].startswith("media/")
        assert (raw.dwca / row["identifier"]).is_file()
    assert len({r["identifier"] for r in raw.media}) == len(raw.media)
    assert sorted(p.name for p in (raw.dwca / "media").iterdir()) == sorted(
        Path(r["identifier"]).name for r in raw.media
    )
    # A few occurrences carry two images.
    per_occurrence = Counter(r["gbifID"] for r in raw.media)
    assert 1 <= sum(n == 2 for n in per_occurrence.values()) < 0.1 * len(ids)

    meta = ET.parse(raw.dwca / "meta.xml").getroot()
    ns = {"d": "http://rs.tdwg.org/dwc/text/"}
    core, extension = meta.find("d:core", ns), meta.find("d:extension", ns)
    assert core.find("d:files/d:location", ns).text == "occurrence.txt"
    assert extension.find("d:files/d:location", ns).text == "multimedia.txt"
    assert core.get("rowType").endswith("/Occurrence")
    terms = [f.get("term").rsplit("/", 1)[1] for f in core.findall("d:field", ns)]
    assert terms == list(dwca.OCCURRENCE_COLUMNS)
    terms = [f.get("term").rsplit("/", 1)[1] for f in extension.findall("d:field", ns)]
    assert terms == list(dwca.MULTIMEDIA_COLUMNS)


def test_truth_has_one_row_per_media_row_and_consistent_expectations(raw):
    assert len(raw.truth) == len(raw.media)
    seen_per_id: Counter[str] = Counter()
    for truth, media in zip(raw.truth, raw.media, strict=True):
        assert (truth["gbifID"], truth["file"]) == (media["gbifID"], media["identifier"])
        assert int(truth["media_index"]) == seen_per_id[truth["gbifID"]]
        seen_per_id[truth["gbifID"]] += 1
        faults = [f for f in truth["faults"].split(";") if f]
        assert len(faults) <= 1 and set(faults) <= set(spec.FAULTS)
        stage = spec.REJECT_STAGE.get(faults[0], "") if faults else ""
        assert truth["expected_stage"] == stage
        assert truth["expected"] == ("reject" if stage else "keep")
        fault = faults[0] if faults else ""
        assert truth["expected_status"] == spec.STATUS_BY_FAULT.get(fault, "exact")

    faults = Counter(f for r in raw.truth for f in r["faults"].split(";") if f)
    assert set(faults) == set(spec.FAULTS), "every fault appears at least once"
    manifest = json.loads((raw.raw / "raw.json").read_text())
    assert manifest["counts"]["faults"] == {f: faults[f] for f in spec.FAULTS}
    assert all(n >= 1 for n in manifest["counts"]["corrupt_kinds"].values())
    assert manifest["rates"]["extra_records"] == spec.EXTRA_FAULT_RATES
    synth = json.loads((raw.out / "synth.json").read_text())
    assert synth["counts"]["raw_source"] == manifest["counts"]
    assert synth["config"]["raw_source"] is True
    # Faults are a few percent each, not the bulk of the data.
    assert max(faults.values()) < 0.08 * len(raw.truth)


def test_every_training_image_is_kept_once_and_junk_is_all_rejected(raw):
    train = Counter(int(r["species_id"]) for r in raw.images if r["split"] == "train")
    kept = Counter(int(r["species_id"]) for r in raw.truth if r["expected"] == "keep")
    assert kept == train
    for row in raw.truth:
        if row["expected"] == "keep":
            sp = raw.species[int(row["species_id"])]
            expected = sp["genus"] if row["faults"] == "higher_rank_only" else sp["species"]
            assert row["true_name"] == expected
    junk = [r for r in raw.truth if r["faults"] in ("corrupt", "bomb", "label")]
    assert junk and all(r["species_id"] == "" for r in junk)


def test_same_seed_gives_byte_identical_raw_tree(raw, tmp_path):
    again = tmp_path / "again"
    generate(again, CONFIG, progress=False)
    assert tree_digest(again / "raw") == tree_digest(raw.raw)


def test_backbone_is_a_consistent_gbif_taxon_table(raw):
    assert list(raw.taxa[0]) == list(backbone.TAXON_COLUMNS)
    by_id = {r["taxonID"]: r for r in raw.taxa}
    assert len(by_id) == len(raw.taxa)
    assert {r["taxonRank"] for r in raw.taxa} == set(spec.GBIF_RANKS)
    for row in raw.taxa:
        assert row["scientificName"].startswith(row["canonicalName"])
        if row["taxonRank"] != "kingdom":
            assert len(row["scientificName"]) > len(row["canonicalName"]) + 1  # authorship
            assert row["parentNameUsageID"] in by_id
        if row["taxonomicStatus"] == "accepted":
            assert row["acceptedNameUsageID"] == ""
            parent = by_id.get(row["parentNameUsageID"])
            rank = spec.GBIF_RANKS.index(row["taxonRank"])
            if parent:
                assert spec.GBIF_RANKS.index(parent["taxonRank"]) == rank - 1
                assert parent["kingdom"] == row["kingdom"]
        else:
            assert row["taxonomicStatus"] in backbone.SYNONYM_STATUSES
            assert by_id[row["acceptedNameUsageID"]]["taxonomicStatus"] == "accepted"
        if row["taxonRank"] == "species":
            assert row["canonicalName"] == f"{row['genus']} {row['specificEpithet']}"
    # Every species of the tree is an accepted species row with its lineage.
    accepted = {
        (r["canonicalName"], r["kingdom"]): r
        for r in raw.taxa
        if r["taxonomicStatus"] == "accepted"
    }
    for sp in raw.species.values():
        assert accepted[sp["species"], sp["kingdom"]]["family"] == sp["family"]
    statuses = {r["taxonomicStatus"] for r in raw.taxa}
    assert statuses == {"accepted", *backbone.SYNONYM_STATUSES}

    languages = Counter(r["language"] for r in raw.vernacular)
    assert languages["en"] >= 10 and set(languages) - {"en"}
    assert all(r["taxonID"] in by_id for r in raw.vernacular)
    common = {r["vernacularName"] for r in raw.vernacular if r["language"] == "en"}
    assert {sp["common_name"] for sp in raw.species.values() if sp["common_name"]} <= common
    version = (raw.raw / "backbone" / "VERSION").read_text().strip()
    seed = json.loads((raw.out / "synth.json").read_text())["config"]["seed"]
    assert version == f"synthtol-backbone-seed{seed}-v1"


def test_synonym_records_name_a_synonym_of_the_true_species(raw):
    by_id = {r["taxonID"]: r for r in raw.taxa}
    synonyms = {r["canonicalName"]: r for r in raw.taxa if r["taxonomicStatus"] != "accepted"}
    rows = raw.rows("synonym")
    assert rows
    for row in rows:
        taxon = synonyms[raw.name(row)]
        accepted = by_id[taxon["acceptedNameUsageID"]]["canonicalName"]
        assert accepted == row["true_name"] == raw.species[int(row["species_id"])]["species"]
    # Synonyms often sit in another genus.
    assert any(t["genus"] != by_id[t["acceptedNameUsageID"]]["genus"] for t in synonyms.values())


def test_misspellings_are_invalid_and_nearest_to_the_true_name(raw):
    species_names = sorted(n for n in raw.names if " " in n)
    rows = raw.rows("misspelling")
    assert rows
    for row in rows:
        name = raw.name(row)
        assert name not in raw.names
        distance = Levenshtein.distance(name, row["true_name"])
        assert 1 <= distance <= 2
        others = [Levenshtein.distance(name, n) for n in species_names if n != row["true_name"]]
        assert min(others) > distance
        true_words = row["true_name"].split()
        changed = [t for w, t in zip(name.split(), true_words, strict=True) if w != t]
        assert len(changed) == 1 and len(changed[0]) >= misnames.MISSPELLING_MIN_LENGTH


def test_authorship_missing_ranks_and_higher_rank_only(raw):
    forms = set()
    for row in raw.rows("authorship"):
        name = raw.name(row)
        assert name.startswith(row["true_name"] + " ")
        forms.add(name[len(row["true_name"]) + 1 :].replace("1", "9")[:3])
    assert len(forms) >= 3
    for row in raw.rows("missing_ranks"):
        occurrence = raw.occurrence[row["gbifID"]]
        assert raw.name(row) == row["true_name"]
        assert sum(occurrence[c] == "" for c in spec.GIVEN_RANK_COLUMNS) >= 2
    rows = raw.rows("higher_rank_only")
    assert rows
    for row in rows:
        sp = raw.species[int(row["species_id"])]
        assert row["true_name"] == sp["genus"] and row["expected_status"] == "higher_rank"
        assert raw.name(row) in (sp["genus"], f"{sp['genus']} sp.", f"{sp['genus']} spec.")
    clean = [r for r in raw.truth if r["faults"] == ""]
    assert all(raw.occurrence[r["gbifID"]]["kingdom"] for r in clean)


def test_unresolvable_names_are_far_from_every_backbone_name(raw):
    rows = raw.rows("unresolvable")
    assert rows
    words = {w for n in raw.names for w in n.split()}
    for row in rows:
        name = raw.name(row)
        assert row["true_name"] == "" and row["expected_stage"] == "names"
        assert min(Levenshtein.distance(name, n) for n in raw.names) > 2
        assert min(Levenshtein.distance(name.split()[0], w) for w in words) > 2
        assert all(raw.occurrence[row["gbifID"]][c] == "" for c in spec.GIVEN_RANK_COLUMNS)


def test_homonym_binomials_exist_in_two_kingdoms_and_records_give_the_right_one(raw):
    accepted = defaultdict(set)
    for row in raw.taxa:
        if row["taxonomicStatus"] == "accepted":
            accepted[row["canonicalName"]].add(row["kingdom"])
    rows = raw.rows("homonym")
    assert rows
    for row in rows:
        sp = raw.species[int(row["species_id"])]
        assert raw.name(row) == sp["species"]
        assert len(accepted[sp["species"]]) == 2 and len(accepted[sp["genus"]]) == 2
        occurrence = raw.occurrence[row["gbifID"]]
        assert (occurrence["kingdom"], occurrence["phylum"]) == (sp["kingdom"], sp["phylum"])
    # All records of a homonym species are marked, and nothing else is ambiguous.
    homonym_species = {r["species_id"] for r in rows}
    for row in raw.truth:
        if row["species_id"] in homonym_species:
            assert row["faults"] == "homonym"
    ambiguous = {n for n, kingdoms in accepted.items() if len(kingdoms) > 1 and " " in n}
    assert ambiguous == {raw.species[int(s)]["species"] for s in homonym_species}


def test_duplicates_follow_their_clean_original(raw):
    gbif_rows = {r["gbifID"]: r for r in raw.truth}
    clean = [r for r in raw.truth if r["faults"] == ""]
    for fault in ("exact_duplicate", "near_duplicate"):
        rows = raw.rows(fault)
        assert rows
        for row in rows:
            original = gbif_rows[row["duplicate_of"]]
            assert original["faults"] == "" and original["expected"] == "keep"
            assert int(row["gbifID"]) > int(original["gbifID"])
            assert raw.name(row) == raw.name(original)
            copy, first = raw.path(row).read_bytes(), raw.path(original).read_bytes()
            if fault == "exact_duplicate":
                assert hashlib.md5(copy).digest() == hashlib.md5(first).digest()
                continue
            assert copy != first
            with Image.open(raw.path(row)) as image:
                assert min(image.size) >= spec.MIN_SIDE
            # Near by PDQ (the usual threshold is 31 of 256 bits), and nearer than other images.
            distance = pdq_distance(raw.path(row), raw.path(original))
            assert distance <= 31
            assert all(
                pdq_distance(raw.path(row), raw.path(r)) > distance + 8
                for r in clean[:30]
                if r is not original
            )
    files = [raw.path(r).read_bytes() for r in raw.truth if r["faults"] == ""]
    assert len(set(files)) == len(files), "clean records are all distinct"


def test_corrupt_files_cannot_be_decoded_and_cover_every_kind(raw):
    rows = raw.rows("corrupt")
    for row in rows:
        with pytest.raises(Exception), Image.open(raw.path(row)) as image:  # noqa: B017
            image.load()  # any decoder error will do
        assert raw.path(row).suffix == ".jpg"
    kinds = set()
    for row in rows:
        data = raw.path(row).read_bytes()
        if not data:
            kinds.add("zero_bytes")
        elif data.startswith(b"<!DOCTYPE html"):
            kinds.add("html_page")
        elif data.startswith(b"\xff\xd8"):
            kinds.add("truncated")
        else:
            kinds.add("random_bytes")
    assert kinds == set(spec.CORRUPT_KINDS)


def test_labels_are_white_cards_with_dark_text_from_museums(raw):
    rows = raw.rows("label")
    assert rows
    for row in rows:
        with Image.open(raw.path(row)) as image:
            pixels = np.asarray(image.convert("L"))
        assert np.median(pixels) > 220 and (pixels < 60).mean() > 0.005
        occurrence = raw.occurrence[row["gbifID"]]
        assert occurrence["basisOfRecord"] == "PRESERVED_SPECIMEN"
        assert row["category"] == "museum_specimen" and row["expected_stage"] == "model_filter"


def test_unusual_modes_open_in_their_mode_and_are_kept(raw):
    expected = {
        "mode_cmyk": ("CMYK", "JPEG"),
        "mode_palette": ("P", "PNG"),
        "mode_16bit": ("I;16", "PNG"),
        "mode_alpha": ("RGBA", "PNG"),
    }
    for fault, (mode, fmt) in expected.items():
        rows = raw.rows(fault)
        assert rows
        for row in rows:
            with Image.open(raw.path(row)) as image:
                image.load()
                assert (image.mode, image.format) == (mode, fmt)
                assert min(image.size) >= spec.MIN_SIDE
            assert row["expected"] == "keep"
            media = next(m for m in raw.media if m["identifier"] == row["file"])
            assert media["format"] == f"image/{fmt.lower()}"


def test_bombs_declare_a_huge_size_in_a_tiny_file(raw):
    rows = raw.rows("bomb")
    assert rows
    for row in rows:
        data = raw.path(row).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width * height > 100_000_000 and len(data) < 200_000


def test_leaks_are_upscaled_test_images(raw):
    test_paths = {r["filepath"] for r in raw.images if r["split"] == "test"}
    rows = raw.rows("leak")
    assert rows
    for row in rows:
        assert row["leak_of"] in test_paths and row["expected_stage"] == "leak"
        with Image.open(raw.path(row)) as image:
            assert min(image.size) >= spec.MIN_SIDE
        difference = np.abs(load_rgb(raw.path(row)) - load_rgb(raw.out / row["leak_of"])).mean()
        assert difference < 8.0
        species_of_test = next(r for r in raw.images if r["filepath"] == row["leak_of"])
        assert row["species_id"] == species_of_test["species_id"]


def test_image_sizes_clean_and_too_small(raw):
    for row in raw.truth:
        if row["faults"] in ("", "synonym", "authorship", "homonym"):
            with Image.open(raw.path(row)) as image:
                assert image.format == "JPEG" and image.mode == "RGB"
                assert min(image.size) >= spec.MIN_SIDE and max(image.size) <= 320
                assert max(image.size) / min(image.size) <= 1.11
    for row in raw.rows("too_small"):
        with Image.open(raw.path(row)) as image:
            image.load()
            assert max(image.size) < spec.MIN_SIDE and min(image.size) >= 100


def test_categories_follow_basis_of_record_remarks_and_publisher(raw):
    categories = Counter(r["category"] for r in raw.truth)
    assert set(categories) == {"museum_specimen", "camera_trap", "citizen_science", "other"}
    for row in raw.truth:
        occurrence = raw.occurrence[row["gbifID"]]
        basis, remarks = occurrence["basisOfRecord"], occurrence["eventRemarks"]
        publisher = occurrence["publisher"]
        is_museum = basis == "PRESERVED_SPECIMEN" and publisher == occurrences.MUSEUM_PUBLISHER
        is_camera = basis == "MACHINE_OBSERVATION" and remarks == "camera trap"
        is_citizen = basis == "HUMAN_OBSERVATION" and publisher == occurrences.CITIZEN_PUBLISHER
        if row["category"] == "other":
            assert basis in ("OCCURRENCE", "OBSERVATION") and "camera" not in remarks
        assert (is_museum, is_camera, is_citizen) == (
            row["category"] == "museum_specimen",
            row["category"] == "camera_trap",
            row["category"] == "citizen_science",
        )
        media = next(m for m in raw.media if m["identifier"] == row["file"])
        assert (media["publisher"], media["license"]) == (publisher, occurrence["license"])


def test_a_failing_raw_source_leaves_nothing_behind(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(raw_package, "write_raw_source", explode)
    config = SynthConfig(species=4, images_per_species=3, raw_source=True)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "out", config, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_small_trees_still_work(tmp_path):
    out = tmp_path / "tiny"
    generate(out, SynthConfig(species=3, images_per_species=2, raw_source=True), progress=False)
    truth = read_table(out / "raw" / "truth.csv", delimiter=",")
    assert sum(r["expected"] == "keep" for r in truth) == 3


def test_misspell_applies_the_requested_edit():
    rng = np.random.default_rng(0)
    valid = {"Brastonus pelagicus", "Brastonus", "Tumba"}
    others = ["Brastonus pelagicus", "Tumba felix"]
    results = {
        edit: misnames.misspell("Brastonus pelagicus", edit, rng, valid, others)
        for edit in misnames.MISSPELLING_EDITS
    }
    assert len(results["insertion"]) == len("Brastonus pelagicus") + 1
    assert len(results["deletion"]) == len("Brastonus pelagicus") - 1
    assert sorted(results["transposition"]) == sorted("Brastonus pelagicus")
    assert Levenshtein.distance(results["substitution"], "Brastonus pelagicus") == 1
    assert misnames.misspell("Aus bus", "deletion", rng, valid, others) is None  # words too short


def test_cli_writes_the_raw_source(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", str(out), "--species", "30", "--images-per-species", "8", "--raw-source"]
    assert main([*args, "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"raw source: {out / 'raw'}" in printed
    assert (out / "raw" / "dwca" / "occurrence.txt").is_file()
    assert (out / "raw" / "backbone" / "Taxon.tsv").is_file()
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "--raw-source" in capsys.readouterr().out

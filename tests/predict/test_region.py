"""``--region`` / ``--deny``: regional lists with roll-up to the nearest allowed ancestor."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from taxoclip.cli import main
from taxoclip.errors import UsageError
from taxoclip.predict import TextIndex
from taxoclip.predict.region import Region, landing_table, read_taxon_list

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
HIGH = ["Animalia", "Chordata", "Mammalia"]
TREE = [  # order, family, genus, epithet, common
    ("Carnivora", "Felidae", "Panthera", "leo", "lion"),
    ("Carnivora", "Felidae", "Panthera", "tigris", "tiger"),
    ("Carnivora", "Felidae", "Felis", "catus", "cat"),
    ("Carnivora", "Canidae", "Canis", "lupus", "wolf"),
    ("Rodentia", "Muridae", "Mus", "musculus", "house mouse"),
]


@pytest.fixture
def tree_index():
    names = [[[*HIGH, *row[:4]], row[4]] for row in TREE]
    return TextIndex(torch.nn.functional.normalize(torch.randn(8, len(names)), dim=0), names)


def _write(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _landing(region):
    return {row["species"]: (row["lands_on"], row["rank_landed"]) for row in landing_table(region)}


def test_roll_up_to_the_nearest_allowed_ancestor(tree_index, tmp_path):
    """Hand-computed: the list names Panthera leo and the genus Canis (Ursus arctos is not
    in the index). A tiger lands on its genus (Panthera occurs, via the lion), a cat on
    its family, a wolf stays a species (its genus is listed), a mouse only on its class."""
    listed = _write(
        tmp_path / "region.csv",
        ["scientificName", "genus", "taxonRank"],
        [
            ["Panthera leo (Linnaeus, 1758)", "", "SPECIES"],
            ["", "Canis", "GENUS"],
            ["Ursus arctos Linnaeus, 1758", "", "SPECIES"],
        ],
    )
    allow = read_taxon_list(listed, tree_index)
    assert allow.unknown == ["Ursus arctos Linnaeus, 1758"] and allow.n_rows == 3
    assert "1 of 3 names are not in the index" in allow.warning("--region")
    region = Region.build(tree_index, allow, None)
    assert _landing(region) == {
        "Panthera leo": ("Panthera leo", "species"),
        "Panthera tigris": ("Panthera", "genus"),
        "Felis catus": ("Felidae", "family"),
        "Canis lupus": ("Canis lupus", "species"),
        "Mus musculus": ("Mammalia", "class"),
    }
    denied = read_taxon_list(
        _write(tmp_path / "deny.csv", ["genus"], [["Panthera"]]), tree_index, "--deny"
    )
    region = Region.build(tree_index, allow, denied)
    landing = _landing(region)
    assert landing["Panthera leo"] == landing["Panthera tigris"] == ("Felidae", "family")
    assert landing["Canis lupus"] == ("Canis lupus", "species")
    # a deny list alone: everything occurs except the denied taxa, which roll up past them
    species = _write(tmp_path / "deny2.csv", ["genus", "species"], [["Felis", "catus"]])
    region = Region.build(tree_index, None, read_taxon_list(species, tree_index, "--deny"))
    assert _landing(region)["Felis catus"] == ("Felis", "genus")
    assert _landing(region)["Panthera leo"] == ("Panthera leo", "species")


def test_rank_groups_sum_what_lands_there(tree_index, tmp_path):
    listed = _write(tmp_path / "r.csv", ["species"], [["Panthera leo"], ["Canis lupus"]])
    region = Region.build(tree_index, read_taxon_list(listed, tree_index), None)
    group, labels, commons = region.groups("species")
    by_label = {label[-1]: i for i, label in enumerate(labels)}
    # leo, lupus as species; tigris → Panthera, catus → Felidae, mouse → Mammalia
    assert set(by_label) == {"leo", "lupus", "Panthera", "Felidae", "Mammalia"}
    assert commons[by_label["leo"]] == "lion" and commons[by_label["Panthera"]] == ""
    group, labels, _ = region.groups("family")
    assert sorted(label[-1] for label in labels) == ["Canidae", "Felidae", "Mammalia"]


def test_empty_and_unresolvable_lists_are_usage_errors(tree_index, tmp_path):
    with pytest.raises(UsageError, match="lists no taxa"):
        read_taxon_list(_write(tmp_path / "e.csv", ["species"], []), tree_index)
    with pytest.raises(UsageError, match="none of its 1 taxa is in the index"):
        read_taxon_list(_write(tmp_path / "u.csv", ["species"], [["Ursus arctos"]]), tree_index)
    with pytest.raises(UsageError, match="no taxon columns"):
        read_taxon_list(_write(tmp_path / "n.csv", ["place"], [["Ohio"]]), tree_index)


def _species_rows(synth):
    with (synth / "species.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_with_region_scores_are_landed_sums(
    synth_small, model_224, index_224, tmp_path, capsys
):
    """End to end on a real model: each row's score is the sum of the plain classifier's
    species probabilities over the species that land on that taxon."""
    from taxoclip.predict import TreeOfLifeClassifier

    species = _species_rows(synth_small)
    genus = species[0]["genus"]
    listed = _write(
        tmp_path / "region.csv",
        ["genus", "species", "scientific_name"],
        [
            [genus, "", ""],
            ["", species[-1]["species"], ""],
            ["", "", "Nonexistus fictus"],
            ["", "", "Alsonot here"],
        ],
    )
    image = synth_small / "test" / _first_test_image(synth_small)
    out = tmp_path / "rows.json"
    code = main(
        [
            "predict",
            str(image),
            "--model",
            str(model_224),
            "--index",
            str(index_224),
            "--region",
            str(listed),
            "--k",
            "50",
            "--format",
            "json",
            "--output",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "2 of 4 names are not in the index" in err and "Nonexistus fictus" in err
    rows = json.loads(out.read_text())
    plain = TreeOfLifeClassifier(model_str=str(model_224), index=index_224)
    probs = {r["species"]: r["score"] for r in plain.predict([str(image)], "species", k=1000)}
    region = Region.build(plain.index, read_taxon_list(listed, plain.index), None)
    expected: dict[tuple, float] = {}
    for (ranks, _), depth in zip(plain.index.names, region.landing.tolist(), strict=True):
        if depth >= 0:
            key = tuple(ranks[: depth + 1])
            expected[key] = expected.get(key, 0.0) + probs[f"{ranks[5]} {ranks[6]}"]
    assert len(rows) == len(expected)
    for row in rows:
        names = [
            row[c]
            for c in ("kingdom", "phylum", "class", "order", "family", "genus", "species_epithet")
        ]
        key = tuple(n for n in names if n)
        assert row["rank_landed"] == RANKS[len(key) - 1]
        assert row["score"] == pytest.approx(expected[key], abs=1e-5)
    landed = {row["rank_landed"] for row in rows}
    assert "species" in landed and landed - {"species"}  # some rolled up
    assert {row["genus"] for row in rows if row["rank_landed"] == "species"} >= {genus}


def _first_test_image(synth):
    with (synth / "test" / "metadata.csv").open(newline="") as handle:
        return next(csv.DictReader(handle))["filepath"]


def test_region_at_every_rank_deepest_and_errors(
    synth_small, model_224, index_224, tmp_path, capsys
):
    species = _species_rows(synth_small)
    listed = _write(tmp_path / "region.csv", ["species"], [[species[0]["species"]]])
    image = str(synth_small / "test" / _first_test_image(synth_small))
    base = [
        "predict",
        image,
        "--model",
        str(model_224),
        "--index",
        str(index_224),
        "--region",
        str(listed),
        "--format",
        "json",
        "-q",
    ]
    for rank in ("kingdom", "family", "genus"):
        out = tmp_path / f"{rank}.json"
        assert main([*base, "--rank", rank, "--output", str(out)]) == 0
        rows = json.loads(out.read_text())
        assert rows and all(RANKS.index(r["rank_landed"]) <= RANKS.index(rank) for r in rows)
    out = tmp_path / "deepest.json"
    assert main([*base, "--deepest-rank", "0.01", "--output", str(out)]) == 0
    row = json.loads(out.read_text())[0]
    names = [
        row[c]
        for c in ("kingdom", "phylum", "class", "order", "family", "genus", "species_epithet")
    ]
    deepest = max(i for i, n in enumerate(names) if n)
    assert row["rank"] == RANKS[deepest]
    capsys.readouterr()
    empty = _write(tmp_path / "empty.csv", ["species"], [])
    assert main([*base[:-5], "--region", str(empty), "-q"]) == 2
    assert "lists no taxa" in capsys.readouterr().err
    assert (
        main(["predict", image, "--model", str(model_224), "--cls", "a,b", "--region", str(listed)])
        == 2
    )

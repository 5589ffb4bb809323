"""The one scorer, on numbers worked out by hand: softmax, roll-up, subset, region, bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taxoclip.errors import UsageError
from taxoclip.runtime.index import TextIndex, read_subset
from taxoclip.runtime.scoring import LabelScorer, TreeScorer, softmax, topk
from taxoclip.taxonomy import Rank

HIGH = ["Animalia", "Chordata", "Mammalia", "Carnivora"]
TAXA = [  # family, genus, epithet, common
    ("Felidae", "Panthera", "leo", "lion"),
    ("Felidae", "Panthera", "tigris", "tiger"),
    ("Felidae", "Felis", "catus", "cat"),
    ("Canidae", "Canis", "lupus", "wolf"),
]


@pytest.fixture
def index():
    """Four species whose text columns are the axes of R^4: an image on an axis is that
    species, and its logits are ``scale`` on that column and 0 elsewhere."""
    names = [[[*HIGH, *row[:3]], row[3]] for row in TAXA]
    return TextIndex(np.eye(4, dtype=np.float32), names)


def softmax_row(logits):
    e = np.exp(np.asarray(logits, dtype=np.float64) - max(logits))
    return e / e.sum()


def test_species_and_rolled_up_rows(index):
    scorer = TreeScorer(index, logit_scale=2.0)
    features = np.array([[0.6, 0.8, 0.0, 0.0]], np.float32)  # between lion and tiger
    p = softmax_row([1.2, 1.6, 0.0, 0.0])
    species = scorer.rows(features, ["a.jpg"], "species", k=2)[0]
    assert [(r["species"], r["common_name"]) for r in species] == [
        ("Panthera tigris", "tiger"),
        ("Panthera leo", "lion"),
    ]
    assert [r["score"] for r in species] == pytest.approx([p[1], p[0]], abs=1e-6)
    genus = scorer.rows(features, ["a.jpg"], "genus", k=5)[0]
    # Felis and Canis tie: the lower position first, and genera are in label order
    assert [r["genus"] for r in genus] == ["Panthera", "Canis", "Felis"]
    assert [r["score"] for r in genus] == pytest.approx([p[0] + p[1], p[3], p[2]], abs=1e-6)
    assert list(genus[0]) == [
        "file_name",
        "kingdom",
        "phylum",
        "class",
        "order",
        "family",
        "genus",
        "score",
    ]
    # min_prob leaves small species out of the sums (pybioclip's rule)
    family = scorer.rows(features, ["a.jpg"], "family", k=5, min_prob=float(p[2]) + 1e-6)[0]
    assert [r["family"] for r in family] == ["Felidae"]
    assert family[0]["score"] == pytest.approx(p[0] + p[1], abs=1e-6)


def test_deepest_rank_stops_where_the_sum_clears(index):
    scorer = TreeScorer(index, logit_scale=2.0)
    features = np.array([[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], np.float32)
    p = softmax_row([1.2, 1.6, 0.0, 0.0])
    rows = scorer.deepest_rows(features, ["a", "b"], threshold=0.5)
    assert [len(r) for r in rows] == [1, 1]
    assert rows[0][0]["rank"] == "genus" and rows[0][0]["genus"] == "Panthera"
    assert rows[0][0]["species_epithet"] == "" and rows[0][0]["score"] == pytest.approx(p[0] + p[1])
    assert rows[1][0]["rank"] == "species" and rows[1][0]["species"] == "Canis lupus"
    with pytest.raises(UsageError, match=r"must be in \(0, 1\]"):
        scorer.deepest_rows(features, ["a", "b"], threshold=0.0)


def test_subset_reads_one_csv_format_and_names_the_unknown(index):
    scorer = TreeScorer(index, logit_scale=2.0)
    rank, values = read_subset("genus\nPanthera\nCanis\n", "s.csv")
    subset = scorer.subset(rank, values)
    assert [n[0][5] for n in subset.index.names] == ["Panthera", "Panthera", "Canis"]
    rows = subset.rows(np.array([[0, 0, 1.0, 0]], np.float32), ["x"], "species", k=5)[0]
    assert "Felis catus" not in {r["species"] for r in rows}
    assert sum(r["score"] for r in rows) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(UsageError, match="Unknown genus received: Ursus. Only known genus"):
        scorer.subset(Rank.GENUS, ["Panthera", "Ursus"])
    with pytest.raises(UsageError, match="first column of s.csv is named 'tribe'"):
        read_subset("tribe\nX\n", "s.csv")
    assert read_subset("species\nPanthera leo\n")[1] == ["Panthera leo"]


def test_region_landing_sums_and_rank_landed(index):
    # lion stays a species, tiger lands on its genus, cat on the family, wolf left out
    landing = np.array([6, 5, 4, -1])
    scorer = TreeScorer(index, logit_scale=2.0).with_landing(landing)
    features = np.array([[0.5, 0.5, 0.5, 0.5]], np.float32)  # every species alike: 1/4 each
    rows = {r["rank_landed"]: r for r in scorer.rows(features, ["x"], "species", k=10)[0]}
    assert set(rows) == {"species", "genus", "family"}  # the wolf's quarter is dropped
    assert [r["score"] for r in rows.values()] == pytest.approx([0.25] * 3)
    assert rows["species"]["species"] == "Panthera leo" and rows["species"]["common_name"] == "lion"
    assert rows["genus"]["genus"] == "Panthera" and rows["genus"]["species_epithet"] == ""
    assert rows["family"]["family"] == "Felidae" and rows["family"]["genus"] == ""
    deepest = scorer.deepest_rows(features, ["x"], threshold=0.5)[0][0]
    assert deepest["rank"] == "genus" and deepest["score"] == pytest.approx(0.5)  # lion + tiger


def test_label_scorer_bins_and_checks():
    matrix = np.eye(3, dtype=np.float32)
    features = np.array([[1.0, 0.0, 0.0]], np.float32)
    p = softmax_row([3.0, 0.0, 0.0])
    plain = LabelScorer(matrix, ["fish", "bird", "fern"], 3.0)
    assert [(r["classification"], r["score"]) for r in plain.rows(features, ["x"])[0]] == [
        ("fish", pytest.approx(p[0])),
        ("bird", pytest.approx(p[1])),
        ("fern", pytest.approx(p[2])),
    ]
    binned = LabelScorer(
        matrix,
        ["fish", "bird", "fern"],
        3.0,
        bins={"fish": "animal", "bird": "animal", "fern": "plant"},
    )
    rows = binned.rows(features, ["x"], k=1)[0]
    assert rows == [
        {"file_name": "x", "classification": "animal", "score": pytest.approx(p[0] + p[1])}
    ]
    with pytest.raises(UsageError, match="non-empty"):
        LabelScorer(matrix, ["fish", " ", "fern"], 3.0)
    with pytest.raises(UsageError, match="not allowed for bin values"):
        LabelScorer(
            matrix,
            ["fish", "bird", "fern"],
            3.0,
            bins={"fish": "animal", "bird": float("nan"), "fern": "plant"},
        )


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    logits = np.array([[0.0, math.log(3.0)], [1000.0, 1000.0]])
    probs = softmax(logits)
    np.testing.assert_allclose(probs, [[0.25, 0.75], [0.5, 0.5]])
    assert logits[1, 0] == 1000.0  # the input is kept
    assert softmax(logits.astype(np.float32)).dtype == np.float32


def test_topk_breaks_ties_by_position():
    values, positions = topk(np.array([[0.2, 0.5, 0.5, 0.1]], np.float32), 3)
    assert positions.tolist() == [[1, 2, 0]] and values.tolist()[0][0] == 0.5


def test_a_half_precision_index_scores_as_float32(index):
    half = TextIndex(index.embeddings.astype(np.float16), index.names)
    features = np.array([[0.6, 0.8, 0.0, 0.0]], np.float32)
    full = TreeScorer(index, 2.0).probs(features)
    assert TreeScorer(half, 2.0).probs(features) == pytest.approx(full, abs=1e-3)

import numpy as np
import pytest

from taxoclip.evaluate.hierarchical import mistake_severity, topk_at_ranks, unseen_accuracy
from taxoclip.taxonomy import Lineage


def lin(genus, species, family="F1", order="O1"):
    return Lineage("K", "P", "C", order, family, genus, species)


CANDIDATES = [
    lin("Ga", "a"),
    lin("Ga", "b"),
    lin("Gb", "c"),
    lin("Gc", "d", family="F2", order="O2"),
]


def test_rank_sums_can_be_right_when_the_species_is_wrong():
    # Image 0 is Ga a: species top-1 wrong (Gb c wins), but Ga's two species together win the genus.
    probs = np.array([[0.30, 0.30, 0.40, 0.00], [0.05, 0.05, 0.10, 0.80]])
    truth = [lin("Ga", "a"), lin("Gc", "d", family="F2", order="O2")]
    table = topk_at_ranks(probs, CANDIDATES, truth, ks=(1, 2))
    assert table["species"] == {1: 0.5, 2: 1.0}  # image 0: Ga a is 2nd
    assert table["genus"][1] == 1.0  # Ga 0.60 > Gb 0.40
    assert table["family"][1] == 1.0 and table["kingdom"][1] == 1.0


def test_true_taxon_missing_from_candidates_counts_as_wrong():
    probs = np.array([[0.5, 0.5, 0.0, 0.0]])
    table = topk_at_ranks(probs, CANDIDATES, [lin("Gz", "z", family="F9")], ks=(5,))
    assert table["species"][5] == 0.0 and table["family"][5] == 0.0 and table["order"][5] == 1.0


def test_mistake_severity_is_the_mean_distance_of_wrong_top1():
    probs = np.array(
        [
            [0.1, 0.9, 0.0, 0.0],  # truth Ga a, predicted Ga b: distance 1
            [0.0, 0.0, 0.0, 1.0],  # truth Ga a, predicted Gc d (other order): distance 4
            [1.0, 0.0, 0.0, 0.0],  # correct: not counted
        ]
    )
    result = mistake_severity(probs, CANDIDATES, [lin("Ga", "a")] * 3)
    assert result["mean_distance"] == pytest.approx(2.5)
    assert result["n_mistakes"] == 2 and result["same_genus"] == 0.5


def test_unseen_species_scored_at_genus_and_family():
    # An unseen species Ga x: species can never be right, genus and family can.
    probs = np.array([[0.7, 0.1, 0.1, 0.1]])
    result = unseen_accuracy(probs, CANDIDATES, [lin("Ga", "x")])
    assert result == {"species": 0.0, "genus": 1.0, "family": 1.0}

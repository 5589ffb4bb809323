"""Controls (issue 21): every statistic sees a strong planted effect and stays quiet on a
negative control, on embeddings planted into the labels of a real SynthToL world.

The world is generated once (small: its tree, habitats, traits, sexes and life stages are
what matter; the images are never embedded). The planted geometry is checked directly,
then each statistic of ``compute_metrics`` is run on a few seeds: planted strongly
(every property at 4 noise-sd) it must say "holds"; on the negative control (the same
noise, nothing planted) it must not say "holds", beyond the rate the rule allows.
"""

from __future__ import annotations

import numpy as np
import pytest

from taxoclip.analyze.controls import (
    READS,
    Strengths,
    labels_from,
    negative_control,
    plant,
    verdicts,
    with_embeddings,
)
from taxoclip.analyze.data import read_analysis_data
from taxoclip.analyze.metrics import orthogonality
from taxoclip.analyze.suite import compute_metrics
from taxoclip.errors import UsageError
from taxoclip.synth import SynthConfig, generate

DIM = 64
STRONG = 8.0  # noise-sd: strong enough for every statistic on a world this small
NEGATIVE_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    out = tmp_path_factory.mktemp("controls") / "synth"
    generate(out, SynthConfig(species=50, images_per_species=24, image_size=16), progress=False)
    return labels_from(read_analysis_data(out))


def _metrics(labels, z, seed: int) -> dict[str, dict]:
    metrics, skipped = compute_metrics(with_embeddings(labels, z), seed=seed)
    assert not skipped, skipped
    return metrics


def _verdicts(labels, z, seed: int) -> dict[str, dict]:
    return verdicts(_metrics(labels, z, seed))


@pytest.fixture(scope="module")
def strong(labels):
    return _verdicts(labels, plant(labels, Strengths.every(STRONG), 0, DIM), 0)


@pytest.fixture(scope="module")
def negative_metrics(labels):
    return [_metrics(labels, negative_control(labels, s, DIM), s) for s in NEGATIVE_SEEDS]


@pytest.fixture(scope="module")
def negative(negative_metrics):
    return [verdicts(metrics) for metrics in negative_metrics]


def test_planted_embeddings_are_unit_rows_and_deterministic(labels):
    z = plant(labels, Strengths.every(1.0), seed=3, dim=DIM)
    assert z.shape == (len(labels.species), DIM) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(z, plant(labels, Strengths.every(1.0), seed=3, dim=DIM))
    assert not np.array_equal(z, plant(labels, Strengths.every(1.0), seed=4, dim=DIM))


def test_variant_offsets_lie_outside_the_species_half_or_inside_it(labels):
    """Only the offsets differ between these embeddings (same seed: same noise)."""
    half = DIM // 2
    adult = labels.life_stage == "adult"
    for inside in (False, True):
        planted = Strengths(life_stage=8.0, inside=inside)
        # undo the normalisation's scale to compare raw rows: the same noise cancels
        raw = plant(labels, planted, 0, DIM) - plant(labels, Strengths(), 0, DIM)
        shift = raw[adult].mean(axis=0) - raw[~adult].mean(axis=0)
        species_half = np.linalg.norm(shift[:half]) / np.linalg.norm(shift)
        assert (species_half > 0.99) if inside else (species_half < 0.01)


def test_negative_control_has_no_tree_no_habitat_no_variants(labels):
    z = negative_control(labels, 0, DIM)
    assert np.array_equal(z, plant(labels, Strengths(), 0, DIM))
    adult = labels.life_stage == "adult"
    shift = z[adult].mean(axis=0) - z[~adult].mean(axis=0)
    noise = z.std(axis=0).mean() * np.sqrt(1 / adult.sum() + 1 / (~adult).sum())
    assert np.abs(shift).max() < 5 * noise  # no life-stage offset in any dimension


def test_every_statistic_sees_a_strong_planted_effect(strong):
    for statistic, cell in strong.items():
        metric, stat = statistic.split(".")
        if READS.get(metric) is None or stat == "mean_abs_cos":
            continue  # controls that read nothing; the descriptive cosine
        if metric == "ecological_habitat":
            # 50 species make 4 orders in 2 classes: a split by order and a null that
            # moves habitats between orders of one class are too coarse to call (the
            # bench's table measures it); it must still read the habitat
            assert cell["value"] > cell["null"] + 0.15, (statistic, cell)
            continue
        assert cell["verdict"] == "holds", (statistic, cell)


def test_control_statistics_stay_quiet_even_when_everything_else_is_planted(strong):
    assert strong["separation_sex_monomorphic.probe_accuracy"]["verdict"] != "holds"
    assert strong["separation_sex_monomorphic.fdr"]["verdict"] != "holds"


def test_the_negative_control_says_holds_rarely(negative):
    """The rule allows 5 % false positives per statistic (about one "holds" in 20
    verdicts); over 2 seeds × every statistic at most 2 may hold, none twice."""
    holds = [s for found in negative for s, cell in found.items() if cell["verdict"] == "holds"]
    assert len(holds) <= 2 and len(set(holds)) == len(holds), holds
    for found in negative:
        assert len(found) >= 18  # every statistic was measured


@pytest.mark.parametrize("name, variant", [("sex", "sex"), ("life_stage", "life_stage")])
def test_orthogonality_reads_outside_high_and_inside_low(labels, name, variant):
    """The share outside the genus span: planted outside (in dimensions no species vector
    uses) it reads near 1 and beats the noise share; planted inside, far below it."""
    values = ("female", "male") if variant == "sex" else ("adult", "juvenile")
    rows = np.isin(getattr(labels, variant), values)
    if variant == "sex":
        rows &= labels.life_stage == "adult"
    genus = labels.table.rank("genus")[labels.species_index]
    for inside in (False, True):
        planted = Strengths(taxonomy=2.0, **{name: STRONG}, inside=inside)
        z = plant(labels, planted, 5, DIM)
        result = orthogonality(
            z[rows], labels.species[rows], getattr(labels, variant)[rows], genus[rows], seed=5
        )
        if inside:
            # inside the true span; the span measured from noisy centroids holds only
            # part of it, so the share reads well below a noise direction's, not 0
            assert result.fraction_outside < result.null_fraction_outside - 0.1, result
        else:
            assert result.fraction_outside > 0.97, result
            assert result.null_fraction_outside < 0.97
            assert result.fraction_outside - result.null_fraction_outside > 2 * (
                result.fraction_outside_sd
            )


def test_only_runs_the_named_families(labels, negative_metrics):
    """The controls bench spends many seeds on a few statistics: ``only`` runs just their
    families, with the same values as the full run, and names a family it does not know."""
    seed = NEGATIVE_SEEDS[0]
    z = negative_control(labels, seed, DIM)
    part, _ = compute_metrics(with_embeddings(labels, z), seed=seed, only=("finch", "separation"))
    assert sorted(part) == [
        "separation_life_stage",
        "separation_sex",
        "separation_sex_monomorphic",
        "trait_finch_beak_length",
    ]
    whole = negative_metrics[0]
    for name, entry in part.items():
        assert entry["stats"] == whole[name]["stats"], name
    with pytest.raises(UsageError, match="unknown metric families \\['habitat'\\]"):
        compute_metrics(with_embeddings(labels, z), only=("habitat",))

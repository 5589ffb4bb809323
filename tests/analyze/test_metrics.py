"""Each metric (docs/reference.md#metrics) reads what it claims, on planted geometry.

Every test builds its embedding by hand (a trait on a line, a habitat direction shared
across orders, a tree of offsets, a variant shift with a known signal-to-noise, a variant
direction orthogonal to or along the species differences) and checks the metric against
the planted truth AND against its null, which must stay at chance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from taxoclip.analyze import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    claim_holds,
    ecological_alignment,
    effective_dimension,
    fisher_direction,
    fisher_discriminant_ratio,
    group_means,
    intra_species_separation,
    l2_normalize,
    orthogonality,
    taxonomic_alignment,
    trait_alignment,
)
from taxoclip.analyze.metrics import DIRECTION_Z, _span_basis
from taxoclip.analyze.suite import STATS, stat_entry
from taxoclip.taxonomy import Lineage

_ORTHOGONALITY_SPEC = STATS["orthogonality"][0]  # fraction_outside against its null

# --------------------------------------------------------------------------- builders


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.normal(size=d)
    return v / np.linalg.norm(v)


def _trait_on_a_line(seed: int = 0, s: int = 40, d: int = 32, noise: float = 0.05):
    """Centroids = offset + trait · u + small noise: the trait IS the main axis."""
    rng = np.random.default_rng(seed)
    trait = rng.normal(size=s)
    centroids = 0.5 + trait[:, None] * _unit(rng, d) + noise * rng.normal(size=(s, d))
    return centroids, trait


def _ecology(seed: int, confounded: bool, n_orders: int = 12, per_order: int = 6, d: int = 32):
    """Species centroids = order offset (+ habitat vector shared by all orders) + noise.

    ``confounded``: no habitat vector at all, each order has one habitat (order % 3), so
    habitat is readable only by recognising the order.
    """
    rng = np.random.default_rng(seed)
    order = np.repeat(np.arange(n_orders), per_order)
    order_offset = rng.normal(size=(n_orders, d))
    if confounded:
        habitat = np.repeat(np.arange(n_orders) % 3, per_order)
        centroids = order_offset[order] + 0.2 * rng.normal(size=(len(order), d))
    else:
        habitat = rng.integers(3, size=len(order))
        habitat_vector = rng.normal(size=(3, d))
        centroids = (
            order_offset[order] + habitat_vector[habitat] + 0.3 * rng.normal(size=(len(order), d))
        )
    names = np.array(["freshwater", "marine", "terrestrial"])[habitat]
    return centroids, names, np.array([f"Order{k}" for k in order])


BRANCHING = (2, 2, 2, 2, 2, 3)  # phylum … species under one kingdom: 96 species
SCALES = (4.0, 2.0, 1.0, 0.5, 0.25, 0.12, 0.06)  # offset per rank, kingdom → species


def _tree(seed: int = 0, d: int = 32):
    """Centroids built down the tree: kingdom offset + phylum offset + … + species noise."""
    rng = np.random.default_rng(seed)
    lineages, centroids = [], []

    def grow(prefix: list[str], vector: np.ndarray, depth: int) -> None:
        if depth == 7:
            lineages.append(tuple(prefix))
            centroids.append(vector)
            return
        for i in range(1 if depth == 0 else BRANCHING[depth - 1]):
            name = f"R{depth}n{'x'.join(p[-4:] for p in prefix)}{i}"
            grow([*prefix, name], vector + SCALES[depth] * rng.normal(size=d), depth + 1)

    grow([], np.zeros(d), 0)
    return np.array(centroids), lineages


def _variants(
    seed: int,
    shift: float,
    n_species: int = 8,
    per_variant: int = 12,
    d: int = 32,
    sigma: float = 1.0,
):
    """Images = species mean + (variant b) shift · u + isotropic noise σ; u fixed for all.

    Variant b gets 3 more images than a (unequal counts on purpose)."""
    rng = np.random.default_rng(seed)
    u = _unit(rng, d)
    z, species, variant = [], [], []
    for s in range(n_species):
        mean = 3.0 * rng.normal(size=d)
        for v, n in (("a", per_variant), ("b", per_variant + 3)):
            z.append(mean + (shift * u if v == "b" else 0) + sigma * rng.normal(size=(n, d)))
            species += [f"sp{s}"] * n
            variant += [v] * n
    return np.vstack(z), np.array(species), np.array(variant)


def _orthogonality_data(
    seed: int,
    along: bool,
    n_groups: int = 4,
    per_group: int = 4,
    per_variant: int = 8,
    d: int = 32,
    k: int = 8,
    sigma: float = 0.02,
    shift: float = 1.0,
):
    """Groups of species; variant b = variant a + shift · v, v the same in every species.

    Not ``along``: species means vary only in the first k dimensions and v lies in the
    others: v is exactly orthogonal to every species difference. ``along``: the species
    of a group lie on one line u (plus a common offset) and v = u. Variant b has more
    images than a, by a different number in every species.
    """
    rng = np.random.default_rng(seed)
    z, species, variant, groups = [], [], [], []
    for g in range(n_groups):
        inside = np.zeros(d)
        inside[:k] = rng.normal(size=k)
        inside /= np.linalg.norm(inside)
        if along:
            means = 3.0 * inside + np.outer(2.0 * rng.normal(size=per_group), inside)
            v = inside
        else:
            means = np.zeros((per_group, d))
            means[:, :k] = 2.0 * rng.normal(size=(per_group, k))
            v = np.zeros(d)
            v[k:] = rng.normal(size=d - k)
            v /= np.linalg.norm(v)
        for i in range(per_group):
            for label, n in (("a", per_variant), ("b", per_variant + 2 * i)):
                offset = shift * v if label == "b" else 0.0
                z.append(means[i] + offset + sigma * rng.normal(size=(n, d)))
                species += [f"g{g}s{i}"] * n
                variant += [label] * n
                groups += [f"genus{g}"] * n
    return np.vstack(z), np.array(species), np.array(variant), np.array(groups)


# --------------------------------------------------------------------------- helpers


def test_group_means_and_l2_normalize():
    z = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels, means = group_means(z, ["b", "b", "a"])
    assert list(labels) == ["a", "b"]
    np.testing.assert_allclose(means, [[0.0, 2.0], [2.0, 0.0]])
    unit = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_effective_dimension_counts_equal_variance_axes(k):
    rng = np.random.default_rng(k)
    rotation = np.linalg.qr(rng.normal(size=(50, k)))[0]  # k orthonormal axes in 50-D
    # ±1 on each axis: covariance exactly (equal) on k axes, zero elsewhere
    exact = np.vstack([np.eye(k), -np.eye(k)]) @ rotation.T + 7.0
    assert effective_dimension(exact) == pytest.approx(k, abs=1e-9)
    sampled = rng.normal(size=(5000, k)) @ rotation.T
    assert effective_dimension(sampled) == pytest.approx(k, rel=0.05)


def test_effective_dimension_of_one_dominant_axis_and_of_nothing():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 20)) * np.r_[10.0, np.full(19, 0.1)]
    assert effective_dimension(z) < 1.1
    assert effective_dimension(np.ones((5, 3))) == 0.0


# --------------------------------------------------------------------------- trait


def test_trait_on_a_line_is_read_and_beats_its_null():
    centroids, trait = _trait_on_a_line()
    result = trait_alignment(centroids, trait, seed=0)
    assert result.n_species == 40
    assert result.pc1_spearman > 0.98
    assert result.ridge_r2 > 0.9
    assert result.null_pc1_spearman < 0.4
    assert result.null_ridge_r2 < 0.3
    assert result.n_permutations == 5


def test_trait_of_random_centroids_sits_at_the_null():
    centroids, trait = _trait_on_a_line()
    rng = np.random.default_rng(1)
    result = trait_alignment(rng.normal(size=centroids.shape), trait, seed=0)
    assert result.pc1_spearman < 0.4
    assert abs(result.pc1_spearman - result.null_pc1_spearman) < 0.3
    assert result.ridge_r2 < 0.2
    # the planted trait beats its null by far more than the null's spread; random does not
    planted = trait_alignment(*_trait_on_a_line(), seed=0)
    spread = planted.null_pc1_spearman_sd
    assert planted.pc1_spearman - planted.null_pc1_spearman > 5 * spread


def test_trait_needs_three_species_and_finite_values():
    with pytest.raises(ValueError, match="at least 3"):
        trait_alignment(np.zeros((2, 4)), [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        trait_alignment(np.random.default_rng(0).normal(size=(5, 4)), [1, 2, np.nan, 4, 5])


# --------------------------------------------------------------------------- ecology


def test_habitat_shared_across_orders_generalises_to_unseen_orders():
    centroids, habitat, order = _ecology(seed=0, confounded=False)
    result = ecological_alignment(centroids, habitat, order, seed=0)
    assert (result.n_species, result.n_groups, result.n_habitats) == (72, 12, 3)
    assert result.probe_accuracy > 0.9
    assert result.majority_accuracy < 0.5
    assert result.null_probe_accuracy < 0.5
    assert result.probe_accuracy > result.null_probe_accuracy + 5 * result.null_probe_accuracy_sd
    assert result.cosine_gap > 0.2
    assert abs(result.null_cosine_gap) < 0.05
    assert result.cosine_gap > result.null_cosine_gap + 10 * result.null_cosine_gap_sd
    assert result.n_pairs_same > 0 and result.n_pairs_different > 0


def test_habitat_that_only_follows_order_fails_the_group_split():
    """A random split rewards memorising orders; the group split does not."""
    centroids, habitat, order = _ecology(seed=0, confounded=True)
    result = ecological_alignment(centroids, habitat, order, seed=0)
    assert result.random_split_probe_accuracy > 0.95  # memorised taxonomy
    assert result.probe_accuracy < 0.5  # nothing generalises to a held-out order
    assert result.probe_accuracy < result.null_probe_accuracy + 0.15  # ≈ permuted labels
    planted = ecological_alignment(*_ecology(seed=0, confounded=False), seed=0)
    assert planted.probe_accuracy - result.probe_accuracy > 0.4


def test_ecology_needs_two_groups():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2 groups"):
        ecological_alignment(rng.normal(size=(6, 3)), [0, 1] * 3, ["o"] * 6)


# --------------------------------------------------------------------------- taxonomy


def test_centroids_built_down_the_tree_follow_taxonomic_distance():
    centroids, lineages = _tree()
    result = taxonomic_alignment(centroids, lineages, seed=0)
    assert result.n_species == 96
    assert result.n_pairs == 96 * 95 // 2
    assert result.spearman > 0.8
    assert abs(result.null_spearman) < 0.05
    assert result.spearman > result.null_spearman + 10 * result.null_spearman_sd
    # Lineage objects and plain rank tuples are the same input
    same = taxonomic_alignment(centroids, [Lineage.from_ranks(x) for x in lineages], seed=0)
    assert same == result


def test_shuffled_or_random_centroids_do_not_follow_the_tree():
    centroids, lineages = _tree()
    rng = np.random.default_rng(3)
    shuffled = taxonomic_alignment(centroids[rng.permutation(len(centroids))], lineages)
    assert abs(shuffled.spearman) < 0.1
    random = taxonomic_alignment(rng.normal(size=centroids.shape), lineages)
    assert abs(random.spearman) < 0.1


# --------------------------------------------------------------------------- separation


@pytest.fixture(scope="module")
def separated():
    """Shift 6σ along a fixed direction: population FDR |Δ|²/2σ² = 18."""
    return intra_species_separation(*_variants(seed=0, shift=6.0), seed=0, n_null=2)


@pytest.fixture(scope="module")
def unseparated():
    return intra_species_separation(*_variants(seed=0, shift=0.0), seed=0, n_null=2)


def test_separation_values_carry_their_own_bootstrap_sd_and_the_rule_uses_it(
    separated, unseparated
):
    """The one-seed rule reads fdr_sd / probe_accuracy_sd (resampled species), not the
    sd of a handful of shuffles: the width it asks for is built from them."""
    from scipy.stats import t

    for result in (separated, unseparated):
        assert 0 < result.fdr_sd < 10 and 0 <= result.probe_accuracy_sd < 0.2
    assert separated.probe_accuracy == 1.0 and separated.probe_accuracy_sd == 0.0  # every one
    assert unseparated.probe_accuracy_sd > 0
    spec = STATS["intra_species_separation"][1]
    assert spec[0] == "fdr"
    entry = stat_entry(unseparated.as_dict(), None, spec)
    n, species = unseparated.n_null, unseparated.n_species_used
    own, of_mean = unseparated.fdr_sd**2, unseparated.null_fdr_sd**2 / n
    df = (own + of_mean) ** 2 / (own**2 / (species - 1) + of_mean**2 / (n - 1))  # Welch
    assert entry["detectable"] == pytest.approx(t.ppf(0.95, df) * np.sqrt(own + of_mean))
    # (whether this one unseparated draw holds is a 5 % event: the false-positive rate is
    # what tests/analyze/test_controls.py and bench/analysis_controls.py measure)
    assert stat_entry(separated.as_dict(), None, spec)["verdict"] == HOLDS


def test_planted_variant_shift_is_separated_out_of_sample(separated):
    assert (separated.n_species_used, separated.n_skipped) == (8, 0)
    assert separated.fdr > 3.0
    assert separated.probe_accuracy > 0.95
    assert separated.fdr > 10 * separated.null_fdr


def test_no_shift_sits_at_the_null(unseparated):
    assert unseparated.fdr < 1.0
    assert abs(unseparated.probe_accuracy - 0.5) < 0.1
    assert unseparated.fdr < unseparated.null_fdr + 1.0


def test_shuffled_label_null_stays_at_chance_out_of_sample(separated, unseparated):
    for result in (separated, unseparated):
        assert result.null_fdr < 1.0  # not thousands
        assert abs(result.null_probe_accuracy - 0.5) < 0.1
        assert result.n_null == 2


def test_in_sample_fdr_explodes_on_shuffled_labels_out_of_sample_does_not():
    """The known trap: fitted and measured on the same few images the ratio explodes."""
    z, species, variant = _variants(seed=1, shift=0.0, per_variant=6)
    x = z[species == "sp0"]
    labels = np.random.default_rng(0).permutation(variant[species == "sp0"])
    a, b = x[labels == "a"], x[labels == "b"]
    assert fisher_discriminant_ratio(a, b) > 1000
    out_of_sample = fisher_discriminant_ratio(a[::2], b[::2], a[1::2], b[1::2])
    assert out_of_sample < 10


def test_fisher_direction_is_the_ridge_solution_and_scale_free():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(7, 20)) + 0.5
    w = fisher_direction(a, b, ridge=1e-3)
    scatter = np.cov(a, rowvar=False) + np.cov(b, rowvar=False)
    lam = 1e-3 * np.trace(scatter) / 20
    direct = np.linalg.solve(scatter + lam * np.eye(20), a.mean(0) - b.mean(0))
    np.testing.assert_allclose(w, direct, rtol=1e-6)
    ratio = fisher_discriminant_ratio(a[:3], b[:4], a[3:], b[4:])
    scaled = fisher_discriminant_ratio(a[:3] / 100, b[:4] / 100, a[3:] / 100, b[4:] / 100)
    assert scaled == pytest.approx(ratio, rel=1e-8)


def test_species_with_too_few_images_are_skipped_and_counted():
    z, species, variant = _variants(seed=2, shift=6.0, n_species=4)
    few = species == "sp0"
    keep = ~few | (variant == "b") | (np.cumsum(few & (variant == "a")) <= 3)
    other = np.where((species == "sp1") & (variant == "a"), "juvenile", variant)
    result = intra_species_separation(
        z[keep], species[keep], other[keep], values=("juvenile", "b"), n_null=1
    )
    # sp0 keeps 3 images of a (too few); sp1's are "juvenile" vs "b"; sp2, sp3 have no
    # "juvenile" (their "a" rows are ignored), so only sp1 is used
    assert (result.n_species_used, result.n_skipped) == (1, 3)
    assert result.probe_accuracy > 0.8


def test_separation_rejects_bad_variants():
    z, species, variant = _variants(seed=0, shift=1.0, n_species=2)
    with pytest.raises(ValueError, match="exactly two"):
        intra_species_separation(z, species, np.where(variant == "a", species, variant))
    with pytest.raises(ValueError, match="min_per_variant"):
        intra_species_separation(z, species, variant, min_per_variant=3)


# --------------------------------------------------------------------------- orthogonality


def test_variants_orthogonal_to_species_differences():
    z, species, variant, groups = _orthogonality_data(seed=0, along=False)
    result = orthogonality(z, species, variant, groups, seed=0)
    assert (result.n_groups_used, result.n_species_used) == (4, 16)
    assert result.fraction_outside > 0.98
    assert result.mean_abs_cos < 0.03
    assert np.isfinite(result.null_fraction_outside) and result.n_null == 5
    assert np.isfinite(result.null_mean_abs_cos)
    assert result.effective_dimension > 1.0


def test_variants_along_a_species_difference():
    z, species, variant, groups = _orthogonality_data(seed=0, along=True)
    result = orthogonality(z, species, variant, groups, seed=0)
    assert result.fraction_outside < 0.1
    assert result.mean_abs_cos > 0.9
    # A random split of a species' images differs by (share of b in one half − in the
    # other) · v + noise: the null inherits the variant direction, diluted by the noise.
    assert result.null_fraction_outside > result.fraction_outside + 0.2
    assert result.null_mean_abs_cos < result.mean_abs_cos - 0.1


def test_exact_orthogonality_without_noise_and_the_balanced_species_means():
    z, species, variant, groups = _orthogonality_data(seed=1, along=False, sigma=0.0)
    exact = orthogonality(z, species, variant, groups, seed=0)
    assert exact.fraction_outside == pytest.approx(1.0, abs=1e-9)
    assert exact.mean_abs_cos == pytest.approx(0.0, abs=1e-9)
    # plain species means move along v with each species' share of variant a (counts
    # differ), which carries the variant direction into the species span
    plain = orthogonality(z, species, variant, groups, balanced_means=False, seed=0)
    assert plain.fraction_outside < 1.0 - 1e-5
    assert plain.mean_abs_cos > 1e-3


def test_span_basis_is_rank_tolerant():
    rng = np.random.default_rng(0)
    u = _unit(rng, 10)
    colinear = np.outer([1.0, -2.0, 0.5, 0.5], u)
    basis = _span_basis(colinear)
    assert basis.shape == (1, 10)
    np.testing.assert_allclose(abs(basis[0] @ u), 1.0)
    assert _span_basis(np.zeros((3, 10))).shape == (0, 10)


def test_a_species_in_two_groups_is_an_error():
    z, species, variant, groups = _orthogonality_data(seed=0, along=False, n_groups=2)
    groups = groups.copy()
    groups[0] = "genus1"
    with pytest.raises(ValueError, match="more than one group"):
        orthogonality(z, species, variant, groups)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_numbers_other_seed_other_nulls():
    centroids, trait = _trait_on_a_line()
    eco = _ecology(seed=0, confounded=False)
    tree = _tree()
    variants = _variants(seed=0, shift=2.0, n_species=3)
    orth = _orthogonality_data(seed=0, along=False, sigma=0.2)
    runs = {
        "trait": lambda seed: trait_alignment(centroids, trait, seed=seed),
        "ecology": lambda seed: ecological_alignment(*eco, seed=seed, n_probe_permutations=2),
        "taxonomy": lambda seed: taxonomic_alignment(*tree, seed=seed),
        "separation": lambda seed: intra_species_separation(*variants, seed=seed, n_null=1),
        "orthogonality": lambda seed: orthogonality(*orth, seed=seed),
    }
    for name, run in runs.items():
        first, again, other = run(0), run(0), run(1)
        assert first.as_dict() == again.as_dict(), name
        assert first.as_dict() != other.as_dict(), name


# --------------------------------------------------------------------------- verdicts


def test_claim_holds_only_beyond_the_spread():
    seeds = [0.80, 0.82, 0.81]
    assert claim_holds(seeds, [0.50, 0.52, 0.51]).verdict == HOLDS
    # beats the baseline but not the null's spread
    verdict = claim_holds(seeds, [0.50, 0.52, 0.51], [0.70, 0.95, 0.60])
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.margin == pytest.approx(0.81 - 0.75)
    assert claim_holds(seeds, [0.85, 0.86, 0.84]).verdict == DOES_NOT_HOLD
    # one seed: no spread, no claim (the rule asks ≥ 3 seeds)
    assert claim_holds(0.9, 0.1).verdict == INCONCLUSIVE
    assert claim_holds([0.9], [0.1, 0.11, 0.12], min_values=1).verdict == HOLDS
    # an explicit spread; lower is better (e.g. a distance)
    assert claim_holds([0.2] * 3, 0.5, spread=0.1, higher_is_better=False).verdict == HOLDS
    assert claim_holds([0.45] * 3, 0.5, spread=0.1, higher_is_better=False).verdict == (
        INCONCLUSIVE
    )
    assert claim_holds([float("nan")] * 3, 0.5, spread=0.1).verdict == INCONCLUSIVE
    with pytest.raises(ValueError):
        claim_holds([1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- issue 21


def test_split_half_share_cancels_noise_that_the_plain_share_reads_as_outside():
    """Variant direction inside the span, buried in noise: the plain share of a noisy δ
    reads 'outside' (noise lies outside a low-dimensional span); the split-half share
    reads the planted direction, and a strong outside direction reads near 1. Fainter
    still (the pooled ⟨δ¹, δ²⟩ not clearly above 0) there is no direction to place, and
    the share is the noise share: it cannot hold."""
    inside = orthogonality(*_orthogonality_data(seed=0, along=True, sigma=1.0, shift=1.5), seed=0)
    assert inside.direction_z > DIRECTION_Z
    assert inside.fraction_outside < 0.35
    assert inside.null_fraction_outside > 0.85  # what a noise direction reads
    faint = orthogonality(*_orthogonality_data(seed=0, along=True, sigma=1.0, shift=1.0), seed=0)
    assert faint.direction_z < DIRECTION_Z
    assert faint.fraction_outside == faint.null_fraction_outside
    outside = orthogonality(
        *_orthogonality_data(seed=0, along=False, sigma=1.0, shift=4.0, per_variant=12), seed=0
    )
    assert outside.fraction_outside > 0.9
    assert outside.direction_z > 5
    assert 0 < outside.fraction_outside_sd < 0.1


@pytest.mark.parametrize("seed", range(6))
def test_split_half_share_without_a_variant_direction_reads_the_noise_share(seed):
    """No variant direction: the pooled ⟨δ¹, δ²⟩ is noise around 0, and unless it is
    clearly positive (z ≥ DIRECTION_Z) the share is the noise share, so it cannot hold."""
    z, species, variant, groups = _orthogonality_data(seed=seed, along=False, sigma=1.0, shift=0.0)
    result = orthogonality(z, species, variant, groups, seed=seed)
    assert abs(result.direction_z) < 4
    if result.direction_z < DIRECTION_Z:
        assert result.fraction_outside == result.null_fraction_outside
    assert stat_entry(result.as_dict(), None, _ORTHOGONALITY_SPEC)["verdict"] != HOLDS


def test_group_permutation_keeps_each_groups_composition():
    from taxoclip.analyze.metrics import _permute_groups

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), [3, 3, 4, 4, 5, 5])
    labels = np.repeat(np.array([0, 1, 2, 0, 1, 2]), [3, 3, 4, 4, 5, 5])  # pure groups
    parents = np.repeat(np.array([0, 0, 1, 1, 2, 2]), [3, 3, 4, 4, 5, 5])
    for _ in range(20):
        moved = _permute_groups(labels, groups, None, rng)
        assert all(len(set(moved[groups == g])) == 1 for g in range(6))  # still pure
        within = _permute_groups(labels, groups, parents, rng)
        for parent in range(3):
            # labels only move between the two groups of one parent
            assert sorted(set(within[parents == parent])) == sorted(set(labels[parents == parent]))


def test_habitat_tied_to_order_sits_at_the_group_null():
    """Habitat that only follows order: the probe is biased below chance by the group
    split, and a null that moves whole orders' habitats shares that bias."""
    centroids, habitat, order = _ecology(seed=0, confounded=True)
    result = ecological_alignment(centroids, habitat, order, seed=0)
    assert abs(result.probe_accuracy - result.null_probe_accuracy) < 3 * max(
        result.null_probe_accuracy_sd, 0.02
    )


def test_ridge_chosen_inside_the_fitting_half():
    from taxoclip.analyze.metrics import RIDGES, choose_ridge

    rng = np.random.default_rng(0)
    # isotropic noise, few images in many dimensions: the mean difference is best
    a = rng.normal(size=(6, 40)) + 1.0 * _unit(rng, 40)
    b = rng.normal(size=(6, 40))
    assert choose_ridge(a, b) >= 1.0
    # noise much larger along one axis than the shift: whitening pays, a small ridge wins
    axis = _unit(rng, 5)
    scale = np.eye(5) + 30 * np.outer(axis, axis)
    shift = _unit(rng, 5) - (_unit(rng, 5) @ axis) * axis
    a = rng.normal(size=(40, 5)) @ scale + 0.8 * shift / np.linalg.norm(shift)
    b = rng.normal(size=(40, 5)) @ scale
    assert choose_ridge(a, b) <= 1.0
    assert choose_ridge(a, b) in RIDGES


def _loo_choice(a: np.ndarray, b: np.ndarray, ridges) -> float:
    """choose_ridge written plainly: one fisher_direction per held-out image and ridge."""
    x, y = np.vstack([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))]
    ratios = []
    for ridge in ridges:
        scores = []
        for i in range(len(x)):
            rest = np.arange(len(x)) != i
            rest_a, rest_b = x[rest & (y == 0)], x[rest & (y == 1)]
            w = fisher_direction(rest_a, rest_b, ridge=ridge)
            middle = (rest_a.mean(axis=0) + rest_b.mean(axis=0)) / 2
            scores.append(w @ (x[i] - middle) / np.linalg.norm(w))
        scores = np.array(scores)
        spread = scores[y == 0].var() + scores[y == 1].var()
        ratios.append((scores[y == 0].mean() - scores[y == 1].mean()) ** 2 / spread)
    ratios = np.array(ratios)
    return float(ridges[len(ridges) - 1 - int(np.argmax(ratios[::-1]))])  # ties: larger


@pytest.mark.parametrize("sizes", [(2, 2), (2, 5), (3, 3), (4, 7), (9, 6)])
def test_ridge_choice_equals_one_fit_per_held_out_image(sizes):
    from taxoclip.analyze.metrics import RIDGES, choose_ridge

    rng = np.random.default_rng(sum(sizes))
    for shift in (0.0, 0.5, 2.0):
        a = rng.normal(size=(sizes[0], 24)) + shift * _unit(rng, 24)
        b = rng.normal(size=(sizes[1], 24)) * rng.uniform(0.5, 2.0, size=24)
        assert choose_ridge(a, b) == _loo_choice(a, b, RIDGES), (sizes, shift)


def test_ridge_choice_without_any_difference_is_the_steadiest_ridge_not_nan():
    """Two variants whose images coincide (n = 2 each: one image left to fit) have no
    direction at all: every score is 0, no division by a zero norm, the largest ridge."""
    from taxoclip.analyze.metrics import RIDGES, choose_ridge

    same = np.ones((2, 8))
    with np.errstate(all="raise"):
        assert choose_ridge(same, same.copy()) == RIDGES[-1]
        assert choose_ridge(same, same.copy(), dim=3) == RIDGES[-1]


def test_one_seed_rule_is_a_prediction_bound():
    from scipy.stats import t

    from taxoclip.analyze.suite import STATS, stat_entry

    spec = STATS["taxonomic_alignment"][0]
    result = {"spearman": 0.3, "null_spearman": 0.0, "null_spearman_sd": 0.1, "n_permutations": 20}
    width = t.ppf(0.95, 19) * 0.1 * np.sqrt(1 + 1 / 20)
    entry = stat_entry(result, None, spec)
    assert entry["detectable"] == pytest.approx(width)
    assert entry["verdict"] == HOLDS  # 0.3 > 0.176
    assert stat_entry({**result, "spearman": 0.15}, None, spec)["verdict"] == INCONCLUSIVE
    assert stat_entry({**result, "spearman": -0.01}, None, spec)["verdict"] == DOES_NOT_HOLD
    # a baseline model's value is a draw too: both sds count, each known to 19 df (its own
    # 20 shuffles), so Welch–Satterthwaite gives 38
    baseline = {**result, "spearman": 0.05}
    entry = stat_entry(result, baseline, spec)
    assert entry["detectable"] == pytest.approx(t.ppf(0.95, 38) * 0.1 * np.sqrt(2))
    assert entry["verdict"] == HOLDS
    # a value's own sd (orthogonality's bootstrap) replaces the null's as its spread
    spec = STATS["orthogonality"][0]
    share = {
        "fraction_outside": 0.99,
        "fraction_outside_sd": 0.2,
        "null_fraction_outside": 0.9,
        "null_fraction_outside_sd": 0.01,
        "n_null": 5,
    }
    assert stat_entry(share, None, spec)["verdict"] == INCONCLUSIVE
    assert stat_entry({**share, "fraction_outside_sd": 0.01}, None, spec)["verdict"] == HOLDS


def test_one_seed_rule_combines_a_bootstrap_and_a_permutation_sd_by_welch():
    """A bootstrap sd over S species (S − 1 df) beside the null mean's sd from n shuffles
    (n − 1 df): Student's t at Welch–Satterthwaite's df, not at n − 1."""
    from scipy.stats import norm, t

    from taxoclip.analyze.suite import STATS, one_seed_width, stat_entry

    spec = next(s for s in STATS["intra_species_separation"] if s[0] == "fdr")
    result = {
        "fdr": 0.30,
        "fdr_sd": 0.03,
        "null_fdr": 0.20,
        "null_fdr_sd": 0.02,
        "n_null": 3,
        "n_species_used": 60,
    }
    own, of_mean = 0.03**2, 0.02**2 / 3
    df = (own + of_mean) ** 2 / (own**2 / 59 + of_mean**2 / 2)
    width = t.ppf(0.95, df) * math.sqrt(own + of_mean)
    assert 30 < df < 60 and width < t.ppf(0.95, 2) * math.sqrt(own + of_mean)
    entry = stat_entry(result, None, spec)
    assert entry["detectable"] == pytest.approx(width)
    assert entry["verdict"] == HOLDS  # 0.10 beyond 0.053; at t(0.95, 2) it also would be
    assert stat_entry({**result, "fdr": 0.26}, None, spec)["verdict"] == HOLDS  # 0.06 > 0.053
    # t(0.95, 2) (the rule before) would have asked for 0.094: inconclusive
    assert t.ppf(0.95, 2) * math.sqrt(own + of_mean) > 0.06
    # parts with no count are known sds: the normal quantile
    assert one_seed_width((0.1, None)) == pytest.approx(norm.ppf(0.95) * 0.1)
    # one estimate behind both terms (no own sd): the classic prediction bound at n − 1
    plain = {k: v for k, v in result.items() if k != "fdr_sd"}
    bound = t.ppf(0.95, 2) * 0.02 * math.sqrt(1 + 1 / 3)
    assert stat_entry(plain, None, spec)["detectable"] == pytest.approx(bound)
    # an own sd written as None (not measured) is the same as none: one estimate, not two
    assert stat_entry({**result, "fdr_sd": None}, None, spec)["detectable"] == pytest.approx(bound)

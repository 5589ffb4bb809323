"""The emergent-property metrics (docs/reference.md#metrics), as pure functions over arrays.

Each function takes species centroids, or per-image embeddings with their labels, and
returns a small frozen dataclass that holds every value *beside* its reference: a null
made from the same data with the labels broken (permuted trait or habitat, shuffled
species, variant labels shuffled within each species) and, where the definition names one, a
baseline under the same split (the majority class). The other baseline (an
untrained or flat-label model) is the same function run on that model's embeddings;
:func:`claim_holds` turns values, baselines and their spread into a verdict.

Conventions: rows of ``z`` are L2-normalised image embeddings (nothing here rescales
rows; :func:`taxoclip.stats.l2_normalize` is there for callers); a species centroid is the mean of its
rows (:func:`group_means`). Everything random is drawn from ``seed``, so the same seed
gives the same numbers. No file I/O and no models here; ``taxoclip analyze`` feeds it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
from scipy.spatial.distance import pdist, squareform
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from taxoclip.stats import (
    as_matrix,
    as_vector,
    kfold_splits,
    l2_normalize,
    label_codes,
    mean_sd,
    pc1_scores,
    ridge_cv_r2,
    spearman,
)
from taxoclip.taxonomy import Lineage, taxonomic_distance

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"

_MAX_FOLDS = 5

_F = TypeVar("_F", bound=Callable)


def _single_threaded(function: _F) -> _F:
    """Run with BLAS/OpenMP pools at one thread (restored after).

    The metrics are many tiny fits (a few hundred rows); pool threads only spin. Measured
    here on a loaded 2-core machine: one 60 × 32 logistic fit took 0.4–0.6 s with 2
    threads and 7 ms with 1.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class _Result:
    def as_dict(self) -> dict[str, float | int]:
        """Plain ``{field: number}``, ready for JSON or a table row."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def group_means(z: np.ndarray, labels: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """``(unique labels, sorted; their mean rows)``: species centroids from image rows."""
    z = as_matrix(z, "z")
    labels = as_vector(labels, "labels", len(z))
    unique, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(unique), z.shape[1]))
    np.add.at(sums, inverse, z)
    return unique, sums / np.bincount(inverse)[:, None]


def effective_dimension(z: np.ndarray) -> float:
    """Participation ratio (Σλ)²/Σλ² of the covariance eigenvalues of the rows of ``z``.

    k orthogonal axes of equal variance give k; one dominant axis gives ≈ 1. Zero when
    the rows do not vary at all.
    """
    z = as_matrix(z, "z")
    centred = z - z.mean(axis=0)
    # The nonzero eigenvalues of XᵀX and XXᵀ are the same; take the smaller matrix.
    gram = centred.T @ centred if len(z) > z.shape[1] else centred @ centred.T
    eigenvalues = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    return float(total**2 / np.sum(eigenvalues**2))


def _isotropic_fit(x: np.ndarray, dim: int | None = None) -> tuple[np.ndarray, float]:
    """Centre and ONE scale making the mean per-dimension variance 1.

    A single scalar (not per-dimension standardisation) keeps the geometry of the
    embedding: dimensions the model barely uses are not blown up to unit variance. It
    only sets the units so that a probe's default regularisation means the same thing
    for any model. ``dim``: the embedding's dimension when ``x`` holds coordinates in a
    subspace that contains its rows (:func:`_own_span`); the mean is over that many.
    """
    mean = x.mean(axis=0)
    scale = float(np.sqrt(np.sum((x - mean) ** 2) / (len(x) * (dim or x.shape[1]))))
    return mean, scale if scale > 0 else 1.0


def _probe_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    balanced: bool = False,
    c: float = 1.0,
    dim: int | None = None,
) -> tuple[float, float]:
    """(logistic-probe accuracy, majority-class accuracy), out of fold, pooled over folds.

    ``balanced``: balanced accuracy (mean recall over classes, chance 1/k whatever the
    class sizes) with class-weighted fitting; else plain accuracy. ``dim``: as
    :func:`_isotropic_fit`.
    """
    predicted = np.empty_like(y)
    majority = np.empty_like(y)
    for train, test in splits:
        classes, counts = np.unique(y[train], return_counts=True)
        majority[test] = classes[np.argmax(counts)]
        if len(classes) == 1:
            predicted[test] = classes[0]
            continue
        mean, scale = _isotropic_fit(x[train], dim)
        if len(classes) == 2 and classes[0] == 0 and classes[1] == 1:
            w, b = _binary_logistic((x[train] - mean) / scale, y[train], c, balanced)
            predicted[test] = ((x[test] - mean) / scale @ w + b > 0).astype(y.dtype)
            continue
        probe = LogisticRegression(
            C=c, max_iter=5000, class_weight="balanced" if balanced else None
        )
        probe.fit((x[train] - mean) / scale, y[train])
        predicted[test] = probe.predict((x[test] - mean) / scale)
    if balanced:
        return _balanced_accuracy(y, predicted), _balanced_accuracy(y, majority)
    return float(np.mean(predicted == y)), float(np.mean(majority == y))


def _binary_logistic(
    x: np.ndarray, y: np.ndarray, c: float, balanced: bool
) -> tuple[np.ndarray, float]:
    """(w, b) of L2-penalised logistic regression on labels 0/1: the minimum of
    ½‖w‖² + c·Σ s_i·log(1 + exp(−(2y_i − 1)(w·x_i + b))), intercept unpenalised, s_i the
    "balanced" class weights n / (2 n_class) or 1 — scikit-learn's objective.

    Why not scikit-learn: the within-species probes are thousands of fits of a few dozen
    rows, where its per-fit overhead dominates (about 10-20 ms a fit on a loaded 2-core
    machine). The optimum lies in the row space of ``x`` (the loss sees w only through
    x·w, the penalty removes the rest), so Newton's method runs in the r ≤ n coordinates
    of that space (damped: the step is halved until the objective falls).
    """
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    basis = vt[singular > singular.max(initial=0.0) * max(x.shape) * np.finfo(float).eps]
    z = np.hstack([x @ basis.T, np.ones((len(x), 1))])
    sign = 2.0 * y - 1.0
    counts = np.bincount(y, minlength=2)
    weight = c * (len(y) / (2.0 * counts[y]) if balanced else np.ones(len(y)))
    penalty = np.r_[np.ones(z.shape[1] - 1), 0.0]

    def objective(theta: np.ndarray) -> float:
        return 0.5 * float(penalty @ theta**2) + float(
            weight @ np.logaddexp(0.0, -sign * (z @ theta))
        )

    theta = np.zeros(z.shape[1])
    current = objective(theta)
    for _ in range(100):
        margin = sign * (z @ theta)
        p = 0.5 * (1.0 + np.tanh(-0.5 * margin))  # σ(−margin), without overflow
        gradient = penalty * theta - z.T @ (weight * p * sign)
        hessian = (
            (z.T * (weight * p * (1.0 - p))) @ z + np.diag(penalty) + 1e-12 * np.eye(len(theta))
        )
        step = np.linalg.solve(hessian, gradient)
        for _ in range(30):
            candidate = theta - step
            value = objective(candidate)
            if value <= current:
                break
            step = step / 2
        theta, previous, current = candidate, current, value
        if previous - current <= 1e-12 * max(1.0, abs(current)):
            break
    return basis.T @ theta[:-1], float(theta[-1])


def _balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[y == k] == k) for k in np.unique(y)]))


# --------------------------------------------------------------------------- trait


@dataclass(frozen=True)
class TraitAlignment(_Result):
    """A continuous trait read from a clade's species centroids.

    ``pc1_spearman`` is |Spearman ρ| between the trait and the centroids' first principal
    component; ``ridge_r2`` the cross-validated R² of ridge regression centroid → trait
    (pooled out-of-fold predictions; can be negative). ``null_*`` are the same on
    permuted traits: mean and standard deviation over ``n_permutations``.
    """

    n_species: int
    pc1_spearman: float
    ridge_r2: float
    null_pc1_spearman: float
    null_pc1_spearman_sd: float
    null_ridge_r2: float
    null_ridge_r2_sd: float
    n_permutations: int


@_single_threaded
def trait_alignment(
    centroids: np.ndarray,
    trait: Sequence[float],
    *,
    seed: int = 0,
    n_permutations: int = 5,
) -> TraitAlignment:
    """How well a clade's species centroids (S, D) encode a continuous trait (S,).

    K-fold with K = min(5, S), shuffled by ``seed``; inside each training fold RidgeCV
    picks the penalty (efficient leave-one-out) from a grid scaled to the centroids'
    total variance, so the grid fits any embedding's units. The null uses the same folds.
    """
    x = as_matrix(centroids, "centroids")
    y = as_vector(trait, "trait", len(x)).astype(np.float64)
    if len(x) < 3:
        raise ValueError(f"trait alignment needs at least 3 species, got {len(x)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("trait holds non-finite values; drop those species first")
    total = float(np.sum((x - x.mean(axis=0)) ** 2))
    rng = np.random.default_rng(seed)
    folds = kfold_splits(len(x), _MAX_FOLDS, seed)
    pc1 = pc1_scores(x)  # None when all centroids are identical: nothing to read
    alphas = total * np.logspace(-6, 1, 15)

    def measure(target: np.ndarray) -> tuple[float, float]:
        if pc1 is None:
            return float("nan"), float("nan")
        return abs(spearman(pc1, target)), ridge_cv_r2(x, target, folds, alphas)

    rho, r2 = measure(y)
    null = [measure(rng.permutation(y)) for _ in range(n_permutations)]
    null_rho, null_rho_sd = mean_sd([n[0] for n in null])
    null_r2, null_r2_sd = mean_sd([n[1] for n in null])
    return TraitAlignment(
        n_species=len(x),
        pc1_spearman=rho,
        ridge_r2=r2,
        null_pc1_spearman=null_rho,
        null_pc1_spearman_sd=null_rho_sd,
        null_ridge_r2=null_r2,
        null_ridge_r2_sd=null_r2_sd,
        n_permutations=n_permutations,
    )


# --------------------------------------------------------------------------- ecology


@dataclass(frozen=True)
class EcologicalAlignment(_Result):
    """A categorical ecology (habitat) read across clades.

    ``probe_accuracy``: logistic probe on species centroids, out of fold with a GROUP
    split (no group, e.g. order, in both training and test), beside
    ``majority_accuracy`` under the same split and ``null_probe_accuracy``, the same
    probe and split on habitats moved between whole groups (:func:`_permute_groups`;
    mean, sd over ``n_probe_permutations``). The majority baseline alone is a weak bar: with balanced
    habitats, holding a group out leaves its habitat under-represented in training, so
    the training majority is biased against it and can score below chance.
    ``random_split_*``: the probe with a plain shuffled K-fold, for contrast only: there
    a probe can score by memorising taxonomy.
    ``cosine_gap``: mean cosine of same-habitat minus different-habitat species pairs,
    pairs taken only across different groups; ``null_cosine_gap``: the same with
    habitats permuted over species (mean, sd over ``n_permutations``).
    """

    n_species: int
    n_groups: int
    n_habitats: int
    probe_accuracy: float
    majority_accuracy: float
    null_probe_accuracy: float
    null_probe_accuracy_sd: float
    random_split_probe_accuracy: float
    random_split_majority_accuracy: float
    cosine_gap: float
    null_cosine_gap: float
    null_cosine_gap_sd: float
    n_pairs_same: int
    n_pairs_different: int
    n_permutations: int
    n_probe_permutations: int


@_single_threaded
def ecological_alignment(
    centroids: np.ndarray,
    habitat: Sequence[object],
    groups: Sequence[object],
    *,
    parents: Sequence[object] | None = None,
    seed: int = 0,
    n_permutations: int = 20,
    n_probe_permutations: int = 10,
) -> EcologicalAlignment:
    """Habitat (S,) from species centroids (S, D), generalising across ``groups`` (S,).

    The group split is GroupKFold with min(5, number of groups) folds (one group per
    fold when there are ≤ 5: leave-one-group-out). It needs ≥ 2 groups. ``parents``
    (S,): each species' rank above the group (class above order); the null then moves
    habitats only between groups of the same parent (:func:`_permute_groups`).
    """
    x = as_matrix(centroids, "centroids")
    y = label_codes(as_vector(habitat, "habitat", len(x)))
    g = label_codes(as_vector(groups, "groups", len(x)))
    n_groups = int(g.max()) + 1 if len(g) else 0
    if n_groups < 2:
        raise ValueError("ecological alignment needs species from at least 2 groups")
    if len(x) < 2:
        raise ValueError("ecological alignment needs at least 2 species")

    group_splits = list(GroupKFold(min(_MAX_FOLDS, n_groups)).split(x, y, g))
    random_splits = kfold_splits(len(x), _MAX_FOLDS, seed)
    probe, majority = _probe_accuracy(x, y, group_splits)
    random_probe, random_majority = _probe_accuracy(x, y, random_splits)

    unit = l2_normalize(x)
    cosine = unit @ unit.T
    upper = np.triu(np.ones_like(cosine, dtype=bool), k=1)
    across = upper & (g[:, None] != g[None, :])
    pair_cos = cosine[across]
    rows, cols = np.nonzero(across)

    def gap(labels: np.ndarray) -> tuple[float, int, int]:
        same = labels[rows] == labels[cols]
        n_same, n_different = int(same.sum()), int((~same).sum())
        if n_same == 0 or n_different == 0:
            return float("nan"), n_same, n_different
        return float(pair_cos[same].mean() - pair_cos[~same].mean()), n_same, n_different

    rng = np.random.default_rng(seed)
    p = None if parents is None else as_vector(parents, "parents", len(x))
    null_probe, null_probe_sd = mean_sd(
        [
            _probe_accuracy(x, _permute_groups(y, g, p, rng), group_splits)[0]
            for _ in range(n_probe_permutations)
        ]
    )
    cosine_gap, n_same, n_different = gap(y)
    null_gap, null_gap_sd = mean_sd(
        [gap(_permute_groups(y, g, p, rng))[0] for _ in range(n_permutations)]
    )
    return EcologicalAlignment(
        n_species=len(x),
        n_groups=n_groups,
        n_habitats=int(y.max()) + 1,
        probe_accuracy=probe,
        majority_accuracy=majority,
        null_probe_accuracy=null_probe,
        null_probe_accuracy_sd=null_probe_sd,
        random_split_probe_accuracy=random_probe,
        random_split_majority_accuracy=random_majority,
        cosine_gap=cosine_gap,
        null_cosine_gap=null_gap,
        null_cosine_gap_sd=null_gap_sd,
        n_pairs_same=n_same,
        n_pairs_different=n_different,
        n_permutations=n_permutations,
        n_probe_permutations=n_probe_permutations,
    )


def _permute_groups(
    labels: np.ndarray,
    groups: np.ndarray,
    parents: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Labels moved between whole groups: each group takes another group's labels (one of
    the same parent when ``parents`` is given), in random order, repeated or cut to its
    size.

    Why not a permutation over species: habitats are inherited, so most orders hold one
    habitat, and a group split then holds out an order together with most of its
    habitat's examples; the probe's training set is biased against the held-out habitat
    and scores below chance on the real labels. Labels permuted over species lose that
    (every order becomes a mix) and so score higher than the real labels would without
    any habitat in the embedding (measured: the default study's probe 0.335 against such
    a null of 0.430). Moving whole groups keeps each group's composition, and so the
    split's bias, and breaks only which group has which habitats. Within a parent, it
    also keeps what the tree above the group predicts: related orders share habitats
    by descent, and an embedding that follows the tree reads that without any habitat
    direction.
    """
    out = np.empty_like(labels)
    names = np.unique(groups)
    first = {name: int(np.flatnonzero(groups == name)[0]) for name in names}
    family = {name: (parents[first[name]] if parents is not None else 0) for name in names}
    for parent in sorted(set(family.values()), key=str):
        members = [name for name in names if family[name] == parent]
        for target, source in zip(members, rng.permutation(members), strict=True):
            rows = np.flatnonzero(groups == target)
            out[rows] = np.resize(rng.permutation(labels[groups == source]), len(rows))
    return out


# --------------------------------------------------------------------------- taxonomy


@dataclass(frozen=True)
class TaxonomicAlignment(_Result):
    """Spearman between centroid cosine distance and taxonomic distance over all species
    pairs; ``null_*``: the same with species shuffled over the lineages (mean, sd)."""

    n_species: int
    n_pairs: int
    spearman: float
    null_spearman: float
    null_spearman_sd: float
    n_permutations: int


@_single_threaded
def taxonomic_alignment(
    centroids: np.ndarray,
    lineages: Sequence[Lineage | Sequence[str]],
    *,
    seed: int = 0,
    n_permutations: int = 20,
) -> TaxonomicAlignment:
    """Do species far apart in the tree lie far apart in the embedding?

    ``lineages``: one per centroid row, a :class:`Lineage` or its 7 rank names, root
    first. Taxonomic distance is :func:`taxoclip.taxonomy.taxonomic_distance` (rank
    levels up to the common ancestor, holes compatible); centroid distance is
    1 − cosine. Positive means the embedding follows the tree.
    """
    x = as_matrix(centroids, "centroids")
    if len(lineages) != len(x):
        raise ValueError(f"need one lineage per centroid ({len(x)}), got {len(lineages)}")
    if len(x) < 3:
        raise ValueError(f"taxonomic alignment needs at least 3 species, got {len(x)}")
    tree = [item if isinstance(item, Lineage) else Lineage.from_ranks(item) for item in lineages]
    n = len(tree)
    taxonomic = np.array(
        [taxonomic_distance(tree[i], tree[j]) for i in range(n) for j in range(i + 1, n)],
        dtype=np.float64,
    )  # the order of scipy's condensed distance vectors
    condensed = pdist(l2_normalize(x), "sqeuclidean") / 2.0  # unit rows: ‖a−b‖²/2 = 1 − cos
    distance = squareform(condensed, checks=False)  # square, to shuffle species in the null
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_permutations):
        order = rng.permutation(n)
        null.append(spearman(squareform(distance[np.ix_(order, order)], checks=False), taxonomic))
    null_mean, null_sd = mean_sd(null)
    return TaxonomicAlignment(
        n_species=n,
        n_pairs=len(taxonomic),
        spearman=spearman(condensed, taxonomic),
        null_spearman=null_mean,
        null_spearman_sd=null_sd,
        n_permutations=n_permutations,
    )


# --------------------------------------------------------------------------- variants


def _variant_codes(
    variant: Sequence[object], n: int, values: tuple[object, object] | None
) -> tuple[np.ndarray, tuple[object, object]]:
    """Per row: 0 for variant a, 1 for b, -1 for rows of any other value (ignored)."""
    variant = as_vector(variant, "variant", n)
    if values is None:
        present = np.unique(variant)
        if len(present) != 2:
            raise ValueError(
                f"variant must take exactly two values (or pass values=(a, b)), got {list(present)}"
            )
        values = (present[0], present[1])
    codes = np.full(n, -1, dtype=np.int64)
    codes[variant == values[0]] = 0
    codes[variant == values[1]] = 1
    return codes, values


def _check_min_per_variant(min_per_variant: int) -> None:
    if min_per_variant < 4:
        raise ValueError(
            "min_per_variant must be ≥ 4: each variant is split in halves, and a half needs "
            "≥ 2 images to have a covariance"
        )


#: The ridges (in units of tr(Σ_a + Σ_b)/D) the separation metric chooses from by
#: cross-validation inside each fitting half: from nearly the plain Fisher solution to
#: nearly the difference of the variant means.
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def fisher_direction(fit_a: np.ndarray, fit_b: np.ndarray, *, ridge: float = 1e-3) -> np.ndarray:
    """w = (Σ_a + Σ_b + λI)⁻¹ (μ_a − μ_b), with λ = ridge · tr(Σ_a + Σ_b) / D.

    Why this λ: with a few images per variant and D in the hundreds, Σ_a + Σ_b has rank
    ≤ n − 2 and cannot be inverted; a ridge proportional to its mean eigenvalue
    (tr/D) regularises it in the units of the embedding, so w does not depend on the
    embedding's overall scale (scaling z by c scales Σ and λ by c²). A small ``ridge``
    leaves w ≈ the mean difference restricted to the directions in which the fitting
    images show no spread, plus the within-range Fisher solution. When the images show
    no spread at all any λ gives w ∝ μ_a − μ_b, and λ = ridge is used. Σ uses ddof = 1.
    No absolute floor such as + 1e-6: for L2-normalised embeddings in hundreds of
    dimensions the within-species tr(Σ)/D is about 1e-4 to 1e-3, so 1e-3 · tr/D is
    1e-7 to 1e-6 and such a floor would set the ridge instead of the data.

    Solved through the thin SVD of the stacked centred rows R (Σ_a + Σ_b = RᵀR), in
    O(n²D) rather than O(D³): w = V diag(1/(s² + λ)) Vᵀd + (d − VVᵀd)/λ.
    """
    return _fisher_directions(fit_a, fit_b, (ridge,))[0]


def _fisher_directions(
    fit_a: np.ndarray, fit_b: np.ndarray, ridges: Sequence[float], dim: int | None = None
) -> np.ndarray:
    """:func:`fisher_direction` for each of ``ridges`` (rows), from one SVD. ``dim``: the
    embedding's dimension when the rows are coordinates in a subspace holding them
    (:func:`_own_span`), which sets λ's tr/D."""
    fit_a, fit_b = np.asarray(fit_a, np.float64), np.asarray(fit_b, np.float64)
    difference = fit_a.mean(axis=0) - fit_b.mean(axis=0)
    rows = np.vstack([_scaled_residuals(fit_a), _scaled_residuals(fit_b)])
    _, singular, vt = np.linalg.svd(rows, full_matrices=False)
    trace = float(np.sum(singular**2))
    keep = singular > singular.max(initial=0.0) * max(rows.shape) * np.finfo(float).eps
    singular, vt = singular[keep], vt[keep]
    along = vt @ difference
    rest = difference - vt.T @ along
    out = []
    for ridge in ridges:
        lam = ridge * trace / (dim or difference.size) if trace > 0 else ridge
        out.append(vt.T @ (along / (singular**2 + lam)) + rest / lam)
    return np.array(out)


def choose_ridge(
    a: np.ndarray, b: np.ndarray, ridges: Sequence[float] = RIDGES, dim: int | None = None
) -> float:
    """The ridge of ``ridges`` whose Fisher direction separates held-out images best.

    Leave-one-out inside ``a`` and ``b`` (the fitting half only): each image is scored
    on the unit direction fitted without it, centred on the midpoint of the others'
    variant means; the criterion is the Fisher ratio of those held-out scores,
    (mean_a − mean_b)² / (var_a + var_b). Ties go to the larger ridge (the steadier w).
    ``dim``: as :func:`_fisher_directions`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:  # leaving out a variant's only image leaves nothing to fit
        return float(ridges[-1])
    # the direction flips sign with the variants, so b's images score as -(b against a)
    dim = dim or a.shape[1]
    scores = np.hstack([_loo_scores(a, b, ridges, dim), -_loo_scores(b, a, ridges, dim)])
    y = np.r_[np.zeros(len(a), dtype=int), np.ones(len(b), dtype=int)]
    best, best_ratio = float(ridges[-1]), -np.inf
    for ridge, row in zip(ridges[::-1], scores[::-1], strict=True):
        spread = row[y == 0].var() + row[y == 1].var()
        ratio = (row[y == 0].mean() - row[y == 1].mean()) ** 2 / spread if spread > 0 else 0.0
        if ratio > best_ratio:
            best, best_ratio = float(ridge), ratio
    return best


def _loo_scores(p: np.ndarray, q: np.ndarray, ridges: Sequence[float], dim: int) -> np.ndarray:
    """(ridges, len(p)): each row of ``p`` scored on the unit :func:`fisher_direction` of
    (``p`` without it, ``q``), centred on the midpoint of their means.

    All leave-one-out fits in one batched SVD (a Python loop of small SVDs was most of
    the analysis' time). Unlike :func:`_fisher_directions` no component is dropped for a
    tiny singular value: one with s = 0 adds v(vᵀd)/λ to the first term and removes it
    from the rest, the same w.
    """
    n = len(p)
    rest = p[np.nonzero(~np.eye(n, dtype=bool))[1].reshape(n, n - 1)]  # (n, n-1, D)
    rest_mean, q_mean = rest.mean(axis=1), q.mean(axis=0)
    difference = rest_mean - q_mean  # (n, D)
    q_rows = _scaled_residuals(q)
    parts = [np.broadcast_to(q_rows, (n, *q_rows.shape))]
    if n - 1 >= 2:
        parts.append((rest - rest_mean[:, None]) / np.sqrt(n - 2))
    rows = np.concatenate(parts, axis=1)  # (n, m, D): Σ_p + Σ_q = rowsᵀ rows, per fit
    centred = p - (rest_mean + q_mean) / 2  # each held-out row against its fit's midpoint
    if rows.shape[1] == 0:  # no spread anywhere: w ∝ the mean difference for every ridge
        return np.tile(_unit_scores(difference, centred), (len(ridges), 1))
    _, singular, vt = np.linalg.svd(rows, full_matrices=False)
    trace = np.sum(singular**2, axis=1)  # (n,)
    along = np.einsum("nkd,nd->nk", vt, difference)
    outside = difference - np.einsum("nkd,nk->nd", vt, along)
    scores = np.empty((len(ridges), n))
    for index, ridge in enumerate(ridges):
        lam = np.where(trace > 0, ridge * trace / dim, ridge)[:, None]
        w = np.einsum("nkd,nk->nd", vt, along / (singular**2 + lam)) + outside / lam
        scores[index] = _unit_scores(w, centred)
    return scores


def _unit_scores(w: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """Each row of ``centred`` on its fit's unit direction (a row of ``w``); 0 where a fit
    has no direction at all (the two groups' means coincide: nothing tells them apart)."""
    norm = np.linalg.norm(w, axis=1)
    dots = np.sum(w * centred, axis=1)
    return np.divide(dots, norm, out=np.zeros_like(dots), where=norm > 0)


def _scaled_residuals(x: np.ndarray) -> np.ndarray:
    """Rows R with RᵀR = the ddof=1 covariance (zero rows for a single image)."""
    if len(x) < 2:
        return np.zeros((0, x.shape[1]))
    return (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)


def fisher_discriminant_ratio(
    fit_a: np.ndarray,
    fit_b: np.ndarray,
    measure_a: np.ndarray | None = None,
    measure_b: np.ndarray | None = None,
    *,
    ridge: float = 1e-3,
) -> float:
    """FDR = (wᵀ(μ_a−μ_b))² / (wᵀ(Σ_a+Σ_b)w), w fitted on ``fit_*``, measured on ``measure_*``.

    Without ``measure_*`` it is measured in sample, on the images it was fitted on: with
    few images in many dimensions that number explodes even for shuffled labels (see
    docs/reference.md#metrics). It is here to show that; the metrics measure out of sample.
    """
    w = fisher_direction(fit_a, fit_b, ridge=ridge)
    if measure_a is None or measure_b is None:
        measure_a, measure_b = fit_a, fit_b
    numerator, denominator = _fdr_parts(w, measure_a, measure_b)
    if denominator <= 0:
        return float("nan")
    return numerator / denominator


def _fdr_parts(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(wᵀ(μ_a−μ_b))² and wᵀ(Σ_a+Σ_b)w on ``a``, ``b`` for the unit vector along ``w``."""
    norm = float(np.linalg.norm(w))
    w = w / norm if norm > 0 else w
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rows = np.vstack([_scaled_residuals(a), _scaled_residuals(b)])
    return float(w @ (a.mean(axis=0) - b.mean(axis=0))) ** 2, float(np.sum((rows @ w) ** 2))


def _split_half_fdr(
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    ridge: float | None,
    dim: int | None = None,
) -> tuple[float, float, float]:
    """Halve each variant at random; fit on one half, measure on the other, swap: (the
    mean of the two ratios, the sum of their numerators, of their denominators), each
    numerator and denominator of a unit w. ``ridge`` None: chosen inside each fitting
    half (:func:`choose_ridge`); ``dim`` as :func:`_fisher_directions`."""
    pa, pb = rng.permutation(len(a)), rng.permutation(len(b))
    a1, a2 = a[pa[: len(a) // 2]], a[pa[len(a) // 2 :]]
    b1, b2 = b[pb[: len(b) // 2]], b[pb[len(b) // 2 :]]
    ratios, numerator, denominator = [], 0.0, 0.0
    for fit_a, fit_b, other_a, other_b in ((a1, b1, a2, b2), (a2, b2, a1, b1)):
        chosen = choose_ridge(fit_a, fit_b, dim=dim) if ridge is None else ridge
        w = _fisher_directions(fit_a, fit_b, (chosen,), dim)[0]
        top, bottom = _fdr_parts(w, other_a, other_b)
        numerator, denominator = numerator + top, denominator + bottom
        if bottom > 0:
            ratios.append(top / bottom)
    return (float(np.mean(ratios)) if ratios else float("nan")), numerator, denominator


@dataclass(frozen=True)
class IntraSpeciesSeparation(_Result):
    """Two variants (sex, life stage) of one species, told apart within the species.

    ``fdr``: out-of-sample Fisher discriminant ratio (split halves, both ways; the ridge
    of w chosen by cross-validation inside the fitting half), POOLED over the species
    used: Σ (wᵀ(μ_a−μ_b))² / Σ wᵀ(Σ_a+Σ_b)w with each species' w of unit length. Not the
    mean of per-species ratios: with halves of 2 images per variant the measured spread
    has 2 degrees of freedom, so a ratio has no finite mean (E[1/χ²₂] = ∞), one species
    can dominate the average, and its null is too heavy-tailed for a one-seed bound
    (the controls: 15 % false positives). ``fdr_median``: the median of the per-species
    ratios. ``probe_accuracy``: within-species logistic probe, stratified K-fold
    (K = min(5, images of the rarer variant)), BALANCED accuracy (chance 0.5 whatever the
    counts), mean over species. ``null_*``: the same with the variant labels shuffled
    within each species (same counts), mean and sd over ``n_null`` repeats.

    ``fdr_sd`` and ``probe_accuracy_sd``: each value's own sampling sd, from
    :data:`BOOTSTRAPS` resamples of the species (half the 16th-84th percentile range, as
    :class:`Orthogonality`), which analyze's one-seed rule uses in place of the null's sd.
    Why: the null's sd comes from ``n_null`` = 3 shuffles; on 100 negative-control seeds
    a bound built on it said "holds" for 9-10 % of the FDRs and 7 % of the monomorphic
    probes (docs/analyze.md), where the rule allows 5 %.
    """

    n_species_used: int
    n_skipped: int
    fdr: float
    fdr_median: float
    probe_accuracy: float
    fdr_sd: float
    probe_accuracy_sd: float
    null_fdr: float
    null_fdr_sd: float
    null_fdr_median: float
    null_probe_accuracy: float
    null_probe_accuracy_sd: float
    n_null: int


@_single_threaded
def intra_species_separation(
    z: np.ndarray,
    species: Sequence[object],
    variant: Sequence[object],
    *,
    values: tuple[object, object] | None = None,
    min_per_variant: int = 4,
    ridge: float | None = None,
    seed: int = 0,
    n_null: int = 3,
) -> IntraSpeciesSeparation:
    """Separation of variants a/b within each species, out of sample, beside its null.

    ``variant`` (N,) takes two values (or pass ``values=(a, b)`` and rows with any other
    value are ignored). Species with fewer than ``min_per_variant`` (≥ 4) images of
    either variant are skipped and counted in ``n_skipped``. ``ridge``: the Fisher
    direction's ridge (:func:`fisher_direction`); None chooses it from :data:`RIDGES` by
    cross-validation inside each fitting half (:func:`choose_ridge`), so the measuring
    half never sees the choice.
    """
    _check_min_per_variant(min_per_variant)
    z = as_matrix(z, "z")
    species = as_vector(species, "species", len(z))
    codes, _ = _variant_codes(variant, len(z), values)
    blocks, n_skipped = _species_blocks(z, species, codes, min_per_variant)
    # every quantity below is an inner product of vectors in the span of a species'
    # images, so each species is measured in coordinates of that span (≤ n instead of D
    # dimensions: the same numbers, far cheaper SVDs); D still sets the ridge and scale
    dim = z.shape[1]
    blocks = [(_own_span(x), y) for x, y in blocks]
    rng = np.random.default_rng(seed)

    def measure(labelled: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
        fdrs, accuracies, tops, bottoms = [], [], [], []
        for x, y in labelled:
            ratio, top, bottom = _split_half_fdr(x[y == 0], x[y == 1], rng, ridge, dim)
            fdrs.append(ratio)
            tops.append(top)
            bottoms.append(bottom)
            n_folds = min(_MAX_FOLDS, int(np.bincount(y).min()))
            folds = StratifiedKFold(n_folds, shuffle=True, random_state=int(rng.integers(2**31)))
            splits = list(folds.split(x, y))
            accuracies.append(_probe_accuracy(x, y, splits, balanced=True, dim=dim)[0])
        per_species.append((np.array(tops), np.array(bottoms), np.array(accuracies)))
        if not fdrs:
            return float("nan"), float("nan"), float("nan")
        denominator = float(np.sum(bottoms))
        pooled = float(np.sum(tops)) / denominator if denominator > 0 else float("nan")
        return pooled, float(np.nanmedian(fdrs)), float(np.mean(accuracies))

    per_species: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    fdr, fdr_median, accuracy = measure(blocks)
    fdr_sd, accuracy_sd = _bootstrap_sds(*per_species[0], np.random.default_rng([seed, 1]))
    null = [measure([(x, rng.permutation(y)) for x, y in blocks]) for _ in range(n_null)]
    null_fdr, null_fdr_sd = mean_sd([n[0] for n in null])
    null_median = mean_sd([n[1] for n in null])[0]
    null_accuracy, null_accuracy_sd = mean_sd([n[2] for n in null])
    return IntraSpeciesSeparation(
        n_species_used=len(blocks),
        n_skipped=n_skipped,
        fdr=fdr,
        fdr_median=fdr_median,
        probe_accuracy=accuracy,
        fdr_sd=fdr_sd,
        probe_accuracy_sd=accuracy_sd,
        null_fdr=null_fdr,
        null_fdr_sd=null_fdr_sd,
        null_fdr_median=null_median,
        null_probe_accuracy=null_accuracy,
        null_probe_accuracy_sd=null_accuracy_sd,
        n_null=n_null,
    )


def _bootstrap_sds(
    tops: np.ndarray, bottoms: np.ndarray, accuracies: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """Sampling sds of the pooled FDR Σ tops / Σ bottoms and of the mean accuracy over
    species, from :data:`BOOTSTRAPS` resamples of the species (half the 16th-84th
    percentile range: robust to a resample whose denominators are nearly 0)."""
    if len(tops) < 2:
        return float("nan"), float("nan")
    draws = rng.integers(len(tops), size=(BOOTSTRAPS, len(tops)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = tops[draws].sum(axis=1) / bottoms[draws].sum(axis=1)

    def spread(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        if len(values) < 2:
            return float("nan")
        low, high = np.percentile(values, [15.87, 84.13])
        return float(high - low) / 2

    return spread(ratios), spread(accuracies[draws].mean(axis=1))


def _own_span(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` in coordinates of an orthonormal basis of their span (n × r,
    r ≤ n): lengths and inner products of any combination of them are kept."""
    x = np.asarray(x, np.float64)
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    keep = singular > singular.max(initial=0.0) * max(x.shape) * np.finfo(float).eps
    return x @ vt[keep].T


def _species_blocks(
    z: np.ndarray, species: np.ndarray, codes: np.ndarray, min_per_variant: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """[(images of a and b, their 0/1 labels)] per usable species (sorted), and the
    number skipped for too few images of a variant."""
    blocks, skipped = [], 0
    for name in np.unique(species):
        rows = (species == name) & (codes >= 0)
        counts = np.bincount(codes[rows], minlength=2)
        if counts.min() < min_per_variant:
            skipped += 1
            continue
        blocks.append((z[rows], codes[rows]))
    return blocks, skipped


# --------------------------------------------------------------------------- orthogonality


#: Random cuts of each species' images behind one split-half estimate (averaged).
HALVINGS = 4
#: Bootstrap resamples of the species behind a split-half estimate's sd.
BOOTSTRAPS = 200
#: How surely (pooled ⟨δ¹, δ²⟩ over its bootstrap sd) a variant direction must be there
#: before its share outside the species span is measured: one-sided 97.7 %.
DIRECTION_Z = 2.0


@dataclass(frozen=True)
class Orthogonality(_Result):
    """Are variant directions orthogonal to the differences between related species?

    Per species s of a group G (≥ 2 species), P projects onto span{μ_t − μ̄_G : t ∈ G}
    and P⊥ = I − P. ``fraction_outside`` is the share of the variant direction's squared
    length outside that span, estimated so that sampling noise cancels: each variant's
    images are cut at random into thirds, δ¹ and δ² are the variant differences
    μ_a − μ_b of two of them and the species' own centre in the span comes from the
    third (:meth:`_Member.parts`), and the share is Σ_s ⟨P⊥δ¹_s, P⊥δ²_s⟩ / Σ_s ⟨δ¹_s, δ²_s⟩
    pooled over every species used (the noise of independent parts has expectation 0 in
    both sums; pooling keeps a species with a tiny δ from dominating), averaged over
    :data:`HALVINGS` random cuts and clipped to [0, 1] (1: fully orthogonal, 0: inside).
    When the pooled ⟨δ¹, δ²⟩ is not clearly positive (``direction_z`` below
    :data:`DIRECTION_Z`) there is no variant direction to place: δ is noise, and the
    share is that of noise, ``null_fraction_outside`` (it cannot hold). Without that gate
    a share of noise over noise, clipped to [0, 1], held on 11 % of triples of
    negative-control seeds under the study's rule (docs/analyze.md).
    ``fraction_outside_sd``: its sd over :data:`BOOTSTRAPS` bootstrap resamples of the
    species (unclipped; half the 16th–84th percentile range, robust to a resample with
    almost no variant direction); ``direction_z``: the pooled ⟨δ¹, δ²⟩ over its
    bootstrap sd (how surely there is a variant direction at all).

    ``null_fraction_outside``: the share a direction of within-species sampling noise
    has outside the same spans, Σ‖P⊥(δ¹ − δ²)‖² / Σ‖δ¹ − δ²‖² (the difference of the two
    independent estimates, in which the variant direction cancels; mean and sd over
    ``n_null`` random cuts). It is what the plain share of a noisy δ reads (the statistic
    before issue 21: in high dimension noise lies almost wholly outside a
    low-dimensional span), so beating it means the variant direction lies further
    outside the span than a random within-species direction. Not labels shuffled within
    species: a shuffled split still differs by a random share of the variant direction,
    so that null inherits it and reads the value itself when the variant is strong.

    ``mean_abs_cos`` = mean over t ≠ s of |cos(δ_s, μ_s − μ_t)| (δ_s from two thirds,
    μ_s from the third), beside a null of the variant labels shuffled within each
    species: descriptive (a noisy δ's cosines sit at the noise floor, so it cannot show
    orthogonality, only its absence). ``effective_dimension``: participation ratio of
    the rows of z.
    """

    n_groups_used: int
    n_species_used: int
    fraction_outside: float
    fraction_outside_sd: float
    direction_z: float
    mean_abs_cos: float
    null_fraction_outside: float
    null_fraction_outside_sd: float
    null_mean_abs_cos: float
    null_mean_abs_cos_sd: float
    effective_dimension: float
    n_null: int


@_single_threaded
def orthogonality(
    z: np.ndarray,
    species: Sequence[object],
    variant: Sequence[object],
    groups: Sequence[object],
    *,
    values: tuple[object, object] | None = None,
    min_per_variant: int = 4,
    balanced_means: bool = True,
    seed: int = 0,
    n_null: int = 5,
) -> Orthogonality:
    """Variant directions against species differences within groups (genus, family).

    ``groups`` (N,) gives each image's group; a species must lie in one group. The span
    of a group uses every species of it with images of the kept variants; δ is taken
    for species with ≥ ``min_per_variant`` images of both. ``balanced_means``: a
    species' μ_s is the midpoint (μ_{s,a} + μ_{s,b})/2 when it has both variants, so that
    species sampled with different variant proportions do not carry the variant
    direction into the species span (the plain mean μ_s of the definition moves by
    (p_s − p̄)·δ with the share p_s of variant a); ``False`` uses the plain mean.
    """
    _check_min_per_variant(min_per_variant)
    z = as_matrix(z, "z")
    species = as_vector(species, "species", len(z))
    groups = as_vector(groups, "groups", len(z))
    codes, _ = _variant_codes(variant, len(z), values)
    kept = codes >= 0
    used: list[_Member] = []
    n_groups = 0
    for group in np.unique(groups[kept]):
        members = []
        for name in np.unique(species[kept & (groups == group)]):
            rows = kept & (species == name)
            if np.any(groups[rows] != group):
                raise ValueError(f"species {name!r} lies in more than one group")
            counts = np.bincount(codes[rows], minlength=2)
            members.append((z[rows], codes[rows], bool(counts.min() >= min_per_variant)))
        if len(members) < 2 or not any(usable for _, _, usable in members):
            continue
        n_groups += 1
        centres = np.array([_species_centre(x, y, balanced_means) for x, y, _ in members])
        for index, (x, y, usable) in enumerate(members):
            if usable:
                used.append(_Member(x, y, centres, index, balanced_means))
    rng = np.random.default_rng(seed)
    outside, total = _split_half_terms(used, rng)
    fraction, fraction_sd, direction_z = _pooled_share(outside, total, rng)

    def cosines(shuffle: bool) -> float:
        found = []
        for member in used:
            labels = rng.permutation(member.y) if shuffle else member.y
            first, second, centres = member.parts(labels, rng, basis=False)
            delta = (first + second) / 2
            others = centres[member.index] - np.delete(centres, member.index, axis=0)
            lengths = np.linalg.norm(others, axis=1)
            others, lengths = others[lengths > 0], lengths[lengths > 0]
            norm = float(np.linalg.norm(delta))
            if norm > 0 and len(others):
                found.append(float(np.mean(np.abs(others @ delta) / (lengths * norm))))
        return float(np.mean(found)) if found else float("nan")

    def noise_share() -> float:
        inside_sum = length_sum = 0.0
        for member in used:
            first, second, basis = member.parts(member.y, rng)
            delta = first - second  # the variant direction cancels: pure sampling noise
            inside_sum += float(np.sum((basis @ delta) ** 2))
            length_sum += float(delta @ delta)
        return 1.0 - inside_sum / length_sum if length_sum > 0 else float("nan")

    mean_cos = cosines(shuffle=False)
    null_fraction, null_fraction_sd = mean_sd([noise_share() for _ in range(n_null)])
    if used and not (np.isfinite(fraction) and direction_z >= DIRECTION_Z):
        # no clear variant direction to place: δ is noise, and noise reads the noise share
        fraction = null_fraction
    null_cos, null_cos_sd = mean_sd([cosines(shuffle=True) for _ in range(n_null)])
    return Orthogonality(
        n_groups_used=n_groups,
        n_species_used=len(used),
        fraction_outside=fraction,
        fraction_outside_sd=fraction_sd,
        direction_z=direction_z,
        mean_abs_cos=mean_cos,
        null_fraction_outside=null_fraction,
        null_fraction_outside_sd=null_fraction_sd,
        null_mean_abs_cos=null_cos,
        null_mean_abs_cos_sd=null_cos_sd,
        effective_dimension=effective_dimension(z[kept]),
        n_null=n_null,
    )


@dataclass(frozen=True)
class _Member:
    """A usable species of a group: its images and variant codes, every centre of its
    group (rows), its own row, and how centres are taken."""

    x: np.ndarray
    y: np.ndarray
    centres: np.ndarray
    index: int
    balanced: bool

    def parts(
        self, labels: np.ndarray, rng: np.random.Generator, basis: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(δ from one third of each variant's images, δ from another third, the group's
        span basis with this species' centre from the last third; with ``basis=False``
        the group's centres instead).

        Why thirds: a species' centre computed from the same images as its δ carries
        their noise into the span whenever the variants' counts differ (the midpoint's
        noise is correlated with δ's then), which pulls δ's noise inside the span; from
        disjoint images the span is independent of both δ's.
        """
        chunks: list[list[np.ndarray]] = [[], [], []]
        for code in (0, 1):
            rows = rng.permutation(np.flatnonzero(labels == code))
            cuts = (len(rows) // 3, 2 * len(rows) // 3)
            for chunk, part in zip(chunks, np.split(rows, cuts), strict=True):
                chunk.append(part)
        first, second = (self.x[a].mean(axis=0) - self.x[b].mean(axis=0) for a, b in chunks[:2])
        own = np.concatenate(chunks[2])
        centres = self.centres.copy()
        centres[self.index] = _species_centre(self.x[own], labels[own], self.balanced)
        if not basis:
            return first, second, centres
        return first, second, _span_basis(centres - centres.mean(axis=0))


def _split_half_terms(
    used: list[_Member], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per species: ⟨P⊥δ¹, P⊥δ²⟩ and ⟨δ¹, δ²⟩ of independent parts of its images
    (:meth:`_Member.parts`), averaged over :data:`HALVINGS` random splits."""
    outside, total = np.zeros(len(used)), np.zeros(len(used))
    for index, member in enumerate(used):
        for _ in range(HALVINGS):
            first, second, basis = member.parts(member.y, rng)
            # ⟨P⊥a, P⊥b⟩ = ⟨a, b⟩ − ⟨Pa, Pb⟩ for the orthogonal projector P = BᵀB
            both = float(first @ second)
            total[index] += both / HALVINGS
            outside[index] += (both - float((basis @ first) @ (basis @ second))) / HALVINGS
    return outside, total


def _pooled_share(
    outside: np.ndarray, total: np.ndarray, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(Σ outside / Σ total clipped to [0, 1] or NaN, its bootstrap sd over species,
    Σ total over its bootstrap sd)."""
    if len(total) == 0:
        return float("nan"), float("nan"), float("nan")
    pooled = float(total.sum())
    draws = rng.integers(len(total), size=(BOOTSTRAPS, len(total)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = outside[draws].sum(axis=1) / total[draws].sum(axis=1)
    ratios = ratios[np.isfinite(ratios)]
    # half the 16th-84th percentile range (the sd of a normal): a resample whose pooled
    # ⟨δ¹, δ²⟩ is near 0 gives a huge ratio that would set a plain sd by itself
    low, high = np.percentile(ratios, [15.87, 84.13]) if len(ratios) > 1 else (np.nan, np.nan)
    sd = float(high - low) / 2
    total_sd = float(np.std(total[draws].sum(axis=1), ddof=1))
    direction_z = pooled / total_sd if total_sd > 0 else float("nan")
    if pooled <= 0:
        return float("nan"), sd, direction_z
    return float(np.clip(outside.sum() / pooled, 0.0, 1.0)), sd, direction_z


def _species_centre(x: np.ndarray, labels: np.ndarray, balanced: bool) -> np.ndarray:
    if balanced and (labels == 0).any() and (labels == 1).any():
        return (x[labels == 0].mean(axis=0) + x[labels == 1].mean(axis=0)) / 2
    return x.mean(axis=0)


def _span_basis(centred: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the rows of ``centred``, rank-tolerant (numpy's
    ``matrix_rank`` tolerance: singular values below s_max · max(shape) · eps dropped)."""
    if centred.size == 0:
        return np.zeros((0, centred.shape[-1]))
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    tolerance = singular.max(initial=0.0) * max(centred.shape) * np.finfo(float).eps
    return vt[singular > tolerance] if singular.max(initial=0.0) > 0 else vt[:0]


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict(_Result):
    """``verdict`` is ``"holds"``, ``"does not hold"`` or ``"inconclusive"``; ``margin``
    and ``spread`` are those of the reference that decided it (the worst one)."""

    verdict: str
    margin: float
    spread: float
    n_values: int


def claim_holds(
    values: float | Sequence[float],
    *references: float | Sequence[float],
    spread: float | None = None,
    higher_is_better: bool = True,
    min_values: int = 3,
) -> Verdict:
    """The rule of docs/reference.md#metrics: a claim holds only when it beats every
    reference by more than the spread.

    ``values``: the metric over seeds. Each of ``references``: a baseline over seeds
    (untrained or flat-label model) or a null over its repeats, or one number. For each
    reference, margin = mean(values) − mean(reference) (negated when lower is better)
    and spread = ``spread`` if given, else the larger of the two sample standard
    deviations (ddof=1; a single number has none). Then:

    - fewer than ``min_values`` values (the rule asks ≥ 3 seeds), or no spread to compare
      with, or a non-finite number → ``"inconclusive"``;
    - margin > spread → ``"holds"``; margin ≤ 0 → ``"does not hold"``; a margin within
      the spread → ``"inconclusive"``.

    The verdict is the worst over the references (does not hold < inconclusive < holds).
    """
    if not references:
        raise ValueError("claim_holds needs at least one baseline or null to beat")
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    sign = 1.0 if higher_is_better else -1.0
    rank = {DOES_NOT_HOLD: 0, INCONCLUSIVE: 1, HOLDS: 2}
    worst: Verdict | None = None
    for reference in references:
        reference = np.atleast_1d(np.asarray(reference, dtype=np.float64))
        margin = sign * float(np.mean(values) - np.mean(reference))
        if spread is not None:
            width = float(spread)
        else:
            sds = [float(np.std(v, ddof=1)) for v in (values, reference) if len(v) > 1]
            width = max(sds) if sds else float("nan")
        if not (np.isfinite(margin) and np.isfinite(width)) or len(values) < min_values:
            verdict = INCONCLUSIVE
        elif margin > width:
            verdict = HOLDS
        elif margin <= 0:
            verdict = DOES_NOT_HOLD
        else:
            verdict = INCONCLUSIVE
        current = Verdict(verdict, margin, width, len(values))
        if worst is None or rank[verdict] < rank[worst.verdict]:
            worst = current
    assert worst is not None
    return worst

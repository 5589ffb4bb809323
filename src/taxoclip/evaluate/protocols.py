"""BioCLIP 2 evaluation protocols as plain functions over image features.

Every function here takes numpy arrays (image features as float32 ``(N, D)``, L2-normalised
unless a docstring says otherwise, plus labels) and returns a float, a small dict of floats
or a small dataclass. Nothing here loads images or models: the runner extracts features
once and hands them to whichever protocol a benchmark calls for. Each docstring states the
setting the BioCLIP 2 paper (and its released evaluation code, which borrows from BioCLIP,
biobench, NeWT and GCD) uses, and where this implementation departs from it and why.

Protocols (docs/reference.md#evaluation-protocols and #metrics):

* zero-shot classification — :func:`zero_shot_logits`, :func:`topk_accuracy`;
* few-shot nearest class mean ("SimpleShot", CL2N features) — :func:`few_shot_ncm`;
* linear probes — :func:`linear_probe` (fixed split), :func:`linear_probe_cv`
  (cross-validated, optionally grouped) and :func:`majority_baseline_cv` beside it;
* multi-label attributes with a small MLP (FishNet, AwA2) — :func:`mlp_attributes`;
* NeWT-style collections of binary SVM tasks — :func:`svm_binary_tasks`;
* generalized category discovery (Herbarium19) — :func:`gcd_accuracy`,
  :func:`semi_supervised_kmeans`, :func:`hungarian_accuracy`;
* continuous traits (beak length …) — :func:`ridge_regression_r2`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.stats import loguniform
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import check_random_state

from taxoclip.runtime.scoring import class_logits
from taxoclip.stats import as_matrix, as_vector, kfold_splits, l2_normalize, ridge_cv_r2

__all__ = [
    "LINEAR_PROBE_C_GRID",
    "FewShotResult",
    "cl2n_transform",
    "few_shot_ncm",
    "gcd_accuracy",
    "hungarian_accuracy",
    "linear_probe",
    "linear_probe_cv",
    "majority_baseline_cv",
    "mlp_attributes",
    "nearest_class_mean_predict",
    "ridge_regression_r2",
    "semi_supervised_kmeans",
    "svm_binary_tasks",
    "topk_accuracy",
    "zero_shot_logits",
]

#: C values tried by :func:`linear_probe` when ``C`` is not given.
LINEAR_PROBE_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


# --------------------------------------------------------------------------- helpers


def _name_list(names: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown}, … and {len(names) - limit} more"


def _group_indices(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Indices of each code 0..n_groups-1, in ascending index order (one O(N log N) sort)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(1, n_groups))
    return np.split(order, bounds)


def _sums_by_code(codes: np.ndarray, x: np.ndarray, n_codes: int) -> np.ndarray:
    """Row sums of x per code (n_codes, D), via a sparse one-hot product (fast for big N)."""
    onehot = csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_codes, len(codes))
    )
    return np.asarray(onehot @ x)


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, K), clipped at 0 against rounding."""
    d2 = (
        np.einsum("ij,ij->i", x, x)[:, None]
        - 2.0 * (x @ centres.T)
        + np.einsum("ij,ij->i", centres, centres)[None, :]
    )
    return np.maximum(d2, 0.0)


def _nearest(x: np.ndarray, centres: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centre for each row of x, in chunks to bound memory."""
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = np.argmin(
            _squared_distances(x[start : start + chunk], centres), axis=1
        )
    return out


# ------------------------------------------------------------------------- zero-shot


def zero_shot_logits(
    image_features: np.ndarray, class_embeddings: np.ndarray, logit_scale: float
) -> np.ndarray:
    """Zero-shot logits ``logit_scale * image_features @ class_embeddings``.

    Paper setting: each class name is put through the 80 OpenAI ImageNet templates, the
    text embeddings are normalised, averaged and renormalised into one column of
    ``class_embeddings`` (shape ``(D, C)``, the layout of pybioclip's text index); image
    features are L2-normalised; logits are the cosine similarities times the model's
    temperature, and the predicted class is the arg-max (top-1 accuracy is reported,
    averaged over 10 species benchmarks).

    ``logit_scale`` is the *multiplier*, i.e. ``exp`` of the model's learnt log-scale
    (``model.logit_scale.exp()``, at most 100 for BioCLIP 2), not the log-scale itself.
    It does not change the ranking, only the softmax probabilities derived from the logits.

    Returns float32 logits of shape ``(N, C)``.
    """
    images = as_matrix(image_features, "image_features", np.float32)
    classes = as_matrix(class_embeddings, "class_embeddings", np.float32)
    if images.shape[1] != classes.shape[0]:
        raise ValueError(
            f"image_features have dimension {images.shape[1]} but class_embeddings are "
            f"{classes.shape} (expected (D, C) with D = {images.shape[1]})"
        )
    return class_logits(images, classes, logit_scale)  # the engine's scorer: one formula


def topk_accuracy(
    logits_or_scores: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy for each k in ``ks``: the fraction of rows whose true class is among
    the k highest scores.

    ``labels`` are integer column indices into ``logits_or_scores`` (N, C). Ties are broken
    deterministically in favour of the lower class index (as a stable sort of the negated
    scores would), so a tie never counts as a hit for free. ``k`` larger than the number of
    classes gives 1.0. The paper reports top-1 for zero-shot classification.
    """
    scores = as_matrix(logits_or_scores, "logits_or_scores")
    n, n_classes = scores.shape
    if n == 0:
        raise ValueError("topk_accuracy needs at least one row")
    y = as_vector(labels, "labels", n)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    true = scores[np.arange(n), y][:, None]
    before = (np.arange(n_classes)[None, :] < y[:, None]) & (scores == true)
    rank = (scores > true).sum(axis=1) + before.sum(axis=1)  # 0 = best
    result: dict[int, float] = {}
    for k in ks:
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        result[k] = float(np.mean(rank < k))
    return result


# -------------------------------------------------------------------------- few-shot


@dataclass
class FewShotResult:
    """Accuracy of the few-shot protocol over seeded folds.

    ``std`` is the population standard deviation (``np.std``, ddof=0) over folds, as
    BioCLIP's ``few_shot.py`` reports it. ``support_indices[f]`` / ``query_indices[f]`` are
    the row indices used as support / query in fold ``f``.
    """

    mean: float
    std: float
    per_fold: list[float]
    n_classes_used: int
    skipped_classes: list[Any]
    support_indices: list[np.ndarray] = field(default_factory=list, repr=False)
    query_indices: list[np.ndarray] = field(default_factory=list, repr=False)


def cl2n_transform(support: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimpleShot's CL2N: subtract the *support* mean from support and query features, then
    L2-normalise every row. Returns ``(support', query')`` in float64."""
    s = as_matrix(support, "support")
    q = np.asarray(query, dtype=np.float64).reshape(-1, s.shape[1])
    mean = s.mean(axis=0, keepdims=True)
    return l2_normalize(s - mean), l2_normalize(q - mean)


def nearest_class_mean_predict(
    support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray
) -> np.ndarray:
    """Predict each query's label as that of the nearest (Euclidean) class mean of the
    support set — the mean of the (already transformed) support features of each class,
    *not* renormalised, exactly as BioCLIP's ``get_acc`` and scikit-learn's
    ``NearestCentroid`` do. Ties go to the first class in sorted label order."""
    s = as_matrix(support_x, "support_x")
    q = np.asarray(query_x, dtype=np.float64).reshape(-1, s.shape[1])
    classes, codes = np.unique(as_vector(support_y, "support_y", len(s)), return_inverse=True)
    centres = _sums_by_code(codes, s, len(classes))
    centres /= np.bincount(codes, minlength=len(classes))[:, None]
    return classes[_nearest(q, centres)]


def few_shot_ncm(
    features: np.ndarray, labels: np.ndarray, shots: int, folds: int = 5, seed: int = 0
) -> FewShotResult:
    """Few-shot classification by nearest class mean on CL2N features (BioCLIP / BioCLIP 2).

    Paper setting (1-shot and 5-shot, 5 folds): in each fold pick ``shots`` support images
    per class at random; *every* other image of those classes is a query. Features are
    "CL2N" (SimpleShot, Wang et al. 2019): centre support and query by the mean of the
    support features, then L2-normalise. Each class is represented by the mean of its
    transformed support features and a query is assigned to the nearest mean in Euclidean
    distance (the means are not renormalised; with 1 shot the two choices coincide).
    Accuracy is over queries; the mean and population std over folds are reported.

    Fold ``f`` draws its support with ``numpy.random.default_rng([seed, f])``, so a fold does
    not depend on how many folds are run (BioCLIP's script seeds Python's ``random`` with
    the fold number instead; the protocol is the same, the draws are not).

    A class with fewer than ``shots + 1`` images (no query left) is skipped with a warning
    naming it and listed in ``skipped_classes``; its images are used neither as support nor
    as query. (BioCLIP's script only logs such classes.) Labels may be any sortable type.
    """
    x = as_matrix(features, "features")
    y = as_vector(labels, "labels", len(x))
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    classes, codes = np.unique(y, return_inverse=True)
    members = _group_indices(codes, len(classes))
    too_few = [c for c, idx in enumerate(members) if len(idx) < shots + 1]
    skipped = [classes[c].item() if hasattr(classes[c], "item") else classes[c] for c in too_few]
    if skipped:
        warnings.warn(
            f"few-shot ({shots}-shot): skipping {len(skipped)} class(es) with fewer than "
            f"{shots + 1} images: {_name_list(skipped)}",
            stacklevel=2,
        )
    too_few_set = set(too_few)
    used = [c for c in range(len(classes)) if c not in too_few_set]
    if not used:
        raise ValueError(f"few-shot ({shots}-shot): no class has at least {shots + 1} images")
    pool = np.sort(np.concatenate([members[c] for c in used]))

    per_fold: list[float] = []
    supports: list[np.ndarray] = []
    queries: list[np.ndarray] = []
    for fold in range(folds):
        rng = np.random.default_rng([seed, fold])
        support = np.concatenate([rng.choice(members[c], shots, replace=False) for c in used])
        query = np.setdiff1d(pool, support, assume_unique=True)
        s_x, q_x = cl2n_transform(x[support], x[query])
        predicted = nearest_class_mean_predict(s_x, codes[support], q_x)
        per_fold.append(float(np.mean(predicted == codes[query])))
        supports.append(support)
        queries.append(query)
    return FewShotResult(
        mean=float(np.mean(per_fold)),
        std=float(np.std(per_fold)),
        per_fold=per_fold,
        n_classes_used=len(used),
        skipped_classes=skipped,
        support_indices=supports,
        query_indices=queries,
    )


# ---------------------------------------------------------------------- linear probes


def _logistic(C: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=1000, random_state=seed)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
    C: float | None = None,
) -> float:
    """Test accuracy of a multinomial logistic-regression probe fitted on frozen features.

    The classic linear-probe protocol (CLIP, BioCLIP): an L2-regularised
    ``LogisticRegression`` (lbfgs, ``max_iter=1000``) on the training split's features,
    accuracy on the test split. If ``C`` is None it is chosen from
    :data:`LINEAR_PROBE_C_GRID` (0.01, 0.1, 1, 10) by stratified cross-validated accuracy on
    the training split only (5 folds, fewer if the rarest class has fewer images; if some
    class has a single training image, C = 1 is used with a warning). Features are used as
    given (no standardisation), so the grid is meaningful for L2-normalised embeddings.
    """
    xtr = as_matrix(train_x, "train_x")
    ytr = as_vector(train_y, "train_y", len(xtr))
    xte = as_matrix(test_x, "test_x")
    yte = as_vector(test_y, "test_y", len(xte))
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_x has {xtr.shape[1]} dims, test_x {xte.shape[1]}")
    if len(xte) == 0:
        raise ValueError("linear_probe: empty test split")
    _, counts = np.unique(ytr, return_counts=True)
    if len(counts) < 2:
        raise ValueError("linear_probe: the training split has a single class")
    if C is None:
        n_splits = int(min(5, counts.min()))
        if n_splits < 2:
            warnings.warn(
                "linear_probe: a class has a single training image; cannot cross-validate "
                "C, using C = 1",
                stacklevel=2,
            )
            C = 1.0
        else:
            search = GridSearchCV(
                _logistic(1.0, seed),
                {"C": list(LINEAR_PROBE_C_GRID)},
                cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
                scoring="accuracy",
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                search.fit(xtr, ytr)
            C = float(search.best_params_["C"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _logistic(float(C), seed).fit(xtr, ytr)
    return float(np.mean(model.predict(xte) == yte))


def _cv_splits(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs: GroupKFold when groups are given, else StratifiedKFold when
    some class can fill every fold, else KFold; all shuffled with ``seed``."""
    n = len(y)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if groups is not None:
        g = as_vector(groups, "groups", n)
        n_groups = len(np.unique(g))
        n_splits = min(folds, n_groups)
        if n_splits < 2:
            raise ValueError("cross-validation by groups needs at least 2 distinct groups")
        splitter: Any = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(splitter.split(x, y, g))
    n_splits = min(folds, n)
    if n_splits < 2:
        raise ValueError("cross-validation needs at least 2 samples")
    _, counts = np.unique(y, return_counts=True)
    if counts.max() >= n_splits:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "least populated class has only k members"
            warnings.simplefilter("ignore", UserWarning)
            return list(splitter.split(x, y))
    return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x))


def linear_probe_cv(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    *,
    C: float = 1.0,
) -> float:
    """Cross-validated accuracy of a logistic-regression probe, for attribute-style
    classification from embeddings (e.g. habitat from species centroids, docs/reference.md#metrics).

    Splits: ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` (``KFold`` when no
    class is large enough to stratify); with ``groups``, ``GroupKFold`` (shuffled with
    ``seed``) so a group — e.g. a taxonomic order — is never in train and test at once,
    which measures generalisation across clades rather than memorised taxonomy. Folds are
    capped at the number of samples / groups. ``LogisticRegression(C=C, max_iter=1000)``;
    a training fold with a single class predicts that class. Returns pooled accuracy: total
    correct over all held-out samples (robust when fold sizes differ, as group folds do).
    Compare it with :func:`majority_baseline_cv` on the same arguments.
    """
    xs = as_matrix(x, "x")
    ys = as_vector(y, "y", len(xs))
    correct = 0
    total = 0
    for train, test in _cv_splits(xs, ys, folds, seed, groups):
        train_classes = np.unique(ys[train])
        if len(train_classes) == 1:
            predicted = np.full(len(test), train_classes[0])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = _logistic(C, seed).fit(xs[train], ys[train])
            predicted = model.predict(xs[test])
        correct += int(np.sum(predicted == ys[test]))
        total += len(test)
    return correct / total


def majority_baseline_cv(
    y: np.ndarray, folds: int = 5, seed: int = 0, groups: np.ndarray | None = None
) -> float:
    """Pooled accuracy of predicting each training fold's most frequent class, over exactly
    the folds :func:`linear_probe_cv` uses for the same ``y``, ``folds``, ``seed`` and
    ``groups`` — the baseline a probe's accuracy must beat to mean anything."""
    ys = as_vector(y, "y")
    placeholder = np.zeros((len(ys), 1))
    correct = 0
    for train, test in _cv_splits(placeholder, ys, folds, seed, groups):
        values, counts = np.unique(ys[train], return_counts=True)
        correct += int(np.sum(ys[test] == values[np.argmax(counts)]))
    return correct / len(ys)


# ------------------------------------------------------------------ MLP on attributes


def _train_attribute_mlp(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    hidden: int,
    epochs: int,
    seed: int,
    lr: float,
    batch_size: int | None,
    dropout: float,
    lr_step: int,
    lr_gamma: float,
) -> np.ndarray:
    """Train the attribute MLP of :func:`mlp_attributes` on the CPU; return test logits."""
    import torch

    n_train, dim = xtr.shape
    n_attr = ytr.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, n_attr),
        )
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=lr_step, gamma=lr_gamma)
        criterion = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(seed)
        x_t = torch.from_numpy(xtr)
        y_t = torch.from_numpy(ytr)
        step = n_train if batch_size is None else max(1, int(batch_size))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=generator)
            for start in range(0, n_train, step):
                batch = order[start : start + step]
                optimiser.zero_grad()
                loss = criterion(model(x_t[batch]), y_t[batch])
                loss.backward()
                optimiser.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(xte)).numpy()

    return logits


def mlp_attributes(
    train_x: np.ndarray,
    train_y_multi: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    hidden: int = 512,
    epochs: int = 100,
    seed: int = 0,
    *,
    lr: float = 1e-3,
    batch_size: int | None = 256,
    dropout: float = 0.5,
    lr_step: int = 20,
    lr_gamma: float = 0.5,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Multi-label attribute prediction with a small MLP on frozen features.

    Paper setting: FishNet — 9 binary attributes (feeding path pelagic/benthic; tropical,
    temperate, subtropical, boreal, polar; freshwater, saltwater, brackish), MLP
    768→512→9, exact-match accuracy (all 9 right); AwA2 — 85 binary attributes on the
    standard class split, same MLP with 85 outputs, macro-F1.

    Model: ``Linear(D, hidden) → ReLU → Dropout(dropout) → Linear(hidden, A)``, trained with
    ``BCEWithLogitsLoss`` and Adam (``lr``), step decay ×``lr_gamma`` every ``lr_step``
    epochs, shuffled minibatches of ``batch_size`` (None = full batch), on the CPU. A label
    is predicted present when its sigmoid exceeds 0.5 (logit > 0). Deterministic for a
    ``seed``: weights, dropout and batch order are drawn inside ``torch.random.fork_rng``
    after ``torch.manual_seed(seed)``, leaving the caller's RNG state untouched.
    ``num_threads`` sets torch's intra-op threads for the call only (restored afterwards);
    1 is much faster for small problems on a busy machine, None leaves torch's setting.

    Departures from the released BioCLIP 2 scripts (``fishnet.py``/``awa2.py``), deliberate:
    those use ``Linear → Dropout(0.5) → Linear`` with no non-linearity, threshold the raw
    logits at 0.5 instead of the probabilities, and compute AwA2's F1 with
    ``labels=np.unique(y_true)``, which for a multi-label indicator matrix selects only
    attribute columns 0 and 1. Here: a ReLU, the 0.5-probability threshold, and macro-F1
    over all A attributes.

    Returns ``exact_match`` (fraction of test rows with every attribute right),
    ``macro_f1`` (unweighted mean over attributes of the per-attribute F1, an attribute
    with no positive in truth or prediction scoring 0 — scikit-learn's
    ``zero_division=0``), ``per_attribute_accuracy`` (list of A floats) and
    ``predictions`` (int ``(N_test, A)`` array of 0/1).
    """
    import torch

    xtr = as_matrix(train_x, "train_x", np.float32)
    xte = as_matrix(test_x, "test_x", np.float32)
    ytr = as_matrix(train_y_multi, "train_y_multi", np.float32)
    yte = np.asarray(test_y)
    if yte.ndim != 2:
        raise ValueError(f"test_y must be 2-D (N, A), got shape {yte.shape}")
    if len(ytr) != len(xtr) or len(yte) != len(xte):
        raise ValueError("features and attribute matrices must have the same number of rows")
    if ytr.shape[1] != yte.shape[1] or xtr.shape[1] != xte.shape[1]:
        raise ValueError("train and test must have the same feature and attribute dimensions")
    if not np.isin(ytr, (0.0, 1.0)).all() or not np.isin(yte, (0, 1)).all():
        raise ValueError("attribute labels must be binary (0/1)")
    if len(xtr) == 0 or len(xte) == 0:
        raise ValueError("mlp_attributes needs non-empty train and test sets")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        logits = _train_attribute_mlp(
            xtr, ytr, xte, hidden, epochs, seed, lr, batch_size, dropout, lr_step, lr_gamma
        )
    finally:
        torch.set_num_threads(previous_threads)

    predictions = (logits > 0).astype(np.int64)
    truth = yte.astype(np.int64)
    tp = np.sum((predictions == 1) & (truth == 1), axis=0)
    fp = np.sum((predictions == 1) & (truth == 0), axis=0)
    fn = np.sum((predictions == 0) & (truth == 1), axis=0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return {
        "exact_match": float(np.mean(np.all(predictions == truth, axis=1))),
        "macro_f1": float(np.mean(f1)),
        "per_attribute_accuracy": [float(a) for a in np.mean(predictions == truth, axis=0)],
        "predictions": predictions,
    }


# ------------------------------------------------------------------ NeWT binary tasks


class _ScaleOrLogUniform:
    """gamma for the RBF SVC: ``"scale"`` with probability ``p_scale``, else log-uniform in
    [low, high]. Has the ``rvs`` method scikit-learn's ``ParameterSampler`` calls."""

    def __init__(self, low: float, high: float, p_scale: float = 0.5) -> None:
        self.low, self.high, self.p_scale = low, high, p_scale

    def rvs(self, random_state: Any = None) -> str | float:
        rng = check_random_state(random_state)
        if rng.uniform() < self.p_scale:
            return "scale"
        return float(loguniform(self.low, self.high).rvs(random_state=rng))


def _svm_search_space() -> list[dict[str, Any]]:
    c = loguniform(1e-3, 1e3)
    return [
        {"svc__kernel": ["linear"], "svc__C": c},
        {"svc__kernel": ["rbf"], "svc__C": c, "svc__gamma": _ScaleOrLogUniform(1e-4, 1e1)},
    ]


def _is_train(splits: np.ndarray) -> np.ndarray:
    if splits.dtype == bool:
        return splits
    lowered = np.char.lower(splits.astype(str))
    bad = ~np.isin(lowered, ("train", "test"))
    if bad.any():
        raise ValueError(f"splits must be 'train' or 'test', got {sorted(set(splits[bad]))[:5]}")
    return lowered == "train"


def svm_binary_tasks(
    features: np.ndarray,
    labels_binary: np.ndarray,
    task_ids: np.ndarray | Sequence[Hashable],
    splits: np.ndarray | Sequence[str] | Sequence[bool],
    n_iter: int = 20,
    seed: int = 0,
    *,
    cl2n: bool = True,
    max_cv_folds: int = 3,
) -> dict[str, Any]:
    """NeWT-style evaluation: one SVM per binary task, pooled accuracy over all test images.

    Paper setting (NeWT, 164 binary tasks; code from biobench): for each task, fit
    ``make_pipeline(StandardScaler(), SVC())`` on the task's train images with a
    ``RandomizedSearchCV`` over hyper-parameters, predict its test images, and report the
    accuracy of all test predictions pooled over tasks (total correct / total test images).
    As in that code, each task's features are first centred by its train mean and
    L2-normalised (``cl2n=True``).

    Search here: ``n_iter`` draws (``random_state=seed``) of kernel ∈ {linear, rbf} (half
    each), C ~ log-uniform(1e-3, 1e3), and for rbf gamma = ``"scale"`` or
    ~ log-uniform(1e-4, 1e1) (half each); stratified ``max_cv_folds``-fold CV (3), reduced
    to the rarer class's train count when that is smaller. (The released script searches
    C ∈ [1e-3, 1e1], gamma ∈ [1e-4, 1e-3] and four kernels with 100 draws and 5-fold CV;
    this smaller search keeps the protocol and fits a CPU.) A task whose rarer class has a
    single train image cannot be cross-validated and gets the default ``SVC()`` with a
    warning; a task whose train split has one class, or that has no test image, is skipped
    with a warning and listed in ``skipped_tasks``.

    ``splits`` holds ``"train"``/``"test"`` per image (or booleans, True = train).
    Returns ``pooled_accuracy``, ``per_task`` (task id as str → accuracy), ``n_tasks``
    (tasks evaluated), ``n_test`` (pooled test images) and ``skipped_tasks``.
    """
    x = as_matrix(features, "features")
    y = as_vector(labels_binary, "labels_binary", len(x))
    tasks = as_vector(np.asarray(task_ids, dtype=object), "task_ids", len(x))
    is_train = _is_train(as_vector(np.asarray(splits), "splits", len(x)))

    per_task: dict[str, float] = {}
    skipped: list[str] = []
    correct = 0
    total = 0
    for task in dict.fromkeys(tasks.tolist()):
        in_task = tasks == task
        train = np.flatnonzero(in_task & is_train)
        test = np.flatnonzero(in_task & ~is_train)
        name = str(task)
        classes, counts = np.unique(y[train], return_counts=True)
        if len(classes) < 2 or len(test) == 0:
            reason = "its train split has a single class" if len(test) else "it has no test image"
            warnings.warn(f"svm_binary_tasks: skipping task {name!r}: {reason}", stacklevel=2)
            skipped.append(name)
            continue
        x_train, x_test = x[train], x[test]
        if cl2n:
            x_train, x_test = cl2n_transform(x_train, x_test)
        pipeline = make_pipeline(StandardScaler(), SVC())
        n_splits = int(min(max_cv_folds, counts.min()))
        if n_splits < 2:
            warnings.warn(
                f"svm_binary_tasks: task {name!r} has a class with a single train image; "
                "fitting the default SVC without a hyper-parameter search",
                stacklevel=2,
            )
            model: Any = pipeline.fit(x_train, y[train])
        else:
            model = RandomizedSearchCV(
                pipeline,
                _svm_search_space(),
                n_iter=n_iter,
                cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
                random_state=seed,
            ).fit(x_train, y[train])
        hits = int(np.sum(model.predict(x_test) == y[test]))
        per_task[name] = hits / len(test)
        correct += hits
        total += len(test)
    if total == 0:
        raise ValueError("svm_binary_tasks: no task could be evaluated")
    return {
        "pooled_accuracy": correct / total,
        "per_task": per_task,
        "n_tasks": len(per_task),
        "n_test": total,
        "skipped_tasks": skipped,
    }


# ------------------------------------------------- generalized category discovery


def _hungarian_correct(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample correctness under the one-to-one cluster→class map that maximises the
    number of matches (Hungarian algorithm on the contingency table)."""
    true_classes, t = np.unique(y_true, return_inverse=True)
    pred_classes, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((len(pred_classes), len(true_classes)), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(len(pred_classes), -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping[p] == t


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Clustering accuracy: the fraction of samples correct under the best one-to-one
    matching of predicted clusters to true classes (``scipy.optimize.linear_sum_assignment``
    on the cluster × class contingency table). Labels and cluster ids may be any sortable
    values and their numbers may differ (unmatched clusters count as wrong)."""
    t = as_vector(y_true, "y_true")
    p = as_vector(y_pred, "y_pred", len(t))
    if len(t) == 0:
        raise ValueError("hungarian_accuracy needs at least one sample")
    return float(np.mean(_hungarian_correct(t, p)))


def semi_supervised_kmeans(
    features: np.ndarray,
    labels: np.ndarray,
    known_mask: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
) -> np.ndarray:
    """Semi-supervised k-means of GCD (Vaze et al. 2022), as BioCLIP 2 runs on Herbarium19.

    Labelled images (``known_mask`` True; ``labels`` read only for them) are pinned to the
    cluster of their class: known class ``i`` in sorted order owns cluster ``i``, initialised
    at the mean of its labelled images. The remaining ``n_clusters - n_known`` centres are
    seeded by k-means++ over the *unlabelled* images, with D² measured to all centres so far
    (known ones included), drawn with ``numpy.random.default_rng(seed)``. Then Lloyd
    iterations: unlabelled images go to the nearest centre (squared Euclidean), labelled
    ones stay put; centres become the mean of all their members (an empty cluster keeps its
    centre); stop when the unlabelled assignment no longer changes or after ``max_iter``
    rounds. (The GCD/BioCLIP 2 code stops on a centre-shift tolerance, runs 10 rounds and
    uses one initialisation; the fixed point is the same.)

    Returns the cluster index of every image, shape ``(N,)``.
    """
    x = as_matrix(features, "features")
    y = as_vector(labels, "labels", len(x))
    known = as_vector(known_mask, "known_mask", len(x)).astype(bool)
    labelled = np.flatnonzero(known)
    unlabelled = np.flatnonzero(~known)
    known_classes = np.unique(y[labelled])
    n_known = len(known_classes)
    if n_clusters < max(n_known, 1):
        raise ValueError(f"n_clusters={n_clusters} is fewer than the {n_known} known classes")
    if len(unlabelled) < n_clusters - n_known:
        raise ValueError(
            f"{len(unlabelled)} unlabelled images cannot seed {n_clusters - n_known} new clusters"
        )
    assignment = np.empty(len(x), dtype=np.int64)
    assignment[labelled] = np.searchsorted(known_classes, y[labelled])

    centres = np.empty((n_clusters, x.shape[1]))
    if n_known:
        centres[:n_known] = _sums_by_code(assignment[labelled], x[labelled], n_known)
        centres[:n_known] /= np.bincount(assignment[labelled], minlength=n_known)[:, None]
    xu = x[unlabelled]
    rng = np.random.default_rng(seed)
    start = n_known
    if n_known == 0 and n_clusters > 0:
        centres[0] = xu[rng.integers(len(xu))]
        start = 1
    if start < n_clusters:
        d2 = _squared_distances(xu, centres[:start]).min(axis=1)
        for j in range(start, n_clusters):
            weight_sum = d2.sum()
            probs = d2 / weight_sum if weight_sum > 0 else None
            centres[j] = xu[rng.choice(len(xu), p=probs)]
            d2 = np.minimum(d2, _squared_distances(xu, centres[j : j + 1])[:, 0])

    previous: np.ndarray | None = None
    for _ in range(max(1, max_iter)):
        current = _nearest(xu, centres)
        assignment[unlabelled] = current
        if previous is not None and np.array_equal(current, previous):
            break
        previous = current
        sums = _sums_by_code(assignment, x, n_clusters)
        counts = np.bincount(assignment, minlength=n_clusters)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return assignment


def gcd_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    known_mask: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
) -> dict[str, float]:
    """Generalized category discovery accuracy (Herbarium19 in BioCLIP 2).

    Some images are labelled (``known_mask`` True), all from the "old" classes; the
    unlabelled images come from old and "new" classes. :func:`semi_supervised_kmeans`
    clusters everything into ``n_clusters`` (old + new class count in the paper), and
    accuracy is measured on the unlabelled images only, with the GCD convention: one
    Hungarian matching of clusters to classes over *all* unlabelled images, then ``all`` =
    accuracy over all of them, ``old`` = over those whose class has labelled images, ``new``
    = over the rest (NaN when a subset is empty). (The released BioCLIP 2 script instead
    matches the old and new subsets separately, which can only score higher.)
    """
    x = as_matrix(features, "features")
    y = as_vector(labels, "labels", len(x))
    known = as_vector(known_mask, "known_mask", len(x)).astype(bool)
    if known.all():
        raise ValueError("gcd_accuracy: every image is labelled; nothing to discover")
    assignment = semi_supervised_kmeans(x, y, known, n_clusters, seed=seed, max_iter=max_iter)
    y_u = y[~known]
    correct = _hungarian_correct(y_u, assignment[~known])
    old = np.isin(y_u, np.unique(y[known]))

    def mean_or_nan(values: np.ndarray) -> float:
        return float(np.mean(values)) if len(values) else float("nan")

    return {
        "all": mean_or_nan(correct),
        "old": mean_or_nan(correct[old]),
        "new": mean_or_nan(correct[~old]),
    }


# --------------------------------------------------------------- continuous traits


def ridge_regression_r2(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    alphas: Sequence[float] = (0.01, 0.1, 1, 10, 100),
) -> float:
    """Cross-validated R² of a ridge regression from embeddings to a continuous trait
    (e.g. beak length from species centroids: "trait alignment", docs/reference.md#metrics).

    ``KFold(folds, shuffle=True, random_state=seed)`` (capped at N); in each training fold
    ``RidgeCV(alphas)`` picks the penalty by efficient leave-one-out on that fold only, and
    predicts the held-out fold. The score is R² of the *pooled out-of-fold
    predictions*, not the mean of per-fold R² (:func:`taxoclip.stats.ridge_cv_r2`, shared
    with ``taxoclip analyze``): trait studies have few species (Darwin's finches: ~15).
    1 = perfect, ≤ 0 = no better than the mean, NaN for a constant trait. ``y`` may be
    ``(N,)`` or ``(N, T)`` (R² averaged uniformly over traits).
    """
    xs = as_matrix(x, "x")
    ys = np.asarray(y, dtype=np.float64)
    if ys.ndim not in (1, 2) or len(ys) != len(xs):
        raise ValueError(f"y must be (N,) or (N, T) with N = {len(xs)}, got {ys.shape}")
    if min(folds, len(xs)) < 2 or len(xs) < 3:
        raise ValueError("ridge_regression_r2 needs at least 3 samples and 2 folds")
    return ridge_cv_r2(xs, ys, kfold_splits(len(xs), folds, seed), alphas)

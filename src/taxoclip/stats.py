"""Statistics shared by ``taxoclip eval`` and ``taxoclip analyze``, written once.

Small pure functions over numpy arrays: input checks, L2 normalisation, rank
correlation, the first principal axis, mean and sd of a null, and the cross-validated
ridge R² both the evaluation protocols and the emergent-property metrics report. No
models, no file I/O and nothing from taxoclip above :mod:`taxoclip.errors`, so both
stages (and their tests) can lean on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.model_selection import KFold

__all__ = [
    "as_matrix",
    "as_vector",
    "kfold_splits",
    "l2_normalize",
    "label_codes",
    "mean_sd",
    "pc1_scores",
    "ridge_cv_r2",
    "spearman",
]


def as_matrix(x: Any, name: str, dtype: type = np.float64) -> np.ndarray:
    """``x`` as a finite 2-D array (rows × dimensions); ValueError naming ``name`` if not."""
    array = np.asarray(x, dtype=dtype)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows × dimensions), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite values (NaN or infinite)")
    return array


def as_vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """``x`` as a 1-D array, with ``n`` entries (one per feature row) when ``n`` is given."""
    array = np.asarray(x)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries for {n} feature rows")
    return array


def label_codes(labels: Any) -> np.ndarray:
    """Integer codes 0..k-1 for any labels (strings, ints), in sorted label order."""
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def l2_normalize(z: Any) -> np.ndarray:
    """Rows scaled to unit length, in float64 (zero rows stay zero)."""
    z = np.asarray(z, dtype=np.float64)
    norms = np.linalg.norm(z, axis=-1, keepdims=True)
    return np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ of two samples; NaN when either is constant (ρ is undefined there)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def pc1_scores(x: np.ndarray) -> np.ndarray | None:
    """Each row's coordinate on the first principal axis of the rows (sign arbitrary);
    None when the rows do not vary at all."""
    centred = x - x.mean(axis=0)
    if not np.any(centred):
        return None
    return centred @ np.linalg.svd(centred, full_matrices=False)[2][0]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample sd with ddof 1) of the finite values; sd 0 for one value, NaN for none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), sd


def kfold_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train, test) index pairs, K = min(folds, n)."""
    splitter = KFold(n_splits=min(folds, n), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((n, 1))))


def ridge_cv_r2(
    x: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    alphas: Sequence[float],
) -> float:
    """R² of the pooled out-of-fold predictions of a ridge regression from ``x`` to ``y``.

    In each training fold ``RidgeCV(alphas)`` picks its penalty by efficient leave-one-out
    on that fold only and predicts the held-out fold. The score is one R² over all pooled
    predictions, not the mean of per-fold R²: with few rows (a clade of 15 species), R² on
    a fold of 3 points is dominated by that fold's own variance. ``y`` may be ``(N,)`` or
    ``(N, T)`` (R² averaged uniformly over traits). 1 = perfect, ≤ 0 = no better than the
    mean; NaN when a target is constant (R² is undefined there). A training fold whose
    target is constant predicts that constant.
    """
    y = np.asarray(y, dtype=np.float64)
    columns = y.reshape(len(y), -1)
    if np.any(np.ptp(columns, axis=0) == 0):
        return float("nan")
    alphas = np.asarray(alphas, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    predicted = np.full_like(columns, np.nan)  # rows outside every test fold stay NaN
    for train, test in splits:
        if np.all(np.ptp(columns[train], axis=0) == 0):
            predicted[test] = columns[train][0]
            continue
        predicted[test] = _ridge_loo_fit(x[train], columns[train], alphas)(x[test])
    residual = np.sum((columns - predicted) ** 2, axis=0)
    total = np.sum((columns - columns.mean(axis=0)) ** 2, axis=0)
    return float(np.mean(1.0 - residual / total))


def _ridge_loo_fit(x: np.ndarray, y: np.ndarray, alphas: np.ndarray):
    """scikit-learn's ``RidgeCV(alphas).fit(x, y).predict`` (intercept unpenalised, the
    penalty with the least mean squared leave-one-out error, the first of equals), from
    one SVD of the centred rows instead of a scikit-learn fit per call (which cost 6 ms
    each, most of the analysis' trait time): with Xc = U S Vᵀ the hat matrix is
    11ᵀ/n + U diag(s²/(s² + α)) Uᵀ (U ⟂ 1, as Xc's columns sum to 0), and the
    leave-one-out residual of row i is its residual over 1 − H_ii."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    u, singular, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uy = u.T @ (y - y_mean)  # (r, T)
    squared = singular**2
    best, best_error = 0, np.inf
    for index, alpha in enumerate(alphas):
        shrink = squared / (squared + alpha)  # (r,)
        fitted = y_mean + u @ (shrink[:, None] * uy)
        leverage = 1.0 / len(x) + (u**2) @ shrink
        error = float(np.mean(((y - fitted) / (1.0 - leverage)[:, None]) ** 2))
        if error < best_error:
            best, best_error = index, error
    weights = vt.T @ ((singular / (squared + alphas[best]))[:, None] * uy)  # (D, T)
    return lambda rows: y_mean + (rows - x_mean) @ weights


def roc_auc(positives: Any, negatives: Any) -> float | None:
    """Area under the ROC curve of scores of positives against negatives (ties count
    half): the chance that a random positive outscores a random negative. None when
    either side is empty."""
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))

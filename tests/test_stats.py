"""taxoclip.stats: each shared statistic checked against values worked out by hand or by
an independent computation (scipy, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict

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


def test_input_checks_name_the_argument():
    assert as_matrix([[1, 2], [3, 4]], "x").dtype == np.float64
    assert as_matrix([[1, 2]], "x", np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="features must be 2-D"):
        as_matrix([1, 2, 3], "features")
    with pytest.raises(ValueError, match="z holds non-finite"):
        as_matrix([[1.0, np.nan]], "z")
    assert as_vector(["a", "b"], "labels", 2).tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="labels has 3 entries for 2 feature rows"):
        as_vector([1, 2, 3], "labels", 2)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        as_vector([[1, 2]], "labels")


def test_label_codes_follow_sorted_labels():
    assert label_codes(["b", "a", "c", "a"]).tolist() == [1, 0, 2, 0]


def test_l2_normalize_keeps_zero_rows():
    unit = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert unit.dtype == np.float64
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


def test_spearman_matches_scipy_and_is_nan_for_a_constant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman(a, -2 * a + 1) == pytest.approx(-1.0)
    assert math.isnan(spearman(a, np.ones(30)))


def test_pc1_scores_follow_the_long_axis():
    rng = np.random.default_rng(1)
    t = rng.normal(size=50)
    x = np.column_stack([3 * t, 0.01 * rng.normal(size=50), np.full(50, 7.0)])
    scores = pc1_scores(x)
    assert abs(np.corrcoef(scores, t)[0, 1]) > 0.999
    assert scores.mean() == pytest.approx(0.0, abs=1e-12)
    assert pc1_scores(np.ones((4, 3))) is None


def test_mean_sd_drops_non_finite_values():
    assert mean_sd([1.0, 3.0, np.nan]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_sd([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_sd([np.nan]))


def test_kfold_splits_cover_every_row_once_and_cap_at_n():
    splits = kfold_splits(7, 5, seed=3)
    assert len(splits) == 5
    assert sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(7))
    assert len(kfold_splits(3, 5, seed=0)) == 3


def test_ridge_cv_r2_equals_sklearn_pooled_out_of_fold_r2():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=6) + 0.3 * rng.normal(size=40)
    alphas = (0.01, 0.1, 1.0, 10.0)
    cv = KFold(5, shuffle=True, random_state=0)
    expected = r2_score(y, cross_val_predict(RidgeCV(alphas=alphas), x, y, cv=cv))
    assert ridge_cv_r2(x, y, kfold_splits(40, 5, 0), alphas) == pytest.approx(expected)
    assert expected > 0.8
    # two traits: R² averaged uniformly, as r2_score does
    y2 = np.column_stack([y, rng.normal(size=40)])
    expected2 = r2_score(y2, cross_val_predict(RidgeCV(alphas=alphas), x, y2, cv=cv))
    assert ridge_cv_r2(x, y2, kfold_splits(40, 5, 0), alphas) == pytest.approx(expected2)


@pytest.mark.parametrize("rows, dim", [(6, 64), (15, 64), (60, 512), (40, 6)])
def test_ridge_cv_r2_follows_sklearn_in_the_wide_regime_of_clade_centroids(rows, dim):
    """Few species centroids in many dimensions (a finch genus: 6 x 64), where RidgeCV
    uses its Gram route; the penalty grid scaled to the total variance, as the trait
    metric does, so the choice among penalties matters."""
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, dim))
    y = x[:, :3] @ rng.normal(size=3) + rng.normal(size=rows)
    alphas = float(np.sum((x - x.mean(axis=0)) ** 2)) * np.logspace(-6, 1, 15)
    folds = min(5, rows)
    cv = KFold(folds, shuffle=True, random_state=0)
    expected = r2_score(y, cross_val_predict(RidgeCV(alphas=alphas), x, y, cv=cv))
    found = ridge_cv_r2(x, y, kfold_splits(rows, folds, 0), alphas)
    assert found == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_ridge_cv_r2_constant_target_and_constant_training_fold():
    x = np.random.default_rng(4).normal(size=(6, 2))
    assert math.isnan(ridge_cv_r2(x, np.ones(6), kfold_splits(6, 3, 0), (1.0,)))
    # a training fold whose target is constant predicts that constant for its test rows
    y = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    tests = [np.array([4, 5]), np.array([0, 1]), np.array([2, 3])]
    splits = [(np.setdiff1d(np.arange(6), t), t) for t in tests]
    predicted = np.zeros(6)  # the first training fold (rows 0-3) is all zeros
    for train, test in splits[1:]:
        predicted[test] = RidgeCV(alphas=np.array([1.0])).fit(x[train], y[train]).predict(x[test])
    expected = 1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)
    assert ridge_cv_r2(x, y, splits, (1.0,)) == pytest.approx(expected)


def test_roc_auc_is_the_mann_whitney_probability():
    from sklearn.metrics import roc_auc_score

    from taxoclip.stats import roc_auc

    rng = np.random.default_rng(7)
    pos, neg = rng.normal(0.5, 1, 40), np.round(rng.normal(0, 1, 60), 1)
    labels = np.r_[np.ones(40), np.zeros(60)]
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]))
    assert roc_auc([1, 2], [1, 2]) == 0.5 and roc_auc([3], [1, 2]) == 1.0
    assert roc_auc([], [1.0]) is None

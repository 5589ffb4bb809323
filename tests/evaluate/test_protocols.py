"""The BioCLIP 2 evaluation protocols on small synthetic features with known answers."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neighbors import NearestCentroid

from taxoclip.evaluate.protocols import (
    FewShotResult,
    few_shot_ncm,
    gcd_accuracy,
    hungarian_accuracy,
    linear_probe,
    linear_probe_cv,
    majority_baseline_cv,
    mlp_attributes,
    ridge_regression_r2,
    semi_supervised_kmeans,
    svm_binary_tasks,
    topk_accuracy,
    zero_shot_logits,
)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n_per_class, centres, noise, seed):
    """Gaussian blobs around the given centres; returns (features, int labels)."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float64)
    counts = np.broadcast_to(n_per_class, (len(centres),))
    x = np.concatenate(
        [
            c + noise * rng.standard_normal((n, centres.shape[1]))
            for c, n in zip(centres, counts, strict=True)
        ]
    )
    y = np.repeat(np.arange(len(centres)), counts)
    return x.astype(np.float32), y


# ------------------------------------------------------------------------- zero-shot

# Class text embeddings as columns (D=2, C=3): east, north, west.
TEXT = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
IMAGES = np.array([[1.0, 0.0], [0.6, 0.8], [-0.6, 0.8], [0.0, -1.0]], dtype=np.float32)
LABELS = np.array([0, 0, 2, 1])
# cosines: [1, 0, -1]      label 0 -> rank 0 (hit at top-1)
#          [.6, .8, -.6]   label 0 -> rank 1 (hit at top-2)
#          [-.6, .8, .6]   label 2 -> rank 1 (hit at top-2)
#          [0, -1, 0]      label 1 -> rank 2 (miss at top-2)


def test_zero_shot_hand_example():
    logits = zero_shot_logits(IMAGES, TEXT, logit_scale=10.0)
    assert logits.dtype == np.float32 and logits.shape == (4, 3)
    expected = 10.0 * np.array([[1, 0, -1], [0.6, 0.8, -0.6], [-0.6, 0.8, 0.6], [0, -1, 0]])
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert topk_accuracy(logits, LABELS, ks=(1, 2, 3)) == {1: 0.25, 2: 0.75, 3: 1.0}
    # the scale changes no ranking; k beyond the class count is 1.0
    assert topk_accuracy(zero_shot_logits(IMAGES, TEXT, 1.0), LABELS, ks=(1, 5)) == {
        1: 0.25,
        5: 1.0,
    }


def test_topk_ties_go_to_the_lower_class_index():
    scores = np.array([[0.5, 0.1, 0.5], [0.5, 0.1, 0.5]])
    assert topk_accuracy(scores, np.array([0, 2]), ks=(1, 2)) == {1: 0.5, 2: 1.0}


def test_topk_rejects_bad_labels_and_shapes():
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        zero_shot_logits(IMAGES, TEXT.T, 1.0)


# -------------------------------------------------------------------------- few-shot


def few_shot_data():
    """7 overlapping classes with uneven sizes (string labels), plus a 5-image class. Hard
    enough that renormalised class means (cosine) would predict differently from the
    protocol's plain Euclidean means, so the comparison below can tell them apart."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((7, 24))
    x, y = blobs([9, 12, 7, 10, 8, 15, 6], centres, noise=1.5, seed=4)
    rare_x = rng.standard_normal((5, 24)).astype(np.float32)
    x = unit(np.concatenate([x, rare_x]))
    names = np.array([f"species_{i}" for i in range(7)] + ["rare_species"])
    return x, names[np.concatenate([y, np.full(5, 7)])]


@pytest.mark.parametrize("shots", [1, 5])
def test_few_shot_equals_nearest_centroid_on_cl2n_features(shots):
    x, y = few_shot_data()
    if shots == 5:
        with pytest.warns(UserWarning, match="rare_species"):
            result = few_shot_ncm(x, y, shots=shots, folds=5, seed=0)
        assert result.skipped_classes == ["rare_species"]
        assert result.n_classes_used == 7
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = few_shot_ncm(x, y, shots=shots, folds=5, seed=0)
        assert result.skipped_classes == [] and result.n_classes_used == 8
    assert isinstance(result, FewShotResult) and len(result.per_fold) == 5
    used = ~np.isin(y, result.skipped_classes)
    for fold, (support, query) in enumerate(
        zip(result.support_indices, result.query_indices, strict=True)
    ):
        # `shots` support images per used class; every other image of those classes queries
        _, per_class = np.unique(y[support], return_counts=True)
        assert (per_class == shots).all() and len(per_class) == result.n_classes_used
        assert not set(support) & set(query)
        assert sorted([*support, *query]) == list(np.flatnonzero(used))
        # CL2N computed independently: centre by the support mean, then L2-normalise
        mean = x[support].astype(np.float64).mean(axis=0)
        s = x[support] - mean
        q = x[query] - mean
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        with warnings.catch_warnings():  # its unused shrinkage statistics divide by 0 at 1 shot
            warnings.simplefilter("ignore", RuntimeWarning)
            reference = NearestCentroid().fit(s, y[support]).predict(q)
        assert result.per_fold[fold] == pytest.approx(np.mean(reference == y[query]), abs=1e-12)
    assert result.mean == pytest.approx(np.mean(result.per_fold))
    assert result.std == pytest.approx(np.std(result.per_fold))
    assert 0.3 < result.mean < 1.0  # a real task, not a trivial one


def test_few_shot_is_seeded():
    x, y = few_shot_data()
    a = few_shot_ncm(x, y, shots=1, folds=3, seed=7)
    b = few_shot_ncm(x, y, shots=1, folds=3, seed=7)
    c = few_shot_ncm(x, y, shots=1, folds=3, seed=8)
    assert a.per_fold == b.per_fold
    assert all(
        np.array_equal(s, t) for s, t in zip(a.support_indices, b.support_indices, strict=True)
    )
    assert any(
        not np.array_equal(s, t) for s, t in zip(a.support_indices, c.support_indices, strict=True)
    )
    # fold f does not depend on how many folds are run
    d = few_shot_ncm(x, y, shots=1, folds=1, seed=7)
    assert np.array_equal(d.support_indices[0], a.support_indices[0])


# ---------------------------------------------------------------------- linear probes


def test_linear_probe_separable_is_perfect():
    centres = 6 * np.eye(3, 8)
    train_x, train_y = blobs(20, centres, noise=0.5, seed=1)
    test_x, test_y = blobs(20, centres, noise=0.5, seed=2)
    assert linear_probe(train_x, train_y, test_x, test_y, seed=0) == 1.0
    assert linear_probe(unit(train_x), train_y, unit(test_x), test_y, C=10.0) == 1.0


def test_linear_probe_random_labels_is_chance():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((600, 16)))
    y = rng.integers(0, 4, 600)
    accuracy = linear_probe(x[:200], y[:200], x[200:], y[200:], seed=0)
    assert abs(accuracy - 0.25) < 0.08


def test_linear_probe_cv_groups_stop_memorising_groups():
    """Each group (think: taxonomic order) has its own centre and one random label: without
    groups a probe memorises the centres; grouped folds show it has learnt nothing."""
    rng = np.random.default_rng(2)
    n_groups, per_group = 24, 6
    centres = 3 * rng.standard_normal((n_groups, 32))
    group_label = np.tile([0, 1], n_groups // 2)
    rng.shuffle(group_label)
    groups = np.repeat(np.arange(n_groups), per_group)
    x = centres[groups] + 0.3 * rng.standard_normal((len(groups), 32))
    y = group_label[groups]
    memorised = linear_probe_cv(x, y, folds=5, seed=0)
    grouped = linear_probe_cv(x, y, folds=5, seed=0, groups=groups)
    assert memorised > 0.95
    assert grouped < 0.75
    assert majority_baseline_cv(y, folds=5, seed=0, groups=groups) <= 0.6


def test_linear_probe_cv_learns_a_real_attribute_across_groups():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 10))
    y = (x[:, 0] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 1.0, -1.0)  # a margin: the attribute is linearly separable
    groups = rng.integers(0, 8, 120)
    assert linear_probe_cv(x, y, folds=4, seed=0, groups=groups) > 0.9
    assert linear_probe_cv(x, y, folds=4, seed=0) > 0.9
    assert 0.4 < majority_baseline_cv(y, folds=4, seed=0) < 0.65


# ------------------------------------------------------------------ MLP on attributes


def planted_multilabel(n, dim=16, n_attr=5, seed=0):
    """Attributes = signs of fixed linear functions, with a margin; plus one attribute that
    is never present (exercises F1's zero-division case)."""
    rng = np.random.default_rng(100)
    w = rng.standard_normal((dim, n_attr))
    w /= np.linalg.norm(w, axis=0)
    data = np.random.default_rng(seed).standard_normal((4 * n, dim))
    margin = np.abs(data @ w).min(axis=1) > 0.25
    x = data[margin][:n].astype(np.float32)
    y = (x @ w > 0).astype(np.int64)
    return x, np.concatenate([y, np.zeros((n, 1), dtype=np.int64)], axis=1)


def test_mlp_attributes_learns_planted_labels_and_metrics_match_sklearn():
    train_x, train_y = planted_multilabel(600, seed=1)
    test_x, test_y = planted_multilabel(300, seed=2)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    # the paper's head (hidden 512), on a problem small enough for 40 epochs on one thread
    result = mlp_attributes(train_x, train_y, test_x, test_y, epochs=40, seed=0, num_threads=1)
    assert torch.equal(state, torch.get_rng_state())  # caller's RNG untouched
    assert torch.get_num_threads() == threads  # and its thread setting restored
    assert result["exact_match"] >= 0.9
    predictions = result["predictions"]
    assert predictions.shape == test_y.shape and set(np.unique(predictions)) <= {0, 1}
    assert result["exact_match"] == pytest.approx(accuracy_score(test_y, predictions))
    assert result["macro_f1"] == pytest.approx(
        f1_score(test_y, predictions, average="macro", zero_division=0)
    )
    np.testing.assert_allclose(
        result["per_attribute_accuracy"], (predictions == test_y).mean(axis=0)
    )
    again = mlp_attributes(train_x, train_y, test_x, test_y, epochs=40, seed=0, num_threads=1)
    assert np.array_equal(again["predictions"], predictions)


def test_mlp_attributes_full_batch_runs():
    threads = torch.get_num_threads()
    train_x, train_y = planted_multilabel(200, seed=3)
    result = mlp_attributes(
        train_x, train_y, train_x, train_y, hidden=32, epochs=5, seed=1, batch_size=None
    )
    assert torch.get_num_threads() == threads
    assert 0.0 <= result["macro_f1"] <= 1.0 and len(result["per_attribute_accuracy"]) == 6


# ------------------------------------------------------------------ NeWT binary tasks


def binary_task(name, n_train, n_test, separable, seed, dim=8):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = np.arange(n) % 2
    rng.shuffle(y)
    if separable:
        x = rng.standard_normal((n, dim))
        x[:, 0] += np.where(y == 1, 4.0, -4.0)
    else:
        x = rng.standard_normal((n, dim))
    splits = np.array(["train"] * n_train + ["test"] * n_test)
    return x, y, np.full(n, name, dtype=object), splits


def stack(*tasks):
    return [np.concatenate(parts) for parts in zip(*tasks, strict=True)]


def test_svm_binary_tasks_pools_over_tasks():
    x, y, tasks, splits = stack(
        binary_task("sep_a", 24, 40, True, seed=0),
        binary_task("sep_b", 24, 60, True, seed=1),
        binary_task("random", 24, 100, False, seed=2),
    )
    result = svm_binary_tasks(unit(x), y, tasks, splits, n_iter=10, seed=0)
    per_task = result["per_task"]
    assert result["n_tasks"] == 3 and result["n_test"] == 200 and result["skipped_tasks"] == []
    assert per_task["sep_a"] >= 0.95 and per_task["sep_b"] >= 0.95
    assert 0.3 <= per_task["random"] <= 0.7
    weighted = (40 * per_task["sep_a"] + 60 * per_task["sep_b"] + 100 * per_task["random"]) / 200
    assert result["pooled_accuracy"] == pytest.approx(weighted)
    assert (
        per_task["random"] < result["pooled_accuracy"] < min(per_task["sep_a"], per_task["sep_b"])
    )


def test_svm_binary_tasks_skips_single_class_and_handles_tiny_tasks():
    x, y, tasks, splits = stack(
        binary_task("ok", 12, 20, True, seed=3),
        binary_task("one_class", 6, 6, True, seed=4),
        binary_task("tiny", 4, 10, True, seed=5),
    )
    y[(tasks == "one_class") & (splits == "train")] = 0
    tiny_train = np.flatnonzero((tasks == "tiny") & (splits == "train"))
    y[tiny_train] = [0, 0, 0, 1]  # one image of class 1: no CV, default SVC
    with pytest.warns(UserWarning) as record:
        result = svm_binary_tasks(x, y, tasks, splits == "train", n_iter=5, seed=0)
    messages = " ".join(str(w.message) for w in record)
    assert "one_class" in messages and "tiny" in messages
    assert result["skipped_tasks"] == ["one_class"]
    assert set(result["per_task"]) == {"ok", "tiny"} and result["n_tasks"] == 2


# ------------------------------------------------- generalized category discovery


def test_hungarian_accuracy_permuted_and_hand_example():
    assert hungarian_accuracy(np.array([0, 0, 1, 1, 2, 2]), np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert hungarian_accuracy(np.array(["a", "a", "b"]), np.array([7, 7, 3])) == 1.0
    # contingency (cluster x class): c0 -> {0: 1, 1: 2}, c1 -> {0: 2, 2: 1}, c2 -> {2: 2}
    # best one-to-one map c1->0, c0->1, c2->2 gets 2 + 2 + 2 = 6 of 8
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([1, 1, 0, 0, 0, 2, 2, 1])
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(0.75)
    # more clusters than classes: only one cluster can claim class 0
    assert hungarian_accuracy(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3])) == 0.5


def gcd_data():
    centres = 5.0 * np.eye(6, 16)
    x, y = blobs(40, centres, noise=0.3, seed=5)
    rng = np.random.default_rng(6)
    known = (y < 3) & (rng.random(len(y)) < 0.5)  # half of classes 0-2 labelled; 3-5 novel
    return x, y, known


def test_gcd_on_separated_blobs():
    x, y, known = gcd_data()
    result = gcd_accuracy(x, y, known, n_clusters=6, seed=0)
    assert result["all"] >= 0.95 and result["old"] >= 0.95 and result["new"] >= 0.95
    unlabelled = ~known
    n_old = np.sum(unlabelled & (y < 3))
    n_new = np.sum(unlabelled & (y >= 3))
    combined = (n_old * result["old"] + n_new * result["new"]) / (n_old + n_new)
    assert result["all"] == pytest.approx(combined)


def test_semi_supervised_kmeans_keeps_labelled_images_in_their_class_cluster():
    x, y, known = gcd_data()
    labels = np.array([f"class_{v}" for v in y])
    assignment = semi_supervised_kmeans(x, labels, known, n_clusters=6, seed=1, max_iter=3)
    assert np.array_equal(assignment[known], y[known])  # class_0..class_2 -> clusters 0..2
    assert set(np.unique(assignment)) <= set(range(6))
    with pytest.raises(ValueError):
        semi_supervised_kmeans(x, labels, known, n_clusters=2)


# --------------------------------------------------------------- continuous traits


def test_ridge_r2_recovers_linear_trait_and_not_noise():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((80, 10))
    y = x @ rng.standard_normal(10) + 0.05 * rng.standard_normal(80)
    assert ridge_regression_r2(x, y, folds=5, seed=0) > 0.9
    assert ridge_regression_r2(x, rng.permutation(y), folds=5, seed=0) <= 0.1

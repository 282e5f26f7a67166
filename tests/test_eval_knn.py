"""kNN accuracy against a NumPy brute force written here."""

import numpy as np

from augself_jax.evaluation import knn


def _brute(train_x, train_y, test_x, k, num_classes):
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    sims = unit(test_x) @ unit(train_x).T
    preds = []
    for row in sims:
        idx = np.argsort(-row)[:k]
        votes = np.zeros(num_classes)
        for i in idx:
            votes[train_y[i]] += np.exp(row[i] / 0.07)
        preds.append(np.argmax(votes))
    return np.array(preds)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(300, 6)).astype(np.float32)
    train_y = rng.integers(0, 4, 300)
    test_x = rng.normal(size=(70, 6)).astype(np.float32)
    test_y = rng.integers(0, 4, 70)
    got = knn.knn_accuracy(train_x, train_y, test_x, test_y, ks=(1, 20), num_classes=4, chunk=32)
    for k in (1, 20):
        expected = 100 * np.mean(_brute(train_x, train_y, test_x, k, 4) == test_y)
        assert abs(got[k] - expected) < 1e-9


def test_knn_is_scale_invariant_and_perfect_on_copies():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    got = knn.knn_accuracy(x, y, 3.0 * x, y, ks=(1,))
    assert got[1] == 100.0

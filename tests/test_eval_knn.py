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


def test_neighbour_search_compiles_to_a_top_k_not_a_sort():
    """The search is one top-k per query row. A program that slices top_k's outputs at
    several k made XLA's CPU backend sort every similarity row instead (60 times slower);
    the compiled program must not hold a sort."""
    import jax.numpy as jnp

    memory = jnp.zeros((500, 8), jnp.float32)
    queries = jnp.zeros((64, 8), jnp.float32)
    program = knn._nearest.lower(memory, queries, k=20).compile().as_text()
    assert " sort(" not in program, program[:2000]


def test_neighbours_are_nearest_first_and_ties_keep_the_lower_index():
    train_x = np.array([[1, 0], [0, 1], [1, 0], [-1, 0]], np.float32)
    sims, idx = knn.nearest_neighbours(train_x, np.array([[2, 0]], np.float32), 3)
    assert idx.tolist() == [[0, 2, 1]]
    np.testing.assert_allclose(sims, [[1, 1, 0]], atol=1e-6)

"""Few-shot episode sampling and the per-episode classifier."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from augself_jax.evaluation import fewshot


def _labels():
    # 8 classes with 30 images, one with 10 (fewer than K + Q), one with exactly K = 5 (dropped)
    counts = [30] * 8 + [10, 5]
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("k_shot", [1, 5])
def test_episode_sampling(k_shot):
    labels = _labels()
    ep = fewshot.sample_episodes(labels, n_way=5, k_shot=k_shot, n_query=16, num_episodes=200,
                                 seed=3)
    assert ep.support.shape == (200, 5 * k_shot) and ep.query.shape == (200, 5 * 16)
    seen = set()
    for e in range(200):
        classes = ep.classes[e]
        assert len(set(classes)) == 5
        seen.update(classes.tolist())
        s = ep.support[e].reshape(5, k_shot)
        q = ep.query[e].reshape(5, 16)
        assert not set(s.ravel()) & set(q.ravel())  # no support/query overlap
        for i, c in enumerate(classes):
            assert np.all(labels[s[i]] == c) and np.all(labels[q[i]] == c)
            assert len(set(s[i])) == k_shot
            if np.sum(labels == c) >= k_shot + 16:
                assert len(set(s[i]) | set(q[i])) == k_shot + 16  # K + Q distinct images
    assert (9 in seen) == (k_shot == 1)  # exactly K = 5 images: dropped for 5-shot
    again = fewshot.sample_episodes(labels, n_way=5, k_shot=k_shot, n_query=16,
                                    num_episodes=200, seed=3)
    np.testing.assert_array_equal(again.support, ep.support)


def test_too_few_classes_is_an_error():
    with pytest.raises(ValueError, match="5-way"):
        fewshot.sample_episodes(np.repeat(np.arange(4), 20), n_way=5, k_shot=1, n_query=16,
                                num_episodes=1, seed=0)


def test_episode_accuracy_matches_sklearn_per_episode():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 25)
    centers = rng.normal(size=(10, 12))
    feats = (centers[labels] + 0.9 * rng.normal(size=(250, 12))).astype(np.float32)
    res = fewshot.fewshot_eval(feats, labels, n_way=5, k_shot=5, n_query=16, num_episodes=12,
                               seed=1, chunk=8)
    ep = fewshot.sample_episodes(labels, n_way=5, k_shot=5, n_query=16, num_episodes=12, seed=1)
    expected = []
    for e in range(12):
        xs = np.concatenate([feats[ep.support[e]], np.ones((25, 1))], 1)  # penalised bias
        xq = np.concatenate([feats[ep.query[e]], np.ones((80, 1))], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=5000)
            clf.fit(xs, np.repeat(np.arange(5), 5))
        expected.append(np.mean(clf.predict(xq) == np.repeat(np.arange(5), 16)))
    np.testing.assert_allclose(res.accuracies, expected, atol=1.5 / 80)
    assert res.mean == pytest.approx(100 * np.mean(expected), abs=0.5)
    assert res.ci95 == pytest.approx(100 * 1.96 * np.std(res.accuracies) / np.sqrt(12))

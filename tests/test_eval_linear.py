"""The L-BFGS linear probe against scikit-learn and against hand-checked properties."""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from augself_jax.evaluation import linear


def _blobs(seed, n, d, k, spread):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _objective64(w, b, x, y, l2):
    """The spec's objective in float64: summed cross-entropy + l2 * ||theta||^2 (bias included)."""
    logits = x.astype(np.float64) @ w + b
    ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]
    return float(np.sum(ce) + l2 * (np.sum(w**2) + np.sum(b**2)))


def _sklearn_same_penalty(x, y, l2):
    """sklearn does not penalise its intercept: a constant column makes the bias a weight.
    Its loss is the mean, so C = 1 / (2 * l2) for our summed objective."""
    xa = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0 / (2.0 * l2), fit_intercept=False, tol=1e-12,
                                 max_iter=20000).fit(xa, y)
    theta = clf.coef_.T  # [d + 1, k]
    return theta[:-1], theta[-1]


@pytest.mark.parametrize("spread", [4.0, 0.3], ids=["separable", "non_separable"])
@pytest.mark.parametrize("l2", [1e-3, 1e-1, 10.0])
def test_fit_matches_sklearn(spread, l2):
    x, y = _blobs(0, 400, 16, 5, spread)
    xt, yt = _blobs(1, 400, 16, 5, spread)
    if spread > 1:  # the training set really is separable
        w_sep, b_sep = _sklearn_same_penalty(x, y, 1e-6)
        assert np.all(np.argmax(x @ w_sep + b_sep, 1) == y)
    fit = linear.fit_logistic(x, y, 5, l2, tol=1e-8)
    w, b = _sklearn_same_penalty(x, y, l2)
    ours = _objective64(np.asarray(fit.params["w"], np.float64),
                        np.asarray(fit.params["b"], np.float64), x, y, l2)
    theirs = _objective64(w, b, x, y, l2)
    assert abs(ours - theirs) / theirs < 1e-4
    assert abs(fit.objective - theirs) / theirs < 1e-4  # our float32 value is accurate too
    acc_ours = linear.accuracy(linear.predict(fit.params, xt), yt)
    acc_theirs = linear.accuracy(np.argmax(xt @ w + b, 1), yt)
    assert abs(acc_ours - acc_theirs) <= 0.5


def test_padding_weights_do_not_change_the_fit():
    x, y = _blobs(2, 101, 8, 3, 0.5)
    plain = linear.fit_logistic(x, y, 3, 0.5, tol=1e-8)
    xp = np.concatenate([x, np.full((7, 8), 50.0, np.float32)])
    yp = np.concatenate([y, np.zeros(7, y.dtype)])
    weights = np.concatenate([np.ones(101), np.zeros(7)]).astype(np.float32)
    padded = linear.fit_logistic(xp, yp, 3, 0.5, weights=weights, tol=1e-8)
    np.testing.assert_allclose(padded.objective, plain.objective, rtol=1e-5)


def test_accuracy_metrics_hand_computed():
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0, 0, 1])
    assert linear.accuracy(pred, y, "top1") == pytest.approx(100 * 5 / 6)
    assert linear.accuracy(pred, y, "class_avg") == pytest.approx(100 * (1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="metric"):
        linear.accuracy(pred, y, "top5")


def test_grid_is_the_reference_sweep():
    assert len(linear.L2_GRID) == 45
    assert linear.L2_GRID[0] == pytest.approx(1e-6) and linear.L2_GRID[-1] == pytest.approx(1e5)
    assert np.allclose(np.diff(np.log10(linear.L2_GRID)), 11 / 44)


def test_linear_eval_selects_on_val_and_refits_sharded():
    import jax

    x, y = _blobs(3, 300, 10, 4, 0.6)
    tr, va, te = (x[:150], y[:150]), (x[150:200], y[150:200]), (x[200:], y[200:])
    grid = (1e-2, 1.0, 1e2, 1e4)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    res = linear.linear_eval(tr, va, te, 4, l2_grid=grid, tol=1e-7, mesh=mesh)
    vals = [v for _, v in res.val_curve]
    assert res.val == max(vals) and res.l2 == grid[vals.index(max(vals))]
    # the refit is the train+val optimum at the chosen w, whatever the warm start
    ref = linear.fit_logistic(np.concatenate([tr[0], va[0]]), np.concatenate([tr[1], va[1]]), 4,
                              res.l2, tol=1e-7)
    assert res.test == pytest.approx(linear.accuracy(linear.predict(ref.params, te[0]), te[1]),
                                     abs=0.5)


def test_sweep_reports_progress_after_every_fit_and_the_probe_logs_a_few_lines():
    from augself_jax.evaluation import common
    from configs.common import base_config

    x, y = _blobs(4, 240, 6, 3, 0.8)
    tr, va, te = (x[:120], y[:120]), (x[120:180], y[120:180]), (x[180:], y[180:])
    grid = tuple(np.logspace(-3, 3, 9))
    seen = []
    res = linear.linear_eval(tr, va, te, 3, l2_grid=grid, tol=1e-6, progress=seen.append)
    assert [p.done for p in seen] == list(range(1, 11)) and {p.total for p in seen} == {10}
    assert [(p.l2, p.value) for p in seen[:-1]] == [(pytest.approx(w), v)
                                                     for w, v in res.val_curve]
    refit = seen[-1]
    assert refit.value is None and refit.l2 == res.l2 and refit.eta_s == 0.0
    assert refit.iterations == res.iterations
    assert res.sweep_iterations == sum(p.iterations for p in seen) > 0
    elapsed = [p.elapsed_s for p in seen]
    assert elapsed == sorted(elapsed)
    # ETA: the mean time per fit so far times the fits left.
    p = seen[3]
    assert p.eta_s == pytest.approx(p.elapsed_s / 4 * 6)

    # The protocol, as evaluate.py builds it: its log gets one line per few fits.
    config = base_config("shapes")
    config.eval.linear.update(l2_min=1e-3, l2_max=1e3, l2_num=19)
    lines = []
    probe = linear.LinearProbe.from_config(config, common.Context(log=lines.append))
    feats = common.Features("toy", ("label",), {
        "train": {"features": tr[0], "label": tr[1]}, "val": {"features": va[0], "label": va[1]},
        "test": {"features": te[0], "label": te[1]}})
    probe.run(feats)
    assert [line.split(" (")[0] for line in lines] == [
        f"linear toy: fit {k}/20" for k in (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
    assert "ETA" in lines[0] and "refit" in lines[-1] and lines[-1].endswith("ETA 0 s")


def test_a_short_warm_up_compiles_everything_the_sweep_runs():
    """w, max_iter and tol are traced and a cold start is placed as a warm one: after one
    compile per shape (train, train+val) no fit of a sweep compiles again (three did)."""
    x, y = _blobs(5, 180, 7, 3, 0.8)
    tr, va, te = (x[:100], y[:100]), (x[100:140], y[100:140]), (x[140:], y[140:])
    linear.linear_eval(tr, va, te, 3, l2_grid=(1e5,), tol=1e-3, max_iter=5)
    compiled = linear._fit_jit_traced._cache_size()
    res = linear.linear_eval(tr, va, te, 3, l2_grid=(1e-3, 1.0, 1e3), tol=1e-7, max_iter=500)
    assert linear._fit_jit_traced._cache_size() == compiled
    assert res.sweep_iterations > 3 * 5  # the real caps and tolerance, not the warm-up's

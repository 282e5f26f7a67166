"""Every loss against a plain NumPy implementation of its formula, on random inputs."""

import numpy as np
import pytest

from augself_jax.aware.augself import head_loss
from augself_jax.methods.barlow import barlow_loss
from augself_jax.methods.byol import byol_loss
from augself_jax.methods.core import cosine_momentum, l2_normalize
from augself_jax.methods.moco import info_nce
from augself_jax.methods.simclr import nt_xent
from augself_jax.methods.simsiam import simsiam_loss
from augself_jax.methods.supervised import cross_entropy

RNG = np.random.default_rng(0)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logsumexp(a):
    m = a.max(-1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(-1, keepdims=True)))[..., 0]


def test_nt_xent():
    n, t = 6, 0.2
    z1, z2 = RNG.normal(size=(n, 5)), RNG.normal(size=(n, 5))
    z = _unit(np.concatenate([z1, z2]))
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = np.array([z[i] @ z[k] / t for k in range(2 * n) if k != i])
        total += -(z[i] @ z[j] / t) + np.log(np.exp(sims).sum())
    np.testing.assert_allclose(nt_xent(z1, z2, t), total / (2 * n), rtol=1e-5)


def test_info_nce():
    n, k, t = 5, 7, 0.2
    q, key, queue = _unit(RNG.normal(size=(n, 4))), _unit(RNG.normal(size=(n, 4))), \
        _unit(RNG.normal(size=(k, 4)))
    expected = np.mean([-(q[i] @ key[i]) / t + np.log(np.exp(q[i] @ key[i] / t)
                                                       + np.exp(queue @ q[i] / t).sum())
                        for i in range(n)])
    np.testing.assert_allclose(info_nce(q, key, queue, t), expected, rtol=1e-5)


def test_byol_loss_and_cosine_momentum():
    p1, p2, t1, t2 = (RNG.normal(size=(6, 4)) for _ in range(4))
    cos = lambda a, b: np.sum(_unit(a) * _unit(b), -1)
    expected = np.mean(2 - 2 * cos(p1, t2)) + np.mean(2 - 2 * cos(p2, t1))
    np.testing.assert_allclose(byol_loss(p1, p2, t1, t2), expected, rtol=1e-5)
    for step in (0, 3, 10):
        want = 1 - (1 - 0.996) * (np.cos(np.pi * step / 10) + 1) / 2
        np.testing.assert_allclose(cosine_momentum(step, 10, 0.996), want, rtol=1e-6)
    assert float(cosine_momentum(0, 10, 0.996)) == pytest.approx(0.996)
    assert float(cosine_momentum(10, 10, 0.996)) == pytest.approx(1.0)


def test_simsiam_loss():
    p1, p2, z1, z2 = (RNG.normal(size=(6, 4)) for _ in range(4))
    cos = lambda a, b: np.sum(_unit(a) * _unit(b), -1)
    expected = -0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean())
    np.testing.assert_allclose(simsiam_loss(p1, p2, z1, z2), expected, rtol=1e-5)


def test_barlow_loss():
    n, d, lam = 16, 5, 0.0051
    z1, z2 = RNG.normal(size=(n, d)), RNG.normal(size=(n, d))
    bn = lambda z: (z - z.mean(0)) / z.std(0)
    a, b = bn(z1), bn(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = np.sum(a[:, i] * b[:, j]) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    np.testing.assert_allclose(barlow_loss(a, b, lam), total, rtol=1e-4)


def test_cross_entropy():
    logits, labels = RNG.normal(size=(6, 5)), RNG.integers(0, 5, 6)
    expected = np.mean(_logsumexp(logits) - logits[np.arange(6), labels])
    np.testing.assert_allclose(cross_entropy(logits, labels), expected, rtol=1e-5)


def test_augself_head_losses():
    p, t = RNG.normal(size=(8, 4)), RNG.uniform(-0.5, 0.5, size=(8, 4))
    np.testing.assert_allclose(head_loss("mse", p, t), np.mean((np.tanh(p) - t) ** 2), rtol=1e-5)
    logit, y = RNG.normal(size=(8, 1)), RNG.integers(0, 2, (8, 1)).astype(float)
    s = 1 / (1 + np.exp(-logit))
    bce = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    np.testing.assert_allclose(head_loss("bce", logit, y), bce, rtol=1e-5)
    cls = RNG.integers(0, 4, 8)
    ce = np.mean(_logsumexp(p) - p[np.arange(8), cls])
    np.testing.assert_allclose(head_loss("ce", p, cls), ce, rtol=1e-5)


def test_l2_normalize_has_a_finite_gradient_at_zero():
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((2, 3)).at[1].set(jnp.array([3.0, 4.0, 0.0]))
    np.testing.assert_allclose(l2_normalize(x)[1], [0.6, 0.8, 0.0], rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(l2_normalize(v) * jnp.arange(3.0)))(x)
    assert np.all(np.isfinite(np.asarray(grad)))

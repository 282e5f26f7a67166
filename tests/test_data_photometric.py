"""Device-side photometric ops (the registry's DEVICE entries) against plain NumPy /
colorsys references written here."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from augself_jax.augs import StaticSettings, blur, color, gray, solarize
from augself_jax.data import photometric as ph

ATOL = 3e-5


def _images(n=3, size=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, size, size, 3)).astype(np.float32)
    x[0, 0, 0] = (0.5, 0.5, 0.5)  # gray pixel: hue undefined, must survive
    x[0, 0, 1] = (1.0, 1.0, 1.0)
    x[0, 0, 2] = (0.0, 0.0, 0.0)
    return x


def _np_hsv_map(x, fn):
    """Apply fn(h, s, v) -> (h, s, v) per pixel through colorsys."""
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*map(float, x[idx]))
        out[idx] = colorsys.hsv_to_rgb(*fn(h, s, v))
    return out


def np_brightness(x, f):
    return np.clip(x * f, 0, 1)


def np_contrast(x, f):
    mean = (x @ np.array([0.2989, 0.587, 0.114])).mean()
    return np.clip(f * x + (1 - f) * mean, 0, 1)


def np_saturation(x, f):
    return _np_hsv_map(x, lambda h, s, v: (h, min(max(s * f, 0.0), 1.0), v))


def np_hue(x, d):
    return _np_hsv_map(x, lambda h, s, v: ((h + d) % 1.0, s, v))


def np_gray(x):
    g = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return np.repeat(g[..., None], 3, -1)


def np_blur(x, sigma, k):
    r = k // 2
    t = np.arange(-r, r + 1)
    w = np.exp(-(t**2) / (2 * sigma**2))
    w /= w.sum()
    p = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(x, dtype=np.float64)
    h, wd = x.shape[:2]
    for i in range(h):
        for j in range(wd):
            out[i, j] = np.einsum("a,b,abc->c", w, w, p[i:i + k, j:j + k])
    return out


def np_solarize(x, t):
    return np.where(x >= t, 1 - x, x)


NP_OPS = (np_brightness, np_contrast, np_saturation, np_hue)


def test_hsv_round_trip_and_hue_rotation():
    x = _images()
    zero = jnp.zeros(len(x))
    np.testing.assert_allclose(color.adjust_hue(x, zero), x, atol=ATOL)
    np.testing.assert_allclose(color.adjust_saturation(x, zero + 1), x, atol=ATOL)
    shifts = np.array([0.1, -0.07, 0.5], np.float32)
    got = color.adjust_hue(x, shifts)
    for i in range(len(x)):
        np.testing.assert_allclose(got[i], np_hue(x[i], float(shifts[i])), atol=ATOL)
    # A full turn is the identity.
    np.testing.assert_allclose(color.adjust_hue(x, zero + 1.0), x, atol=ATOL)


@pytest.mark.parametrize("op", range(4))
def test_each_jitter_op_matches_numpy(op):
    x = _images()
    factors = np.array([0.6, 1.0, 1.4], np.float32) if op < 3 else np.array([-0.1, 0.0, 0.1])
    fn = (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation,
          color.adjust_hue)[op]
    got = np.asarray(fn(jnp.asarray(x), jnp.asarray(factors, jnp.float32)))
    for i in range(len(x)):
        np.testing.assert_allclose(got[i], NP_OPS[op](x[i], float(factors[i])), atol=ATOL)


def test_contrast_blends_with_the_mean_gray():
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[0, 0, 0] = (1, 0, 0)  # gray 0.2989 in one of four pixels
    got = color.adjust_contrast(x, jnp.array([0.0]))  # factor 0: the mean gray everywhere
    np.testing.assert_allclose(got, np.full_like(x, 0.2989 / 4), atol=1e-6)


def test_grayscale_weights_and_only_where_applied():
    x = _images()
    got = np.asarray(gray.grayscale(x, jnp.array([1.0, 0.0, 1.0])))
    np.testing.assert_allclose(got[0], np_gray(x[0]), atol=1e-6)
    np.testing.assert_array_equal(got[1], x[1])
    pure = np.zeros((1, 1, 1, 3), np.float32)
    pure[..., 1] = 1.0
    assert float(gray.grayscale(pure, jnp.ones(1))[0, 0, 0, 0]) == pytest.approx(0.587)


def test_blur_reflect_padding_matches_numpy():
    x = _images(n=2, size=12)
    sig = np.array([1.3, 0.0], np.float32)
    got = np.asarray(blur.gaussian_blur(jnp.asarray(x), jnp.asarray(sig), kernel_size=9))
    np.testing.assert_allclose(got[0], np_blur(x[0].astype(np.float64), 1.3, 9), atol=ATOL)
    np.testing.assert_array_equal(got[1], x[1])  # sigma 0: not applied
    # Reflect padding keeps a constant image constant (zero padding would darken borders).
    const = np.full((1, 12, 12, 3), 0.7, np.float32)
    np.testing.assert_allclose(blur.gaussian_blur(const, jnp.array([2.0]), kernel_size=9), const,
                               atol=1e-6)


def test_solarize_threshold_and_not_applied():
    x = _images()
    got = np.asarray(solarize.solarize(x, jnp.array([0.5, 1.0, 0.0])))
    np.testing.assert_allclose(got[0], np_solarize(x[0], 0.5), atol=1e-7)
    np.testing.assert_array_equal(got[1], x[1])  # threshold 1 = not applied, even at 1.0
    np.testing.assert_allclose(got[2], 1 - x[2], atol=1e-7)


def _np_chain(x, rec, kernel):
    """The whole photometric chain in NumPy for one example (docs/METHOD.md section 1):
    jitter, solarize (right after it, as the reference's stl10_sol), grayscale, blur."""
    before = x.astype(np.float64)
    y = before
    if rec["color_applied"]:
        for op in rec["color_order"]:
            y = NP_OPS[op](y, float(rec["color"][op]))
    shift = before.mean((0, 1)) - y.mean((0, 1)) if rec["color_applied"] else np.zeros(3)
    if rec["solarize"] < 1:
        y = np_solarize(y, float(rec["solarize"]))
    if rec["gray"]:
        y = np_gray(y)
    if rec["blur"] > 0:
        y = np_blur(y, float(rec["blur"]), kernel)
    return y, shift


def test_apply_photometric_follows_the_recorded_order_and_fills_mean_shift():
    rng = np.random.default_rng(3)
    n, size, kernel = 6, 10, 5
    views = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    params = {
        "color": np.stack([rng.uniform(0.6, 1.4, n), rng.uniform(0.6, 1.4, n),
                           rng.uniform(0.6, 1.4, n), rng.uniform(-0.1, 0.1, n)], 1),
        "color_order": np.stack([rng.permutation(4) for _ in range(n)]).astype(np.int32),
        "color_applied": np.array([1, 1, 1, 1, 0, 1], np.float32),
        "gray": np.array([0, 1, 0, 1, 0, 0], np.float32),
        "blur": np.array([0, 0, 1.2, 0, 0.5, 0], np.float32),
        "solarize": np.array([1, 1, 1, 0.4, 1, 0.7], np.float32),
        "color_mean_shift": np.zeros((n, 3), np.float32),
        "crop": np.zeros((n, 4), np.float32), "flip": np.zeros(n, np.float32),
        "rotation": np.zeros(n, np.int32),
    }
    params["color"] = params["color"].astype(np.float32)
    fn = jax.jit(lambda v, p: ph.apply_photometric(v, p, StaticSettings.of(blur_kernel=kernel)))
    out, rec = fn(views, params)
    assert out.dtype == jnp.float32 and out.shape == views.shape
    for i in range(n):
        r = {k: np.asarray(v[i]) for k, v in params.items()}
        want, shift = _np_chain(views[i] / 255.0, r, kernel)
        np.testing.assert_allclose(out[i], want, atol=1e-4, err_msg=f"example {i}")
        np.testing.assert_allclose(rec["color_mean_shift"][i], shift, atol=1e-5)
    assert float(jnp.abs(rec["color_mean_shift"][4]).max()) == 0.0
    # Example 3 is solarized and grayed: the other order (gray first) is another image.
    jittered = np.asarray(out[3])
    r3 = {k: np.asarray(v[3]) for k, v in params.items()}
    y = views[3] / 255.0
    for op in r3["color_order"]:
        y = NP_OPS[op](y, float(r3["color"][op]))
    assert np.abs(np_solarize(np_gray(y), float(r3["solarize"])) - jittered).max() > 1e-2
    # The order matters: the same factors in another order give another image.
    swapped = dict(params, color_order=params["color_order"][:, ::-1].copy())
    assert float(jnp.abs(fn(views, swapped)[0][:4] - out[:4]).max()) > 1e-3


def test_normalize():
    x = np.full((1, 2, 2, 3), 0.5, np.float32)
    got = ph.normalize(x, (0.5, 0.25, 0.0), (1.0, 0.5, 2.0))
    np.testing.assert_allclose(got[0, 0, 0], [0.0, 0.5, 0.25])


def test_jitter_equals_the_four_ops_in_each_of_the_24_orders():
    """The two-evaluations-per-position jitter is the named op at each position (to float
    rounding: jit fuses the same formulas differently)."""
    import itertools

    orders = np.array(list(itertools.permutations(range(4))), np.int32)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (24, 6, 6, 3)).astype(np.float32)
    factors = np.stack([rng.uniform(0.2, 1.8, 24), rng.uniform(0.2, 1.8, 24),
                        rng.uniform(0.2, 1.8, 24), rng.uniform(-0.5, 0.5, 24)], 1)
    factors = factors.astype(np.float32)
    got = np.asarray(jax.jit(color.color_jitter)(x, factors, orders, np.ones(24, np.float32)))
    ops = (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation,
           color.adjust_hue)
    want = x  # each position: every op on the whole batch, keep the one each order names
    for position in range(4):
        candidates = [np.asarray(op(want, factors[:, k])) for k, op in enumerate(ops)]
        pick = orders[:, position][:, None, None, None]
        want = np.select([pick == k for k in range(4)], candidates)
    for i in range(24):
        np.testing.assert_allclose(got[i], want[i], atol=1e-5, err_msg=str(orders[i]))
    off = np.asarray(color.color_jitter(x, factors, orders, np.zeros(24, np.float32)))
    np.testing.assert_array_equal(off, x)  # not applied: untouched


# Today's chain against the chain before it was made cheaper in bytes accessed (issue 25:
# blur as matrix products, jitter on planes, one-select solarize), kept in
# benchmarks/photometric_before.py. Stated tolerance: float32, 1e-5 on pixels in [0, 1]
# and 1e-6 on `color_mean_shift` (float rounding: the formulas are the same, the order of
# the sums is not).
CHAIN_ATOL, SHIFT_ATOL = 1e-5, 1e-6


def _before():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import photometric_before

    return photometric_before


def _random_record(rng, n):
    return {
        "color": np.stack([rng.uniform(0.2, 1.8, n), rng.uniform(0.2, 1.8, n),
                           rng.uniform(0.2, 1.8, n), rng.uniform(-0.5, 0.5, n)],
                          1).astype(np.float32),
        "color_order": np.argsort(rng.uniform(size=(n, 4)), -1).astype(np.int32),
        "color_applied": (rng.uniform(size=n) < 0.8).astype(np.float32),
        "gray": (rng.uniform(size=n) < 0.3).astype(np.float32),
        "blur": np.where(rng.uniform(size=n) < 0.6, rng.uniform(0.1, 2.0, n),
                         0.0).astype(np.float32),
        "solarize": np.where(rng.uniform(size=n) < 0.3, rng.uniform(size=n),
                             1.0).astype(np.float32),
        "color_mean_shift": np.zeros((n, 3), np.float32),
        "crop": rng.uniform(size=(n, 4)).astype(np.float32),
        "flip": (rng.uniform(size=n) < 0.5).astype(np.float32),
        "rotation": rng.integers(0, 4, n).astype(np.int32),
    }


@pytest.mark.parametrize("size,kernel", [(24, 23), (20, 9)])
def test_chain_matches_the_chain_before_within_the_stated_tolerance(size, kernel):
    rng = np.random.default_rng(5)
    n = 16
    views = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    params = _random_record(rng, n)
    before = _before()
    old_x, old_rec = jax.jit(lambda v, p: before.apply_photometric(v, p, blur_kernel=kernel))(
        views, params)
    settings = StaticSettings.of(blur_kernel=kernel)
    new_x, new_rec = jax.jit(lambda v, p: ph.apply_photometric(v, p, settings))(views, params)
    np.testing.assert_allclose(new_x, old_x, atol=CHAIN_ATOL)
    np.testing.assert_allclose(new_rec["color_mean_shift"], old_rec["color_mean_shift"],
                               atol=SHIFT_ATOL)
    assert float(np.abs(np.asarray(old_rec["color_mean_shift"])).max()) > 1e-3  # not vacuous
    for key, value in params.items():  # the shipped record passes through bit for bit
        if key != "color_mean_shift":
            np.testing.assert_array_equal(new_rec[key], value, err_msg=key)


def test_blur_matrices_fold_the_reflect_padding_in():
    sigma = jnp.array([0.7, 2.0, 0.0])
    m = np.asarray(blur.reflect_blur_matrices(sigma, 6, 5))
    np.testing.assert_allclose(m.sum(axis=2), 1.0, atol=1e-6)  # each output's weights
    np.testing.assert_array_equal(m[2], np.eye(6))  # sigma 0: the identity
    # Row 0 by hand: taps at -2, -1, 0, 1, 2 land on pixels 2, 1, 0, 1, 2 (reflect).
    t = np.exp(-np.arange(-2, 3) ** 2 / (2 * 0.7**2))
    t /= t.sum()
    np.testing.assert_allclose(m[0, 0, :3], [t[2], t[1] + t[3], t[0] + t[4]], atol=1e-6)
    np.testing.assert_array_equal(m[0, 0, 3:], 0.0)


def test_blur_of_a_non_square_view_matches_numpy():
    x = _images(n=2, size=12)[:, :, :9]  # 12 x 9
    sig = np.array([1.1, 1.7], np.float32)
    got = np.asarray(blur.gaussian_blur(jnp.asarray(x), jnp.asarray(sig), kernel_size=7))
    for i in range(2):
        np.testing.assert_allclose(got[i], np_blur(x[i].astype(np.float64), float(sig[i]), 7),
                                   atol=ATOL)

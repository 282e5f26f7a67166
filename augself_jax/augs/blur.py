"""Gaussian blur with reflect padding, on the device."""

import jax
import jax.numpy as jnp

from augself_jax.augs.core import (
    DEVICE,
    Augmentation,
    AugSelfTarget,
    Descriptor,
    Field,
    check_pair,
    check_probability,
    register,
)
from augself_jax.errors import ConfigError


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = u["blur_applied"] < aug.blur_prob
    s0, s1 = aug.blur_sigma
    return {"blur": tf.where(on, s0 + u["blur"] * (s1 - s0), 0.0)}


def gaussian_kernels(sigma: jax.Array, kernel_size: int) -> jax.Array:
    """Normalised 1-D Gaussian weights [B, kernel_size] for per-example sigmas."""
    radius = kernel_size // 2
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.where(sigma > 0, sigma, 1.0)[:, None]
    w = jnp.exp(-(t[None] ** 2) / (2.0 * safe**2))
    return w / jnp.sum(w, axis=1, keepdims=True)


def gaussian_blur(x: jax.Array, sigma: jax.Array, *, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur with reflect padding where sigma > 0.

    Written here rather than pix.gaussian_blur, which pads with zeros (darkening the
    border) and takes one sigma for the whole batch.
    """
    radius = kernel_size // 2
    w = gaussian_kernels(sigma, kernel_size)
    h_img, w_img = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
    rows = sum(w[:, t, None, None, None] * xp[:, t:t + h_img] for t in range(kernel_size))
    rp = jnp.pad(rows, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = sum(w[:, t, None, None, None] * rp[:, :, t:t + w_img] for t in range(kernel_size))
    out = jnp.clip(out, 0.0, 1.0)  # the weights sum to 1 only up to rounding
    return jnp.where(sigma[:, None, None, None] > 0, out, x)


def blur_value(params: dict, ranges, reference: bool) -> jax.Array:
    """Sigma [B]; divided by the max sigma (fits tanh) unless `reference` (raw, as the
    reference code)."""
    sigma = jnp.asarray(params["blur"], jnp.float32)
    return sigma if reference else sigma / ranges.blur_max


def _check(aug, image_size):
    check_probability(aug, "blur_prob")
    check_pair(aug, "blur_sigma", 1e-6, float("inf"))
    if aug.blur_kernel < 1 or aug.blur_kernel % 2 == 0:
        raise ConfigError(f"aug.blur_kernel: {aug.blur_kernel} must be a positive odd integer")
    if aug.blur_kernel // 2 >= image_size:
        raise ConfigError(f"aug.blur_kernel: {aug.blur_kernel} is too large for reflect "
                          f"padding of {image_size} px views")


BLUR = register(Augmentation(
    name="blur", stage=DEVICE, chain=5,
    # Kernel 9 at 96 px; configs/common.py sets the reference's 23 at 224 px.
    defaults={"blur_prob": 0.5, "blur_sigma": (0.1, 2.0), "blur_kernel": 9},
    draws=(("blur_applied", 1), ("blur", 1)),
    record=(Field("blur", (), "float32", (0.0,)),),
    sample=_sample,
    op=lambda x, p, *, blur_kernel, **_: (gaussian_blur(x, p["blur"], kernel_size=blur_kernel),
                                          {}),
    prob_field="blur_prob", check=_check,
    caption=lambda rec, i: f"blur {rec['blur'][i]:.2f}",
    augself=AugSelfTarget(1, "mse", lambda pa, pb, ranges, reference: (
        blur_value(pa, ranges, reference) - blur_value(pb, ranges, reference))[..., None]),
    cassle=(Descriptor("blur", 1,
                       lambda p, ranges, reference: blur_value(p, ranges, reference)[..., None]),),
))

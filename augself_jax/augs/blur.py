"""Gaussian blur with reflect padding, on the device."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from augself_jax.augs.registry import (
    DEVICE,
    Augmentation,
    AugSelfTarget,
    Descriptor,
    Field,
    check_pair,
    check_probability,
    switched_on,
)
from augself_jax.errors import ConfigError


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = switched_on(u, "blur_applied", aug.blur_prob)
    s0, s1 = aug.blur_sigma
    return {"blur": tf.where(on, s0 + u["blur"] * (s1 - s0), 0.0)}


@dataclasses.dataclass(frozen=True)
class BlurSettings:
    """The blur's static settings: the kernel size its op uses and the max sigma its AugSelf
    target and CASSLE descriptor divide by (the defaults are the reference's at 96 px)."""

    kernel: int = 9
    max_sigma: float = 2.0

    @classmethod
    def from_aug(cls, aug) -> "BlurSettings":
        return cls(kernel=int(aug.blur_kernel), max_sigma=float(aug.blur_sigma[1]))


def gaussian_kernels(sigma: jax.Array, kernel_size: int) -> jax.Array:
    """Normalised 1-D Gaussian weights [B, kernel_size] for per-example sigmas."""
    radius = kernel_size // 2
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.where(sigma > 0, sigma, 1.0)[:, None]
    w = jnp.exp(-(t[None] ** 2) / (2.0 * safe**2))
    return w / jnp.sum(w, axis=1, keepdims=True)


def reflect_blur_matrices(sigma: jax.Array, size: int, kernel_size: int) -> jax.Array:
    """[B, size, size]: row i holds the weights of output pixel i on each input pixel of
    one image axis, the reflect padding folded in; the identity where sigma is 0.

    A reflected tap adds its weight to the pixel it mirrors, so `A @ column` is the
    padded convolution without a padded copy of the image.
    """
    w = gaussian_kernels(sigma, kernel_size)
    # The identity where sigma is 0: no NaN or Inf can leak in from an unused kernel.
    w = jnp.where((sigma > 0)[:, None], w, jax.nn.one_hot(kernel_size // 2, kernel_size))
    radius = kernel_size // 2
    source = np.arange(size)[:, None] + np.arange(kernel_size)[None] - radius
    source = np.abs(source)
    source = np.where(source > size - 1, 2 * (size - 1) - source, source)  # [size, taps]
    taps = jnp.asarray(source, jnp.int32)[:, :, None] == lax.iota(jnp.int32, size)
    return jnp.einsum("bt,itj->bij", w, taps.astype(jnp.float32),
                      precision=lax.Precision.HIGHEST)


def gaussian_blur(x: jax.Array, sigma: jax.Array, *, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur with reflect padding where sigma > 0 (x [B, H, W, C]).

    Written here rather than pix.gaussian_blur, which pads with zeros (darkening the
    border) and takes one sigma for the whole batch. Each pass is one batched matrix
    product with the reflect-padded kernel as a banded [size, size] matrix per example
    (`reflect_blur_matrices`): the image is read once and written once per pass, in its
    own layout, where the kernel_size shifted copies of a padded image were read before
    (bytes accessed bound this op on an accelerator, not FLOPs). Where sigma is 0 x is
    returned as it is. The products run at full float32 precision (no TF32 on an
    accelerator): bfloat16 inputs were tried and moved the bfloat16 step's loss 8x further
    from float32's (tests/test_bf16.py).
    """
    if x.shape[1] != x.shape[2]:
        rows_m = reflect_blur_matrices(sigma, x.shape[1], kernel_size)
        cols_m = reflect_blur_matrices(sigma, x.shape[2], kernel_size)
    else:  # square views: one matrix for both axes
        rows_m = cols_m = reflect_blur_matrices(sigma, x.shape[1], kernel_size)
    full = lax.Precision.HIGHEST
    rows = jnp.einsum("bij,bjwc->biwc", rows_m, x, precision=full)
    out = jnp.einsum("bij,bhjc->bhic", cols_m, rows, precision=full)
    out = jnp.clip(out, 0.0, 1.0)  # the weights sum to 1 only up to rounding
    return jnp.where(sigma[:, None, None, None] > 0, out, x)


def blur_value(params: dict, settings: BlurSettings, reference: bool) -> jax.Array:
    """Sigma [B]; divided by the max sigma (fits tanh) unless `reference` (raw, as the
    reference code)."""
    sigma = jnp.asarray(params["blur"], jnp.float32)
    return sigma if reference else sigma / settings.max_sigma


def _check(aug, image_size):
    check_probability(aug, "blur_prob")
    check_pair(aug, "blur_sigma", 1e-6, float("inf"))
    if aug.blur_kernel < 1 or aug.blur_kernel % 2 == 0:
        raise ConfigError(f"aug.blur_kernel: {aug.blur_kernel} must be a positive odd integer")
    if aug.blur_kernel // 2 >= image_size:
        raise ConfigError(f"aug.blur_kernel: {aug.blur_kernel} is too large for reflect "
                          f"padding of {image_size} px views")


AUGMENTATION = Augmentation(
    name="blur", stage=DEVICE, chain=5,
    # Kernel 9 at 96 px; configs/common.py sets the reference's 23 at 224 px.
    defaults={"blur_prob": 0.5, "blur_sigma": (0.1, 2.0), "blur_kernel": 9},
    draws=(("blur_applied", 1), ("blur", 1)),
    record=(Field("blur", (), "float32", (0.0,)),),
    sample=_sample,
    op=lambda x, p, *, settings: (gaussian_blur(x, p["blur"], kernel_size=settings.kernel), {}),
    settings=BlurSettings.from_aug, prob_field="blur_prob", check=_check,
    caption=lambda rec, i: f"blur {rec['blur'][i]:.2f}",
    augself=AugSelfTarget(1, "mse", lambda pa, pb, settings, reference: (
        blur_value(pa, settings, reference) - blur_value(pb, settings, reference))[..., None]),
    cassle=(Descriptor("blur", 1, lambda p, settings, reference:
                       blur_value(p, settings, reference)[..., None]),),
    draw_order=4,
)

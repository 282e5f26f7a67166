"""The device photometric chain as it was before it was made cheaper in bytes accessed
(issue 25): the blur as kernel_size shifted copies of a reflect-padded image, the jitter
splitting and stacking channels at each of its four positions, solarize as two selects.

Kept for two uses: `bench_cost.py` lowers it beside today's chain to show bytes accessed
before and after, and the tests hold today's chain to it within a stated tolerance.
Grayscale and the normalisation did not change and are today's.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

from augself_jax.augs.color import CONTRAST_GRAY
from augself_jax.augs.gray import grayscale


def _per_example(v: jax.Array) -> jax.Array:
    return v[:, None, None, None]


def gaussian_blur(x: jax.Array, sigma: jax.Array, *, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur, reflect padding, as a sum of shifted copies per pass."""
    radius = kernel_size // 2
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.where(sigma > 0, sigma, 1.0)[:, None]
    w = jnp.exp(-(t[None] ** 2) / (2.0 * safe**2))
    w = w / jnp.sum(w, axis=1, keepdims=True)
    h_img, w_img = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
    rows = sum(w[:, k, None, None, None] * xp[:, k:k + h_img] for k in range(kernel_size))
    rp = jnp.pad(rows, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = sum(w[:, k, None, None, None] * rp[:, :, k:k + w_img] for k in range(kernel_size))
    return jnp.where(_per_example(sigma) > 0, jnp.clip(out, 0.0, 1.0), x)


def color_jitter(x: jax.Array, color: jax.Array, order: jax.Array,
                 applied: jax.Array) -> jax.Array:
    """Two evaluations per order position on [B, H, W, 3] (dm-pix's HSV round trip)."""
    out = x
    for position in range(4):
        op = order[:, position]
        f = jnp.take_along_axis(color, op[:, None], axis=1)[:, 0]
        gray = jnp.tensordot(out, jnp.asarray(CONTRAST_GRAY, out.dtype), axes=([-1], [0]))
        shift = jnp.where(op == 1, (1.0 - f) * jnp.mean(gray, axis=(1, 2)), 0.0)
        affine = jnp.clip(_per_example(f) * out + _per_example(shift), 0.0, 1.0)
        hsv = pix.rgb_to_hsv(out)
        scale = _per_example(jnp.where(op == 2, f, 1.0))
        delta = _per_example(jnp.where(op == 3, f, 0.0))
        rotated = pix.hsv_to_rgb(jnp.stack([(hsv[..., 0] + delta[..., 0]) % 1.0,
                                            jnp.clip(hsv[..., 1] * scale[..., 0], 0.0, 1.0),
                                            hsv[..., 2]], axis=-1))
        out = jnp.where(_per_example(op < 2), affine, rotated)
    return jnp.where(_per_example(applied > 0), out, x)


def solarize(x: jax.Array, threshold: jax.Array) -> jax.Array:
    t = _per_example(threshold)
    return jnp.where(t < 1.0, pix.solarize(x, t), x)


def apply_photometric(views_uint8: jax.Array, params: dict, *,
                      blur_kernel: int) -> tuple[jax.Array, dict]:
    """The chain in its order (jitter, solarize, grayscale, blur) -> (views in [0, 1],
    records with `color_mean_shift` filled)."""
    x = views_uint8.astype(jnp.float32) / 255.0
    jittered = color_jitter(x, params["color"], params["color_order"], params["color_applied"])
    applied = (params["color_applied"] > 0)[:, None]
    shift = jnp.where(applied, jnp.mean(x, axis=(1, 2)) - jnp.mean(jittered, axis=(1, 2)), 0.0)
    y = solarize(jittered, params["solarize"])
    y = grayscale(y, params["gray"])
    y = gaussian_blur(y, params["blur"], kernel_size=blur_kernel)
    return y, dict(params, color_mean_shift=shift.astype(jnp.float32))


def prepare_views(config, batch: dict) -> dict:
    """train/step.py's prepare_views with this chain: both views, normalised."""
    from augself_jax.train.step import prepare_views as prepare_with

    return prepare_with(config, batch, photometric=lambda views, params, settings:
                        apply_photometric(views, params, blur_kernel=settings["blur"].kernel))

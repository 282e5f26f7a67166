"""Device-side half of the two-view chain: the photometric ops as pure JAX functions of
(pixels, recorded parameters), vectorised over the batch and jit-able (METHOD.md section 1).

Chain: colour jitter (four ops in the recorded per-example order) -> grayscale ->
Gaussian blur -> solarize. Every op takes images in [0, 1], shape [B, H, W, 3].
"""

import dm_pix as pix
import jax
import jax.numpy as jnp

# Contrast blends with this gray (the reference's kornia / torchvision weights) ...
CONTRAST_GRAY = (0.2989, 0.587, 0.114)
# ... while grayscale conversion uses these (METHOD.md); dm-pix's rec601 is 0.2989, so
# both are written here rather than taken from pix.rgb_to_grayscale.
GRAYSCALE_LUMA = (0.299, 0.587, 0.114)


def _per_example(v: jax.Array) -> jax.Array:
    return v[:, None, None, None]


def adjust_brightness(x: jax.Array, factor: jax.Array) -> jax.Array:
    """Multiplicative brightness, clamped (dm-pix's adjust_brightness is additive)."""
    return jnp.clip(x * _per_example(factor), 0.0, 1.0)


def adjust_contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
    """Blend with the image's own mean gray, clamped (dm-pix blends per-channel means)."""
    gray = jnp.tensordot(x, jnp.asarray(CONTRAST_GRAY, x.dtype), axes=([-1], [0]))
    mean = jnp.mean(gray, axis=(1, 2))
    f = _per_example(factor)
    return jnp.clip(f * x + (1.0 - f) * _per_example(mean), 0.0, 1.0)


def adjust_saturation(x: jax.Array, factor: jax.Array) -> jax.Array:
    """Scale S in HSV, clamp S to [0, 1] (dm-pix's semantics match)."""
    return jax.vmap(pix.adjust_saturation)(x, factor)


def adjust_hue(x: jax.Array, shift: jax.Array) -> jax.Array:
    """Rotate H in HSV by `shift` turns, i.e. `shift * 2 pi` (dm-pix's semantics match)."""
    return jax.vmap(pix.adjust_hue)(x, shift)


def color_jitter(x: jax.Array, color: jax.Array, order: jax.Array,
                 applied: jax.Array) -> jax.Array:
    """The four jitter ops in each example's own order (color [B, 4], order [B, 4])."""
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    out = x
    for position in range(4):
        op = order[:, position]
        # Per-example dispatch: run every op on the batch, keep the one this example uses.
        candidates = [f(out, color[:, i]) for i, f in enumerate(ops)]
        out = sum(jnp.where(_per_example(op == i), c, 0.0) for i, c in enumerate(candidates))
    return jnp.where(_per_example(applied > 0), out, x)


def grayscale(x: jax.Array, applied: jax.Array) -> jax.Array:
    """Luma (0.299, 0.587, 0.114) copied to 3 channels where applied."""
    gray = jnp.tensordot(x, jnp.asarray(GRAYSCALE_LUMA, x.dtype), axes=([-1], [0]))[..., None]
    return jnp.where(_per_example(applied > 0), jnp.broadcast_to(gray, x.shape), x)


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
    return jnp.where(_per_example(sigma > 0), out, x)


def solarize(x: jax.Array, threshold: jax.Array) -> jax.Array:
    """Invert pixels >= threshold. A threshold of 1 means 'not applied' in the record, so
    (unlike a bare pix.solarize) pixels equal to 1 are left alone then."""
    t = _per_example(threshold)
    return jnp.where(t < 1.0, pix.solarize(x, t), x)


def apply_photometric(views_uint8: jax.Array, params: dict, *,
                      blur_kernel: int) -> tuple[jax.Array, dict]:
    """uint8 views [B, H, W, 3] + their records -> (float32 views in [0, 1], records with
    `color_mean_shift` filled: per-channel mean before the jitter minus after it)."""
    x = views_uint8.astype(jnp.float32) / 255.0
    jittered = color_jitter(x, params["color"], params["color_order"], params["color_applied"])
    applied = (params["color_applied"] > 0)[:, None]
    shift = jnp.where(applied, jnp.mean(x, axis=(1, 2)) - jnp.mean(jittered, axis=(1, 2)), 0.0)
    out = grayscale(jittered, params["gray"])
    out = gaussian_blur(out, params["blur"], kernel_size=blur_kernel)
    out = solarize(out, params["solarize"])
    return out, {**params, "color_mean_shift": shift.astype(jnp.float32)}


def normalize(images01: jax.Array, mean, std) -> jax.Array:
    """(x - mean) / std per channel."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images01.astype(jnp.float32) - mean) / std

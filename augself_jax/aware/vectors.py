"""Per-view vectors read from a parameter record (METHOD.md section 1); AugSelf and CASSLE
share them."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Ranges:
    """Jitter half-widths (strength times color_strength) and the max blur sigma."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    blur_max: float = 2.0

    @classmethod
    def from_config(cls, config) -> "Ranges":
        aug = config.aug
        s = float(aug.color_strength)
        return cls(
            brightness=float(aug.brightness) * s,
            contrast=float(aug.contrast) * s,
            saturation=float(aug.saturation) * s,
            hue=float(aug.hue) * s,
            blur_max=float(aug.blur_sigma[1]),
        )


def _f32(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def color_vector(params: dict, ranges: Ranges) -> jax.Array:
    """The reference's normalised jitter `w` [B, 4] in [-0.5, 0.5]; 0 where jitter did not run."""
    color = _f32(params["color"])
    offset = color - jnp.array([1.0, 1.0, 1.0, 0.0], jnp.float32)
    half = jnp.array(
        [ranges.brightness, ranges.contrast, ranges.saturation, ranges.hue], jnp.float32
    )
    # A zero strength means that op never varies: its entry is 0, not 0/0.
    w = jnp.where(half > 0, offset / (2.0 * jnp.where(half > 0, half, 1.0)), 0.0)
    return w * _f32(params["color_applied"])[..., None]


def crop_box(params: dict, mirror: jax.Array) -> jax.Array:
    """(cy, cx, h, w) [B, 4] of the crop box in the source; cx -> 1 - cx where `mirror` is 1."""
    top, left, h, w = jnp.moveaxis(_f32(params["crop"]), -1, 0)
    cy = top + h / 2
    cx = left + w / 2
    cx = jnp.where(_f32(mirror) > 0.5, 1.0 - cx, cx)
    return jnp.stack([cy, cx, h, w], axis=-1)


def blur_value(params: dict, ranges: Ranges, *, raw: bool) -> jax.Array:
    """Sigma [B]; divided by the max sigma (fits tanh) unless `raw` (the reference)."""
    sigma = _f32(params["blur"])
    return sigma if raw else sigma / ranges.blur_max

"""Colour jitter: brightness, contrast, saturation, hue in a random per-example order,
on the device, with the reference's (kornia's) range clamps."""

import dataclasses

import dm_pix as pix
import jax
import jax.numpy as jnp

from augself_jax.augs.registry import (
    DEVICE,
    Augmentation,
    AugSelfTarget,
    Descriptor,
    Field,
    check_probability,
    switched_on,
)
from augself_jax.errors import ConfigError

# Contrast blends with the image's mean gray under these weights (the reference's).
CONTRAST_GRAY = (0.2989, 0.587, 0.114)
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the factors that change nothing
OPS = "bcsh"  # brightness, contrast, saturation, hue: the index order of `color`


@dataclasses.dataclass(frozen=True)
class JitterRange:
    """The jitter's static settings: each factor's sampling range after the reference's
    (kornia's) clamps, which its AugSelf target and CASSLE descriptor normalise by. The
    defaults are the reference's (strength 0.4 / hue 0.1)."""

    low: tuple[float, float, float, float] = (0.6, 0.6, 0.6, -0.1)
    high: tuple[float, float, float, float] = (1.4, 1.4, 1.4, 0.1)

    @classmethod
    def from_aug(cls, aug) -> "JitterRange":
        return cls(*jitter_bounds(aug))


def jitter_bounds(aug) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(low, high) of the four factors at aug's strengths times color_strength, clamped
    as kornia's ColorJitter clamps them: brightness to [0, 2], contrast and saturation
    to [0, inf), hue to [-0.5, 0.5]."""
    s = float(aug.color_strength)
    b, c, sat, h = (float(aug[k]) * s for k in ("brightness", "contrast", "saturation", "hue"))
    low = (max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - sat), max(-0.5, -h))
    high = (min(2.0, 1.0 + b), 1.0 + c, 1.0 + sat, min(0.5, h))
    return low, high


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = switched_on(u, "color_applied", aug.color_prob)
    low, high = (tf.constant(x, tf.float32) for x in jitter_bounds(aug))
    factors = low + u["color"] * (high - low)
    # argsort of i.i.d. uniforms: a uniform random permutation of the four ops.
    order = tf.argsort(u["color_order"], axis=-1, stable=True)
    return {"color": tf.where(on[:, None], factors, tf.constant(IDENTITY)[None]),
            "color_applied": tf.cast(on, tf.float32),
            "color_order": tf.where(on[:, None], order, tf.constant([[0, 1, 2, 3]]))}


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


def _planes_per_example(v: jax.Array) -> jax.Array:
    return v[:, None, None]


def _rgb_to_hsv_planes(r: jax.Array, g: jax.Array, b: jax.Array) -> tuple[jax.Array, ...]:
    """dm-pix's rgb_to_hsv formulas (its eps clamp included) on planes [B, H, W]."""
    eps = jnp.finfo(r.dtype).eps
    r, g, b = (jnp.where(jnp.abs(p) < eps, 0.0, p) for p in (r, g, b))
    value = jnp.maximum(jnp.maximum(r, g), b)
    range_ = value - jnp.minimum(jnp.minimum(r, g), b)
    saturation = jnp.where(value > 0, range_ / jnp.where(value > 0, value, 1.0), 0.0)
    norm = 1.0 / (6.0 * jnp.where(range_ > 0, range_, 1.0))
    hue = jnp.where(value == g, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0)
    hue = jnp.where(value == r, norm * (g - b), hue)
    hue = jnp.where(range_ > 0, hue, 0.0) + (hue < 0.0)
    return hue, saturation, value


def _hsv_to_rgb_planes(hue: jax.Array, saturation: jax.Array,
                       value: jax.Array) -> tuple[jax.Array, ...]:
    """dm-pix's hsv_to_rgb formulas on planes [B, H, W]."""
    dh = (hue % 1.0) * 6.0
    dr = jnp.clip(jnp.abs(dh - 3.0) - 1.0, 0.0, 1.0)
    dg = jnp.clip(2.0 - jnp.abs(dh - 2.0), 0.0, 1.0)
    db = jnp.clip(2.0 - jnp.abs(dh - 4.0), 0.0, 1.0)
    one_minus_s = 1.0 - saturation
    return tuple(value * (one_minus_s + saturation * d) for d in (dr, dg, db))


def color_jitter(x: jax.Array, color: jax.Array, order: jax.Array,
                 applied: jax.Array) -> jax.Array:
    """The four jitter ops in each example's own order (color [B, 4], order [B, 4]).

    Each example needs a different op at each of the four positions, so every position
    computes an op for the whole batch. Two evaluations per position suffice, not four:
    brightness and contrast are the same affine map `clip(f x + c)` (c = 0, or (1 - f)
    times the mean gray), and saturation and hue are one HSV round trip that scales S by
    f (1 for hue) and shifts H by f (0 for saturation). Both are the separate ops' exact
    formulas, so the result equals running the op the example's order names.

    The image is split into its R, G, B planes once and stacked once at the end: the HSV
    conversions work on planes, and splitting and stacking at each of the four positions
    read and wrote the whole image eight more times (bytes accessed, not FLOPs, bound
    these ops on an accelerator).
    """
    planes = tuple(x[..., c] for c in range(3))
    weights = tuple(jnp.asarray(w, x.dtype) for w in CONTRAST_GRAY)
    for position in range(4):
        op = order[:, position]
        f = jnp.take_along_axis(color, op[:, None], axis=1)[:, 0]
        r, g, b = planes
        gray = r * weights[0] + g * weights[1] + b * weights[2]
        shift = jnp.where(op == 1, (1.0 - f) * jnp.mean(gray, axis=(1, 2)), 0.0)
        affine = tuple(jnp.clip(_planes_per_example(f) * p + _planes_per_example(shift),
                                0.0, 1.0) for p in planes)
        h, s, v = _rgb_to_hsv_planes(*planes)
        scale = _planes_per_example(jnp.where(op == 2, f, 1.0))
        delta = _planes_per_example(jnp.where(op == 3, f, 0.0))
        rotated = _hsv_to_rgb_planes((h + delta) % 1.0, jnp.clip(s * scale, 0.0, 1.0), v)
        is_affine = _planes_per_example(op < 2)
        planes = tuple(jnp.where(is_affine, a, c) for a, c in zip(affine, rotated, strict=True))
    out = jnp.stack(planes, axis=-1)
    return jnp.where(_per_example(applied > 0), out, x)


def _op(x, params, **_):
    """The jitter, and `color_mean_shift`: per-channel mean before it minus after it."""
    jittered = color_jitter(x, params["color"], params["color_order"], params["color_applied"])
    applied = (params["color_applied"] > 0)[:, None]
    shift = jnp.where(applied, jnp.mean(x, axis=(1, 2)) - jnp.mean(jittered, axis=(1, 2)), 0.0)
    return jittered, {"color_mean_shift": shift.astype(jnp.float32)}


def color_vector(params: dict, ranges: JitterRange) -> jax.Array:
    """The reference's normalised jitter `w` [B, 4]: each factor's offset from identity
    divided by the width of its (clamped) sampling range; 0 where the jitter did not run."""
    offset = jnp.asarray(params["color"], jnp.float32) - jnp.asarray(IDENTITY, jnp.float32)
    width = jnp.asarray(ranges.high, jnp.float32) - jnp.asarray(ranges.low, jnp.float32)
    # A zero width means that op never varies: its entry is 0, not 0/0.
    w = jnp.where(width > 0, offset / jnp.where(width > 0, width, 1.0), 0.0)
    return w * jnp.asarray(params["color_applied"], jnp.float32)[..., None]


def _check(aug, image_size):
    check_probability(aug, "color_prob")
    if aug.color_strength <= 0:
        raise ConfigError(f"aug.color_strength: {aug.color_strength} must be > 0")
    for field in ("brightness", "contrast", "saturation", "hue"):
        if aug[field] < 0:
            raise ConfigError(f"aug.{field}: {aug[field]} must be >= 0")


_OP_NAMES = ("brightness", "contrast", "saturation", "hue")  # OPS spelled out


def _caption(rec, i):
    """Two lines: the four ops in the order applied, each with its factor (hue: its shift)."""
    if not rec["color_applied"][i]:
        return "jitter off"
    values = [f"{v:.2f}" for v in rec["color"][i][:3]] + [f"{rec['color'][i][3]:+.3f}"]
    ops = [f"{_OP_NAMES[k]} {values[k]}" for k in rec["color_order"][i]]
    return f"jitter, in order: {ops[0]}, {ops[1]},\n  {ops[2]}, {ops[3]}"


AUGMENTATION = Augmentation(
    name="color", stage=DEVICE, chain=2,
    # Effective strengths are these times color_strength (s in {0.5, 1, 2} in the paper),
    # clamped as in `jitter_bounds`.
    defaults={"color_prob": 0.8, "color_strength": 1.0, "brightness": 0.4, "contrast": 0.4,
              "saturation": 0.4, "hue": 0.1},
    draws=(("color_applied", 1), ("color", 4), ("color_order", 4)),
    record=(Field("color", (4,), "float32", IDENTITY),
            Field("color_applied", (), "float32", (0.0,)),
            Field("color_order", (4,), "int32", (0, 1, 2, 3)),
            Field("color_mean_shift", (3,), "float32", (0.0, 0.0, 0.0), on_device=True)),
    sample=_sample, op=_op, caption=_caption, prob_field="color_prob", check=_check,
    augself=AugSelfTarget(
        4, "mse", lambda pa, pb, ranges, reference: color_vector(pa, ranges) -
        color_vector(pb, ranges)),
    settings=JitterRange.from_aug,
    cassle=(Descriptor("color", 4, lambda p, ranges, reference: color_vector(p, ranges)),
            Descriptor("color_diff", 3, lambda p, ranges, reference:
                       jnp.asarray(p["color_mean_shift"], jnp.float32))),
    draw_order=2,
)

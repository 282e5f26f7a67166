"""Solarize (the reference's `stl10_sol`), on the device, right after the colour jitter."""

import jax
import jax.numpy as jnp

from augself_jax.augs.registry import (
    DEVICE,
    Augmentation,
    AugSelfTarget,
    Field,
    check_probability,
    switched_on,
)


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = switched_on(u, "solarize_applied", aug.solarize_prob)
    return {"solarize": tf.where(on, u["solarize"], 1.0)}


def solarize(x: jax.Array, threshold: jax.Array) -> jax.Array:
    """Invert pixels >= threshold. A threshold of 1 means 'not applied' in the record, so
    (unlike a bare pix.solarize) pixels equal to 1 are left alone then. One select, not
    pix.solarize's select inside another (each a pass over the image)."""
    t = threshold[:, None, None, None]
    return jnp.where((t < 1.0) & (x >= t), 1.0 - x, x)


def _target(pa, pb, settings, reference):
    return (jnp.asarray(pa["solarize"], jnp.float32) -
            jnp.asarray(pb["solarize"], jnp.float32))[..., None]


AUGMENTATION = Augmentation(
    name="solarize", stage=DEVICE, chain=3, defaults={"solarize_prob": 0.0},
    draws=(("solarize_applied", 1), ("solarize", 1)),
    record=(Field("solarize", (), "float32", (1.0,)),),
    sample=_sample, op=lambda x, p, **_: (solarize(x, p["solarize"]), {}),
    prob_field="solarize_prob",
    caption=lambda rec, i: f"sol {rec['solarize'][i]:.2f}",
    check=lambda aug, size: check_probability(aug, "solarize_prob"),
    augself=AugSelfTarget(1, "mse", _target),
    draw_order=5,
)

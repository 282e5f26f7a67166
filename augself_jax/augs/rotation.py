"""Rotation by k quarter turns (the reference's `stl10_rot`), on the host.

docs/METHOD.md section 1 rotates last; a quarter turn commutes with every photometric op, so it runs
here with the other geometric ops and ships rotated pixels."""

import jax.numpy as jnp

from augself_jax.augs.registry import (
    HOST,
    Augmentation,
    AugSelfTarget,
    Field,
    check_probability,
    switched_on,
)


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = switched_on(u, "rotation_applied", aug.rotation_prob)
    k = tf.minimum(tf.cast(tf.floor(u["rotation"] * 4), tf.int32), 3)
    return {"rotation": tf.where(on, k, 0)}


def _op(image, p, out_size):
    import tensorflow as tf

    return tf.image.rot90(image, k=p["rotation"])


def _target(pa, pb, settings, reference):
    return jnp.mod(jnp.asarray(pa["rotation"], jnp.int32) - jnp.asarray(pb["rotation"], jnp.int32),
                   4)


AUGMENTATION = Augmentation(
    name="rotation", stage=HOST, chain=6, defaults={"rotation_prob": 0.0},
    draws=(("rotation_applied", 1), ("rotation", 1)),
    record=(Field("rotation", (), "int32", (0,)),),
    sample=_sample, op=_op, prob_field="rotation_prob",
    caption=lambda rec, i: f"rot {int(rec['rotation'][i])}",
    check=lambda aug, size: check_probability(aug, "rotation_prob"),
    augself=AugSelfTarget(4, "ce", _target),
    draw_order=6,
)

"""Horizontal flip, on the host."""

import jax.numpy as jnp

from augself_jax.augs.core import (
    HOST,
    Augmentation,
    AugSelfTarget,
    Descriptor,
    Field,
    check_probability,
    register,
)


def _sample(u, aug, height, width):
    import tensorflow as tf

    return {"flip": tf.cast(u["flip"] < aug.flip_prob, tf.float32)}


def _op(image, p, out_size):
    import tensorflow as tf

    return tf.cond(p["flip"] > 0, lambda: tf.reverse(image, axis=[1]), lambda: image)


def _flag(p):
    return jnp.asarray(p["flip"], jnp.float32)[..., None]


def _same(pa, pb, ranges, reference):
    return (jnp.asarray(pa["flip"]) == jnp.asarray(pb["flip"])).astype(jnp.float32)[..., None]


FLIP = register(Augmentation(
    name="flip", stage=HOST, chain=1, defaults={"flip_prob": 0.5},
    draws=(("flip", 1),),
    record=(Field("flip", (), "float32", (0.0,)),),
    sample=_sample, op=_op, prob_field="flip_prob",
    caption=lambda rec, i: f"flip {int(rec['flip'][i])}",
    check=lambda aug, size: check_probability(aug, "flip_prob"),
    augself=AugSelfTarget(1, "bce", _same),
    cassle=(Descriptor("flip", 1, lambda p, ranges, reference: _flag(p)),),
))

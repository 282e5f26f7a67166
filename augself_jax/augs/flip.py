"""Horizontal flip, on the host."""


from augself_jax.augs.registry import (
    HOST,
    Augmentation,
    Field,
    check_probability,
    flag_descriptor,
    same_flag_target,
    switched_on,
)


def _sample(u, aug, height, width):
    import tensorflow as tf

    return {"flip": tf.cast(switched_on(u, "flip", aug.flip_prob), tf.float32)}


def _op(image, p, out_size):
    import tensorflow as tf

    return tf.cond(p["flip"] > 0, lambda: tf.reverse(image, axis=[1]), lambda: image)


AUGMENTATION = Augmentation(
    name="flip", stage=HOST, chain=1, defaults={"flip_prob": 0.5},
    draws=(("flip", 1),),
    record=(Field("flip", (), "float32", (0.0,)),),
    sample=_sample, op=_op, prob_field="flip_prob",
    caption=lambda rec, i: f"flip {int(rec['flip'][i])}",
    check=lambda aug, size: check_probability(aug, "flip_prob"),
    augself=same_flag_target("flip"),
    cassle=(flag_descriptor("flip"),),
    draw_order=1,
)

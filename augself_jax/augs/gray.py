"""Random grayscale, on the device, after the jitter and solarize."""

import math

import jax
import jax.numpy as jnp

from augself_jax.augs.registry import (
    DEVICE,
    Augmentation,
    Field,
    check_probability,
    flag_descriptor,
    same_flag_target,
    switched_on,
)
from augself_jax.errors import ConfigError

# The luma weights of docs/METHOD.md section 1; dm-pix's rec601 (and the contrast op's)
# red weight is 0.2989.
LUMA = (0.299, 0.587, 0.114)


def probability(aug) -> float:
    """gray_prob is scaled by color_strength, as in the reference's STL-10 runs."""
    return min(1.0, float(aug.gray_prob) * float(aug.color_strength))


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = switched_on(u, "gray", probability(aug))
    return {"gray": tf.cast(on, tf.float32)}


def grayscale(x: jax.Array, applied: jax.Array) -> jax.Array:
    """Luma copied to 3 channels where applied."""
    gray = jnp.tensordot(x, jnp.asarray(LUMA, x.dtype), axes=([-1], [0]))[..., None]
    return jnp.where(applied[:, None, None, None] > 0, jnp.broadcast_to(gray, x.shape), x)


def _check(aug, image_size):
    check_probability(aug, "gray_prob")
    if aug.gray_prob * aug.color_strength > 1.0:
        raise ConfigError(f"aug.gray_prob: {aug.gray_prob} times color_strength "
                          f"{aug.color_strength} is not a probability; allowed: [0, 1]")


AUGMENTATION = Augmentation(
    name="gray", stage=DEVICE, chain=4, defaults={"gray_prob": 0.2},
    draws=(("gray", 1),),
    record=(Field("gray", (), "float32", (0.0,)),),
    sample=_sample, op=lambda x, p, **_: (grayscale(x, p["gray"]), {}),
    prob_field="gray_prob", applied=probability, check=_check,
    caption=lambda rec, i: f"gray {int(rec['gray'][i])}",
    # min(1, inf * color_strength) = 1 at any strength.
    always={"gray_prob": math.inf},
    augself=same_flag_target("gray"),  # ours: not in the reference
    cassle=(flag_descriptor("gray"),),
    draw_order=3,
)

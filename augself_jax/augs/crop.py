"""Random resized crop (torchvision's RandomResizedCrop), on the host."""

import math

import jax.numpy as jnp

from augself_jax.augs.registry import (
    HOST,
    Augmentation,
    AugSelfTarget,
    Descriptor,
    Field,
    check_pair,
)

NUM_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params


def crop_box(u, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params, vectorised over views and attempts.

    u: float64 [V, 4 * NUM_ATTEMPTS] uniforms in [0, 1). Returns int32 [V, 4]
    (top, left, h, w): the first of 10 attempts whose box fits, else torchvision's
    central fallback crop.
    """
    import tensorflow as tf

    u = tf.reshape(u, [-1, NUM_ATTEMPTS, 4])
    h_img, w_img = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    target_area = h_img * w_img * (scale[0] + u[..., 0] * (scale[1] - scale[0]))
    log_r0, log_r1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_r0 + u[..., 1] * (log_r1 - log_r0))
    w = tf.round(tf.sqrt(target_area * aspect))  # round half to even, as torch.round
    h = tf.round(tf.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    top = tf.floor(u[..., 2] * (h_img - h + 1))  # torch.randint(0, H - h + 1)
    left = tf.floor(u[..., 3] * (w_img - w + 1))
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    pick = lambda t: tf.gather(t, first, axis=1, batch_dims=1)
    sampled = tf.stack([pick(top), pick(left), pick(h), pick(w)], axis=-1)
    # Fallback: the largest central box whose aspect ratio lies within `ratio`.
    in_ratio = w_img / h_img
    fb_w = tf.where(in_ratio < ratio[0], w_img,
                    tf.where(in_ratio > ratio[1], tf.round(h_img * ratio[1]), w_img))
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w_img / ratio[0]), h_img)
    fallback = tf.stack([tf.floor((h_img - fb_h) / 2), tf.floor((w_img - fb_w) / 2), fb_h, fb_w])
    box = tf.where(tf.reduce_any(fits, axis=1)[:, None], sampled, fallback[None])
    return tf.cast(box, tf.int32)


def _sample(u, aug, height, width):
    import tensorflow as tf

    box = crop_box(u["crop"], height, width, aug.crop_scale, aug.crop_ratio)
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    return {"crop": tf.cast(box, tf.float32) / size, "crop_px": box}


def _op(image, p, out_size):
    """Crop the integer box (top, left, h, w), resize bilinearly, antialiased (as PIL and
    torchvision); uint8 in, float32 out."""
    import tensorflow as tf

    box = p["crop_px"]
    crop = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
    return tf.image.resize(crop, [out_size, out_size], method="bilinear", antialias=True)


def centres(params: dict, mirror) -> jnp.ndarray:
    """(cy, cx, h, w) [B, 4] of the crop box in the source; cx -> 1 - cx where `mirror`."""
    top, left, h, w = jnp.moveaxis(jnp.asarray(params["crop"], jnp.float32), -1, 0)
    cx = left + w / 2
    cx = jnp.where(jnp.asarray(mirror, jnp.float32) > 0.5, 1.0 - cx, cx)
    return jnp.stack([top + h / 2, cx, h, w], axis=-1)


def _target(pa, pb, settings, reference):
    # Offsets in view a's frame: mirror both x-centres when view a is flipped.
    return centres(pa, pa["flip"]) - centres(pb, pa["flip"])


def _check(aug, image_size):
    check_pair(aug, "crop_scale", 1e-6, 1.0)
    check_pair(aug, "crop_ratio", 1e-6, float("inf"))


def _caption(rec, i):
    t, left, h, w = rec["crop"][i]  # the box's top-left corner and size, fractions of the source
    return f"crop y={t:.2f} x={left:.2f} h={h:.2f} w={w:.2f}"


AUGMENTATION = Augmentation(
    name="crop", stage=HOST, chain=0,
    defaults={"crop_scale": (0.2, 1.0), "crop_ratio": (3 / 4, 4 / 3)},
    draws=(("crop", 4 * NUM_ATTEMPTS),), draw_dtype="float64",
    record=(Field("crop", (4,), "float32", (0.0, 0.0, 1.0, 1.0)),),
    sample=_sample, op=_op, caption=_caption, check=_check,
    augself=AugSelfTarget(4, "mse", _target),
    cassle=(Descriptor("crop", 4, lambda p, settings, reference: centres(p, p["flip"])),),
    # The whole (square) image, resized to its own size: an identity.
    neutral={"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)},
    draw_order=0,
)

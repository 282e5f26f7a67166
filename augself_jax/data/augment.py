"""Host-side half of the two-view chain (METHOD.md section 1), in TensorFlow for tf.data.

Every parameter of every op (geometric and photometric) is drawn here, statelessly, from a
seed derived from (global seed, epoch, example index, view). The geometric ops (random
resized crop, flip, rotation) also run here and ship uint8 pixels; the photometric ops run
later on the accelerator from the recorded parameters (`photometric.py`).
"""

import math

import ml_collections
import tensorflow as tf

NUM_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params
# Layout of the per-view uniform vector: (name, count).
_UNIFORMS = (("crop", 4 * NUM_CROP_ATTEMPTS), ("flip", 1), ("color_apply", 1),
             ("color", 4), ("color_order", 4), ("gray", 1), ("blur_apply", 1), ("blur", 1),
             ("solarize_apply", 1), ("solarize", 1), ("rotation_apply", 1), ("rotation", 1))
_OFFSETS = {}
_n = 0
for _name, _count in _UNIFORMS:
    _OFFSETS[_name] = (_n, _n + _count)
    _n += _count
NUM_UNIFORMS = _n

RECORD_KEYS = ("crop", "flip", "color", "color_applied", "color_order", "color_mean_shift",
               "gray", "blur", "solarize", "rotation")


def view_seed(seed: int | tf.Tensor, epoch: tf.Tensor, index: tf.Tensor,
              view: int) -> tf.Tensor:
    """The stateless seed of one view: a pure function of (seed, epoch, index, view)."""
    s = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    for data in (epoch, index, view):
        s = tf.random.experimental.stateless_fold_in(s, tf.cast(data, tf.int64))
    return s


def _uniform_slice(u: tf.Tensor, name: str) -> tf.Tensor:
    a, b = _OFFSETS[name]
    return u[..., a:b]


def crop_box(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor, scale, ratio) -> tf.Tensor:
    """torchvision's RandomResizedCrop.get_params, vectorised over views and attempts.

    u: float64 [V, 4 * NUM_CROP_ATTEMPTS] uniforms in [0, 1). Returns int32 [V, 4]
    (top, left, h, w): the first of 10 attempts whose box fits, else torchvision's
    central fallback crop.
    """
    u = tf.reshape(u, [-1, NUM_CROP_ATTEMPTS, 4])
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


def sample_params(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                  aug: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
    """Every parameter of the chain for V views at once, from uniforms u [V, NUM_UNIFORMS].

    Returns the METHOD.md record (batched over V) plus `crop_px`, the integer crop box
    (top, left, h, w) in source pixels that the geometric op uses.
    """
    v = tf.shape(u)[0]
    u32 = tf.cast(u, tf.float32)
    box = crop_box(_uniform_slice(u, "crop"), height, width, aug.crop_scale, aug.crop_ratio)
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    crop = tf.cast(box, tf.float32) / size

    flip = tf.cast(_uniform_slice(u32, "flip")[:, 0] < aug.flip_prob, tf.float32)

    s = aug.color_strength
    color_on = _uniform_slice(u32, "color_apply")[:, 0] < aug.color_prob
    strengths = [aug.brightness * s, aug.contrast * s, aug.saturation * s]
    lo = tf.constant([max(0.0, 1.0 - x) for x in strengths] + [-min(aug.hue * s, 0.5)])
    hi = tf.constant([1.0 + x for x in strengths] + [min(aug.hue * s, 0.5)])
    factors = lo + _uniform_slice(u32, "color") * (hi - lo)
    identity = tf.constant([1.0, 1.0, 1.0, 0.0])
    color = tf.where(color_on[:, None], factors, identity)
    # argsort of i.i.d. uniforms: a uniform random permutation of the four ops.
    order = tf.argsort(_uniform_slice(u32, "color_order"), axis=-1, stable=True)
    color_order = tf.where(color_on[:, None], order, tf.range(4)[None])

    gray_prob = min(1.0, aug.gray_prob * s)
    gray = tf.cast(_uniform_slice(u32, "gray")[:, 0] < gray_prob, tf.float32)

    blur_on = _uniform_slice(u32, "blur_apply")[:, 0] < aug.blur_prob
    s0, s1 = aug.blur_sigma
    blur = tf.where(blur_on, s0 + _uniform_slice(u32, "blur")[:, 0] * (s1 - s0), 0.0)

    sol_on = _uniform_slice(u32, "solarize_apply")[:, 0] < aug.solarize_prob
    solarize = tf.where(sol_on, _uniform_slice(u32, "solarize")[:, 0], 1.0)

    rot_on = _uniform_slice(u32, "rotation_apply")[:, 0] < aug.rotation_prob
    k = tf.minimum(tf.cast(tf.floor(_uniform_slice(u32, "rotation")[:, 0] * 4), tf.int32), 3)
    rotation = tf.where(rot_on, k, 0)

    return {
        "crop": crop, "flip": flip, "color": color,
        "color_applied": tf.cast(color_on, tf.float32),
        "color_order": tf.cast(color_order, tf.int32),
        "color_mean_shift": tf.zeros([v, 3], tf.float32),  # filled by apply_photometric
        "gray": gray, "blur": blur, "solarize": solarize, "rotation": rotation,
        "crop_px": box,
    }


def apply_geometric(image: tf.Tensor, box: tf.Tensor, flip: tf.Tensor, rotation: tf.Tensor,
                    out_size: int) -> tf.Tensor:
    """Crop `box` (top, left, h, w in pixels), resize bilinearly (antialiased, as PIL and
    torchvision) to out_size, mirror if flip, rotate by `rotation` quarter turns; uint8."""
    crop = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
    view = tf.image.resize(crop, [out_size, out_size], method="bilinear", antialias=True)
    view = tf.cond(flip > 0, lambda: tf.reverse(view, axis=[1]), lambda: view)
    view = tf.image.rot90(view, k=rotation)
    return tf.cast(tf.clip_by_value(tf.round(view), 0.0, 255.0), tf.uint8)


def two_views(image: tf.Tensor, seed: int, epoch: tf.Tensor, index: tf.Tensor,
              aug: ml_collections.ConfigDict, out_size: int, record: bool = True) -> dict:
    """Two independently augmented views of one decoded uint8 image [H, W, 3].

    Returns {'view1', 'view2'} (uint8) and, if record, {'params1', 'params2'}.
    """
    u = tf.stack([tf.random.stateless_uniform([NUM_UNIFORMS], view_seed(seed, epoch, index, v),
                                              dtype=tf.float64) for v in (1, 2)])
    shape = tf.shape(image)
    params = sample_params(u, shape[0], shape[1], aug)
    out = {}
    for v in range(2):
        out[f"view{v + 1}"] = apply_geometric(image, params["crop_px"][v], params["flip"][v],
                                              params["rotation"][v], out_size)
        if record:
            out[f"params{v + 1}"] = {k: params[k][v] for k in RECORD_KEYS}
    return out


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """PNG or JPEG bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image

"""Host-side half of the two-view chain (METHOD.md section 1), in TensorFlow for tf.data.

Every parameter of every registered augmentation (geometric and photometric) is drawn
here, statelessly, from a seed derived from (global seed, epoch, example index, view).
The geometric ops (the registry's HOST stage: crop, flip, rotation) also run here and ship
uint8 pixels; the photometric ops run later on the accelerator from the recorded
parameters (`photometric.py`).

The record leaves tf.data packed: one float32 vector per view (`pack` / `unpack`), since
batching one tensor costs far less than batching one tensor per record key.
"""

import ml_collections
import numpy as np
import tensorflow as tf

from augself_jax import augs


def _layout() -> tuple[dict[str, tuple[int, int]], int]:
    offsets, n = {}, 0
    for entry in augs.entries():
        for slot, count in entry.draws:
            offsets[slot] = (n, n + count)
            n += count
    return offsets, n


_OFFSETS, NUM_UNIFORMS = _layout()
RECORD_KEYS = augs.record_keys()
# The shipped part of the record (the device fills the rest), in packing order: the
# vector keys, then the scalar keys (stacked by one op).
_SHIPPED = tuple(sorted((f for f in augs.record_fields() if not f.on_device),
                        key=lambda f: not f.shape))
PACKED_SIZE = sum(f.size for f in _SHIPPED)


def view_seed(seed: int | tf.Tensor, epoch: tf.Tensor, index: tf.Tensor,
              view: int) -> tf.Tensor:
    """The stateless seed of one view: a pure function of (seed, epoch, index, view)."""
    s = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    for data in (epoch, index, view):
        s = tf.random.experimental.stateless_fold_in(s, tf.cast(data, tf.int64))
    return s


def sample_params(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                  aug: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
    """Every parameter of the chain for V views at once, from float64 uniforms
    u [V, NUM_UNIFORMS].

    Returns the METHOD.md record (batched over V; device-filled keys as their identity)
    plus host-only extras such as `crop_px`, the integer crop box the crop op uses.
    """
    u32 = tf.cast(u, tf.float32)  # once: the per-example op count is the host's cost
    out = {}
    for entry in augs.entries():
        source = u if entry.draw_dtype == "float64" else u32
        # A one-uniform slot arrives as [V]: one slice op, not two (each op is a
        # per-example cost).
        slots = {slot: source[:, _OFFSETS[slot][0]] if count == 1 else
                 source[:, _OFFSETS[slot][0]:_OFFSETS[slot][1]] for slot, count in entry.draws}
        out.update(entry.sample(slots, aug, height, width))
        for f in entry.record:
            if f.on_device:
                out[f.key] = _identity(f, u)
    return out


def _identity(field: augs.Field, u: tf.Tensor) -> tf.Tensor:
    """A record key's 'not applied' value for every view (a constant when V is static)."""
    value = np.asarray(field.identity, field.dtype).reshape(field.shape)
    if u.shape[0] is not None:
        return tf.constant(np.broadcast_to(value, (u.shape[0],) + field.shape))
    return tf.broadcast_to(tf.constant(value)[None], tf.concat([tf.shape(u)[:1],
                                                                 field.shape], 0))


def apply_geometric(image: tf.Tensor, params: dict, out_size: int) -> tf.Tensor:
    """The registry's host ops on one view (params of that view); uint8 in and out."""
    x = image
    for entry in augs.chain(augs.HOST):
        x = entry.op(x, params, out_size)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def pack(params: dict) -> tf.Tensor:
    """The shipped record keys of V views -> float32 [V, PACKED_SIZE] (ints are small and
    exact in float32), in a handful of ops: each is a per-example cost in tf.data."""
    f32 = lambda f: tf.cast(params[f.key], tf.float32)  # no op when already float32
    vectors = [f32(f) for f in _SHIPPED if f.shape]
    scalars = [f32(f) for f in _SHIPPED if not f.shape]
    return tf.concat(vectors + [tf.stack(scalars, axis=1)], axis=1)


def unpack(packed: np.ndarray) -> dict[str, np.ndarray]:
    """float32 [..., PACKED_SIZE] -> the full record (device-filled keys as identity)."""
    packed = np.asarray(packed)
    lead = packed.shape[:-1]
    out, start = {}, 0
    for f in _SHIPPED:
        x = packed[..., start:start + f.size].reshape(lead + f.shape)
        out[f.key] = x.astype(f.dtype) if f.dtype != "float32" else x
        start += f.size
    for f in augs.record_fields():
        if f.on_device:
            out[f.key] = np.broadcast_to(np.asarray(f.identity, f.dtype), lead + f.shape).copy()
    return {f.key: out[f.key] for f in augs.record_fields()}  # METHOD.md's key order


class _OneView(dict):
    """View i of a record batched over views, sliced on first read: a host op reads two
    or three keys, and every slice is an op per example."""

    def __init__(self, params: dict, i: int):
        super().__init__()
        self._params, self._i = params, i

    def __missing__(self, key: str) -> tf.Tensor:
        self[key] = self._params[key][self._i]
        return self[key]


def views(image: tf.Tensor, u: tf.Tensor, aug: ml_collections.ConfigDict,
          out_size: int) -> tuple[list[tf.Tensor], dict]:
    """V views of one decoded uint8 image [H, W, 3] from uniforms u [V, NUM_UNIFORMS]
    (V static): ([uint8 [S, S, 3]] * V, the record batched over V)."""
    shape = tf.shape(image)
    params = sample_params(u, shape[0], shape[1], aug)
    pixels = [apply_geometric(image, _OneView(params, i), out_size) for i in range(u.shape[0])]
    return pixels, params


def two_views(image: tf.Tensor, seed: int, epoch: tf.Tensor, index: tf.Tensor,
              aug: ml_collections.ConfigDict, out_size: int, record: bool = True) -> dict:
    """Two independently augmented views of one decoded uint8 image [H, W, 3].

    Returns {'view1', 'view2'} (uint8) and, if record, 'params': float32 [2, PACKED_SIZE],
    both views' records packed (`unpack` restores them).
    """
    u = tf.stack([tf.random.stateless_uniform([NUM_UNIFORMS], view_seed(seed, epoch, index, v),
                                              dtype=tf.float64) for v in (1, 2)])
    pixels, params = views(image, u, aug, out_size)
    out = {"view1": pixels[0], "view2": pixels[1]}
    if record:
        out["params"] = pack(params)
    return out


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """PNG or JPEG bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image

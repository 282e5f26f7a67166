"""Host-side half of the two-view chain (docs/METHOD.md section 1), in TensorFlow for tf.data.

Every parameter of every registered augmentation (geometric and photometric) is drawn
here, statelessly, from a seed derived from (global seed, epoch, example index, view).
The geometric ops (the registry's HOST stage: crop, flip, rotation) also run here and ship
uint8 pixels; the photometric ops run later on the accelerator from the recorded
parameters (`photometric.py`).

The record leaves tf.data packed: one float32 vector per view (`pack` / `unpack`), since
batching one tensor costs far less than batching one tensor per record key. The device
ops' parameters are drawn once per batch (`draw_device_params`), from uniforms each
example ships: tf.data's cost is per op per example, and these draws need no pixels.
"""

from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from augself_jax import augs


def traced_as_written(fn: Callable) -> Callable:
    """`fn` for tf.data's `map`, traced into a graph as written, without AutoGraph's
    rewrite: converting a function and everything it calls took 1.5 s per pipeline, each
    process, and gave the same graph. The map functions branch with tf.cond / tf.where and
    loop over Python values only; a Python `if` or `for` on a tensor fails at trace time
    without AutoGraph, loudly, rather than changing what the graph computes."""
    return tf.autograph.experimental.do_not_convert(fn)


def _layout() -> tuple[dict[str, tuple[int, int]], int]:
    offsets, n = {}, 0
    for entry in augs.entries().values():
        for slot, count in entry.draws:
            offsets[slot] = (n, n + count)
            n += count
    return offsets, n


_OFFSETS, NUM_UNIFORMS = _layout()
RECORD_KEYS = augs.record_keys()


def _ship_order(stage: str) -> tuple[augs.Field, ...]:
    """One stage's shipped record keys in packing order: the vector keys, then the scalar
    keys (stacked by one op)."""
    fields = [f for e in augs.entries().values() if e.stage == stage for f in e.record
              if not f.on_device]
    return tuple(sorted(fields, key=lambda f: not f.shape))


# The packed record: the host ops' keys, then the device ops' keys (the device fills the
# `on_device` ones itself).
_HOST_FIELDS, _DEVICE_FIELDS = _ship_order(augs.HOST), _ship_order(augs.DEVICE)
_SHIPPED = _HOST_FIELDS + _DEVICE_FIELDS
PACKED_SIZE = sum(f.size for f in _SHIPPED)
_HOST_SIZE = sum(f.size for f in _HOST_FIELDS)
if any(e.draw_dtype != "float32" for e in augs.chain(augs.DEVICE)):
    raise ValueError("a DEVICE augmentation draws float64 uniforms; its parameters are "
                     "drawn per batch from shipped float32 uniforms (draw_dtype float32)")
# The uniform columns the device ops' parameters are drawn from, in layout order.
_DEVICE_COLUMNS = tuple(c for e in augs.entries().values() if e.stage == augs.DEVICE
                        for slot, _ in e.draws for c in range(*_OFFSETS[slot]))


def view_seed(seed: int | tf.Tensor, epoch: tf.Tensor, index: tf.Tensor,
              view: int) -> tf.Tensor:
    """The stateless seed of one view: a pure function of (seed, epoch, index, view)."""
    s = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    for data in (epoch, index, view):
        s = tf.random.experimental.stateless_fold_in(s, tf.cast(data, tf.int64))
    return s


def sample_params(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                  aug: ml_collections.ConfigDict, *,
                  stage: str | None = None) -> dict[str, tf.Tensor]:
    """Every parameter of the chain (of one stage's ops, if `stage`) for V views at once,
    from float64 uniforms u [V, NUM_UNIFORMS].

    Returns the docs/METHOD.md record (batched over V; device-filled keys as their identity)
    plus host-only extras such as `crop_px`, the integer crop box the crop op uses.
    """
    u32 = tf.cast(u, tf.float32)  # once: the per-example op count is the host's cost
    out = {}
    for entry in augs.entries().values():
        if stage is None or entry.stage == stage:
            out.update(_sample(entry, u, u32, _OFFSETS, aug, height, width))
    return out


def _sample(entry: augs.Augmentation, u: tf.Tensor, u32: tf.Tensor, offsets: dict,
            aug: ml_collections.ConfigDict, height, width) -> dict[str, tf.Tensor]:
    source = u if entry.draw_dtype == "float64" else u32
    # A one-uniform slot arrives as [V]: one slice op, not two (each op is a per-example
    # cost).
    slots = {slot: source[:, offsets[slot][0]] if count == 1 else
             source[:, offsets[slot][0]:offsets[slot][1]] for slot, count in entry.draws}
    out = entry.sample(slots, aug, height, width)
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


def _pack_fields(params: dict, fields: tuple[augs.Field, ...]) -> tf.Tensor:
    f32 = lambda f: tf.cast(params[f.key], tf.float32)  # no op when already float32
    vectors = [f32(f) for f in fields if f.shape]
    scalars = [f32(f) for f in fields if not f.shape]
    return tf.concat(vectors + ([tf.stack(scalars, axis=1)] if scalars else []), axis=1)


def pack(params: dict) -> tf.Tensor:
    """The shipped record keys of V views -> float32 [V, PACKED_SIZE] (ints are small and
    exact in float32), in a handful of ops: each is a per-example cost in tf.data."""
    return tf.concat([_pack_fields(params, _HOST_FIELDS),
                      _pack_fields(params, _DEVICE_FIELDS)], axis=1)


def draw_device_params(shipped: tf.Tensor, aug: ml_collections.ConfigDict) -> tf.Tensor:
    """[..., 2, host record + device uniforms] (what `two_views` ships) -> the packed
    record [..., 2, PACKED_SIZE].

    The device ops' parameters need no pixels, so they are drawn here from the example's
    own uniforms, once per BATCH for all its views (the same elementwise maths, so the
    same bits as drawing them per example): tf.data's cost is per op and per example.
    """
    lead = tf.shape(shipped)[:-1]
    flat = tf.reshape(shipped, [-1, shipped.shape[-1]])
    host, uniforms = flat[:, :_HOST_SIZE], flat[:, _HOST_SIZE:]
    offsets, start = {}, 0
    for e in augs.entries().values():
        if e.stage == augs.DEVICE:
            for slot, count in e.draws:
                offsets[slot] = (start, start + count)
                start += count
    params = {}
    for e in augs.chain(augs.DEVICE):
        params.update(_sample(e, uniforms, uniforms, offsets, aug, None, None))
    packed = tf.concat([host, _pack_fields(params, _DEVICE_FIELDS)], axis=1)
    return tf.reshape(packed, tf.concat([lead, [PACKED_SIZE]], 0))


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
    return {f.key: out[f.key] for f in augs.record_fields()}  # docs/METHOD.md's key order


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
          out_size: int, *, stage: str | None = None) -> tuple[list[tf.Tensor], dict]:
    """V views of one decoded uint8 image [H, W, 3] from uniforms u [V, NUM_UNIFORMS]
    (V static): ([uint8 [S, S, 3]] * V, the record batched over V; only the host ops'
    keys if stage is HOST)."""
    shape = tf.shape(image)
    params = sample_params(u, shape[0], shape[1], aug, stage=stage)
    pixels = [apply_geometric(image, _OneView(params, i), out_size) for i in range(u.shape[0])]
    return pixels, params


def two_views(image: tf.Tensor, seed: int, epoch: tf.Tensor, index: tf.Tensor,
              aug: ml_collections.ConfigDict, out_size: int, record: bool = True) -> dict:
    """Two independently augmented views of one decoded uint8 image [H, W, 3].

    Returns {'view1', 'view2'} (uint8) and, if record, 'params': float32 [2, host record +
    device uniforms]: the host ops' record and the uniforms the device ops' parameters
    are drawn from, by `draw_device_params` once per batch.
    """
    u = tf.stack([tf.random.stateless_uniform([NUM_UNIFORMS], view_seed(seed, epoch, index, v),
                                              dtype=tf.float64) for v in (1, 2)])
    pixels, params = views(image, u, aug, out_size, stage=augs.HOST)
    out = {"view1": pixels[0], "view2": pixels[1]}
    if record:
        uniforms = tf.cast(tf.gather(u, _DEVICE_COLUMNS, axis=1), tf.float32)
        out["params"] = tf.concat([_pack_fields(params, _HOST_FIELDS), uniforms], axis=1)
    return out


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """PNG or JPEG bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image

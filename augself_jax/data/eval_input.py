"""Evaluation input: the spec's preprocessing in tf.data, fixed-shape padded-and-masked batches.

Examples are read by position from ArrayRecord (data/source.py). Resize the shorter side to
the pretraining image size (bicubic, antialiased as PIL), centre crop, keep uint8
(normalisation with the pretraining mean/std happens on the device). Every batch has the same
shape: the last one is padded and `mask` marks the real examples, so the feature extractor
compiles once and drops nothing. Filtered-out examples (a class subset) are masked rather
than removed, so every process knows its batch count up front.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from augself_jax.data import augment, source

_READ_BATCH = 256  # serialized examples read at once (one call, parallel reads)


def _crop_geometry(h: tf.Tensor, w: tf.Tensor, size: int) -> tuple[tf.Tensor, ...]:
    """(resized height, resized width, crop top, crop left) of resize_center_crop."""
    short = tf.minimum(h, w)
    # torchvision keeps the short side exact and truncates the long one.
    nh = tf.where(h == short, size, tf.cast(size * h // short, tf.int32))
    nw = tf.where(w == short, size, tf.cast(size * w // short, tf.int32))
    top = tf.cast(tf.round(tf.cast(nh - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(nw - size, tf.float32) / 2.0), tf.int32)
    return nh, nw, top, left


def box_in_crop(box: tf.Tensor, h: tf.Tensor, w: tf.Tensor, size: int) -> tf.Tensor:
    """A TFDS box (ymin, xmin, ymax, xmax as fractions of the H x W image) in the frame of
    resize_center_crop's output, clipped to it: what a box regressor sees."""
    nh, nw, top, left = (tf.cast(v, tf.float32) for v in _crop_geometry(h, w, size))
    y = (box[..., 0::2] * nh - top) / size
    x = (box[..., 1::2] * nw - left) / size
    out = tf.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], -1)
    return tf.clip_by_value(out, 0.0, 1.0)


def points_in_crop(points: dict[str, tf.Tensor], h: tf.Tensor, w: tf.Tensor,
                   size: int) -> tf.Tensor:
    """Pixel coordinates {name_x: x, name_y: y, ...} in an H x W image as float32 [n], in
    `points`' order, in the frame of resize_center_crop's output (0 to 1 inside it; not
    clipped: a point the crop cuts off keeps its position)."""
    nh, nw, top, left = (tf.cast(v, tf.float32) for v in _crop_geometry(h, w, size))
    h, w = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    out = []
    for name, value in points.items():
        if not name.endswith(("_x", "_y")):
            raise ValueError(f"point feature '{name}': expected a name ending in _x or _y")
        value = tf.cast(value, tf.float32)
        out.append((value * nw / w - left) / size if name.endswith("_x")
                   else (value * nh / h - top) / size)
    return tf.stack(out)


def resize_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) on a uint8 [H, W, 3] image."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    nh, nw, top, left = _crop_geometry(h, w, size)

    def resize():
        out = tf.image.resize(image, tf.stack([nh, nw]), method="bicubic", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    image = tf.cond((nh == h) & (nw == w), lambda: tf.cast(image, tf.uint8), resize)
    return tf.ensure_shape(image[top:top + size, left:left + size, :], (size, size, 3))


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, image_size: int,
                 batch_size: int, keys: tuple[str, ...], keep: tuple[str, tuple[int, ...]] | None
                 = None, drop_labels: tuple[int, ...] = (), label_key: str | None = "label",
                 process_index: int = 0, process_count: int = 1, max_examples: int = 0,
                 point_keys: tuple[str, ...] = ()
                 ) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """(iterator over host-local batches, number of batches) of one split.

    Each batch: `image` uint8 [b, S, S, 3], one array per name in `keys`, `mask` bool [b].
    Every process gets the same number of batches (the global batch is b * process_count).
    `max_examples` > 0 reads only the split's first examples (quick runs, tests). The split
    is read by position from the prepared builder (source.prepared_builder): each process
    reads its own contiguous range, and memory does not grow with the split.
    `label_key` None: a dataset without class labels (nothing dropped). `point_keys`: dicts
    of pixel coordinates named `*_x` / `*_y` (celeb_a's `landmarks`), each returned as one
    float32 vector in the evaluation crop's frame (`points_in_crop`).
    """
    records = source.records(builder, split)
    total = min(len(records), max_examples) if max_examples else len(records)
    per_process = math.ceil(total / process_count)
    num_batches = max(1, math.ceil(per_process / batch_size))
    start = min(total, process_index * per_process)
    stop = min(total, start + per_process)
    features = builder.info.features
    needed = tuple(dict.fromkeys(("image", *keys, *point_keys,
                                  *([label_key] if label_key else []),
                                  *(keep[:1] if keep else ()))))
    drop = tf.constant(list(drop_labels) or [-1], tf.int64)
    keep_values = tf.constant(list(keep[1]) if keep else [0], tf.int64)

    def read(positions):
        serialized = tf.numpy_function(lambda p: source.read(records, p), [positions],
                                       tf.string, stateful=False)
        serialized.set_shape(positions.shape)
        return source.parse(builder, serialized, needed)

    def prepare(ex):
        image = features["image"].decode_example(ex["image"])
        out = {"image": resize_center_crop(image, image_size)}
        for k in keys:
            out[k] = features[k].decode_example(ex[k])
            if isinstance(features[k], tfds.features.BBoxFeature):  # into the crop's frame
                out[k] = box_in_crop(out[k], tf.shape(image)[0], tf.shape(image)[1],
                                     image_size)
        for k in point_keys:  # in the feature's own key order (decoding sorts them)
            decoded = features[k].decode_example(ex[k])
            out[k] = points_in_crop({n: decoded[n] for n in features[k].keys()},
                                    tf.shape(image)[0], tf.shape(image)[1], image_size)
        valid = tf.constant(True)
        if label_key:
            valid = tf.logical_not(tf.reduce_any(tf.cast(ex[label_key], tf.int64) == drop))
        if keep:
            valid &= tf.reduce_any(tf.cast(ex[keep[0]], tf.int64) == keep_values)
        out["mask"] = valid
        return out

    as_written = augment.traced_as_written
    ds = tf.data.Dataset.range(start, stop).batch(_READ_BATCH).map(as_written(read)).unbatch()
    ds = ds.map(as_written(prepare), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).prefetch(2)

    def pad(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["mask"])
        if n == batch_size:
            return batch
        return {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()}

    def iterate():
        count = 0
        for batch in ds.as_numpy_iterator():
            count += 1
            yield pad(batch)
        empty = None
        for _ in range(num_batches - count):  # a shorter shard still runs every step
            if empty is None:
                spec = ds.element_spec
                empty = {k: np.zeros((batch_size, *s.shape[1:]), s.dtype.as_numpy_dtype)
                         for k, s in spec.items()}
            yield empty

    return iterate(), num_batches

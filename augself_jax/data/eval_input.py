"""Evaluation input: the spec's preprocessing in tf.data, fixed-shape padded-and-masked batches.

Resize the shorter side to the pretraining image size (bicubic, antialiased as PIL), centre
crop, keep uint8 (normalisation with the pretraining mean/std happens on the device). Every
batch has the same shape: the last one is padded and `mask` marks the real examples, so the
feature extractor compiles once and drops nothing. Filtered-out examples (a class subset)
are masked rather than removed, so every process knows its batch count up front.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def resize_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) on a uint8 [H, W, 3] image."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short = tf.minimum(h, w)
    # torchvision keeps the short side exact and truncates the long one.
    nh = tf.where(h == short, size, tf.cast(size * h // short, tf.int32))
    nw = tf.where(w == short, size, tf.cast(size * w // short, tf.int32))

    def resize():
        out = tf.image.resize(image, tf.stack([nh, nw]), method="bicubic", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    image = tf.cond((nh == h) & (nw == w), lambda: tf.cast(image, tf.uint8), resize)
    top = tf.cast(tf.round(tf.cast(nh - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(nw - size, tf.float32) / 2.0), tf.int32)
    return tf.ensure_shape(image[top:top + size, left:left + size, :], (size, size, 3))


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, image_size: int,
                 batch_size: int, keys: tuple[str, ...], keep: tuple[str, tuple[int, ...]] | None
                 = None, drop_labels: tuple[int, ...] = (), label_key: str = "label",
                 process_index: int = 0, process_count: int = 1, max_examples: int = 0
                 ) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """(iterator over host-local batches, number of batches) of one split.

    Each batch: `image` uint8 [b, S, S, 3], one array per name in `keys`, `mask` bool [b].
    Every process gets the same number of batches (the global batch is b * process_count).
    `max_examples` > 0 reads only the split's first examples (quick runs, tests).
    """
    if max_examples:
        split = f"{split}[:{int(max_examples)}]" if "+" not in split else "+".join(
            f"{s}[:{int(max_examples)}]" for s in split.split("+"))
    total = builder.as_dataset(split=split).cardinality().numpy()
    if total < 0:
        total = sum(1 for _ in builder.as_dataset(split=split))
    per_process = math.ceil(total / process_count)
    num_batches = max(1, math.ceil(per_process / batch_size))
    local_split = split
    if process_count > 1:
        local_split = tfds.split_for_jax_process(split, process_index=process_index,
                                                 process_count=process_count)
    ds = builder.as_dataset(split=local_split, shuffle_files=False)
    drop = tf.constant(list(drop_labels) or [-1], tf.int64)
    keep_values = tf.constant(list(keep[1]) if keep else [0], tf.int64)

    def prepare(ex):
        out = {"image": resize_center_crop(ex["image"], image_size)}
        for k in keys:
            out[k] = ex[k]
        valid = tf.logical_not(tf.reduce_any(tf.cast(ex[label_key], tf.int64) == drop))
        if keep:
            valid &= tf.reduce_any(tf.cast(ex[keep[0]], tf.int64) == keep_values)
        out["mask"] = valid
        return out

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(2)

    def pad(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["mask"])
        if n == batch_size:
            return batch
        return {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()}

    def iterate():
        count = 0
        for batch in tfds.as_numpy(ds):
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

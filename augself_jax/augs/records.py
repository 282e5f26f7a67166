"""Parameter records built from the augmentation registry alone (docs/METHOD.md section 1).

Tests and benchmarks need records of a batch without running the input pipeline: every
key the registry declares, with the shapes, dtypes and values its augmentations give.
Building them here, from each entry's own `record` fields and `sample` function, means a
newly registered augmentation's keys appear in them with valid values, and nothing else
holds a copy of the record's layout.

TensorFlow is imported only by `sample_record` (the entries' samplers are TensorFlow).
"""

from typing import Any

import ml_collections
import numpy as np

from augself_jax.augs import registry


def record_spec() -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every record key -> (per-view shape, dtype), in the registry's order."""
    return {f.key: (f.shape, np.dtype(f.dtype)) for f in registry.record_fields()}


def identity_record(batch: int) -> dict[str, np.ndarray]:
    """A record of `batch` views where no augmentation ran (each key's 'not applied')."""
    return {f.key: np.broadcast_to(np.asarray(f.identity, f.dtype).reshape(f.shape),
                                   (batch, *f.shape)).copy()
            for f in registry.record_fields()}


def mixed_aug() -> ml_collections.ConfigDict:
    """The registry's `config.aug` defaults with every switchable augmentation at
    probability 0.5, so a sampled record holds both applied and not-applied views of each."""
    aug = ml_collections.ConfigDict(registry.config_defaults())
    for entry in registry.entries().values():
        if entry.prob_field is not None:
            aug[entry.prob_field] = 0.5
    return aug


def sample_record(batch: int, seed: int = 0, *, aug: Any = None, height: int = 64,
                  width: int = 64) -> dict[str, np.ndarray]:
    """A record of `batch` views of a `height` x `width` source, drawn by each
    augmentation's own sampler from uniforms seeded by `seed` (`aug`: the `config.aug`
    to sample with; default `mixed_aug()`). Keys the device fills itself hold their
    identity, as in the pipeline's batches."""
    import tensorflow as tf

    aug = mixed_aug() if aug is None else aug
    rng = np.random.default_rng(seed)
    out = identity_record(batch)
    for entry in registry.entries().values():
        dtype = np.float64 if entry.draw_dtype == "float64" else np.float32
        slots = {}
        for slot, count in entry.draws:
            u = rng.random((batch, count)).astype(dtype)
            slots[slot] = tf.constant(u[:, 0] if count == 1 else u)
        sampled = entry.sample(slots, aug, height, width)
        for f in entry.record:
            if not f.on_device:
                out[f.key] = np.asarray(sampled[f.key]).astype(f.dtype).reshape(batch, *f.shape)
    return out

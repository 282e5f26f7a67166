"""Device-side half of the two-view chain: the registry's DEVICE ops (colour jitter ->
solarize -> grayscale -> Gaussian blur, docs/METHOD.md section 1) as pure JAX functions of
(pixels, recorded parameters), vectorised over the batch and jit-able; and the one
normalisation every model input goes through.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from augself_jax import augs


def apply_photometric(views_uint8: jax.Array, params: dict,
                      settings: augs.StaticSettings) -> tuple[jax.Array, dict]:
    """uint8 views [B, H, W, 3] + their records -> (float32 views in [0, 1], records with
    the device-filled keys (`color_mean_shift`) filled). Each op reads its own part of
    `settings` (`augs.StaticSettings.from_aug(config.aug)`).

    Float32 whatever the model's dtype (augs/blur.py says why the blur stays float32).
    """
    x = views_uint8.astype(jnp.float32) / 255.0
    params = dict(params)
    for entry in augs.chain(augs.DEVICE):
        x, filled = entry.op(x, params, settings=settings[entry.name])
        params.update(filled)
    return x, params


def normalize(images01: jax.Array, mean: Sequence[float] | jax.Array,
              std: Sequence[float] | jax.Array) -> jax.Array:
    """(x - mean) / std per channel, for images in [0, 1]."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images01.astype(jnp.float32) - mean) / std


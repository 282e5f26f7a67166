"""Barlow Twins: cross-correlation of the two views' embeddings over the global batch."""

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.errors import ConfigError
from augself_jax.methods.core import Method, online_views, pick
from augself_jax.models.mlp import MLP


def barlow_loss(z1: jax.Array, z2: jax.Array, lam: float) -> jax.Array:
    """sum_i (1 - C_ii)^2 + lam sum_{i != j} C_ij^2 with C = z1^T z2 / N.

    z1, z2 are already batch-normalised: the projector ends in a non-affine BN applied to each
    view separately (the reference's `bn(z)`), so C is the cross-correlation matrix.
    """
    z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
    c = z1.T @ z2 / z1.shape[0]
    diag = jnp.diagonal(c)
    on = jnp.sum((1 - diag) ** 2)
    off = jnp.sum(c**2) - jnp.sum(diag**2)
    return on + lam * off


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    hidden, out = pick(m.proj_hidden, 8192), pick(m.proj_out, 8192)
    return {
        "projector": MLP(proj_in, [hidden, hidden, out], last_bn="plain", dtype=dtype, rngs=rngs)
    }


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, z1, z2 = online_views(model, batch)
    return barlow_loss(z1, z2, model.settings.hp), y1, y2, {}


def validate(config) -> None:
    if float(config.method.barlow_lambda) < 0:
        raise ConfigError(f"method.barlow_lambda: {config.method.barlow_lambda} must be >= 0")


METHOD = Method(
    name="barlow",
    build_heads=build_heads,
    forward=forward,
    defaults={"barlow_lambda": 0.0051},
    settings=lambda config: float(config.method.barlow_lambda),
    validate=validate,
)

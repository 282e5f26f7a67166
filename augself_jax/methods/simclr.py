"""SimCLR: NT-Xent over the 2N views of the global batch."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax.methods.core import Method, l2_normalize, online_views, pick
from augself_jax.models.mlp import MLP


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
    """Row i of [z1; z2] has its positive at i +- N; all other 2N - 2 rows are negatives."""
    z = l2_normalize(jnp.concatenate([z1, z2], 0))
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, positives))


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    widths = [pick(m.proj_hidden, num_features), pick(m.proj_out, 128)]
    return {"projector": MLP(proj_in, widths, dtype=dtype, rngs=rngs)}


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, z1, z2 = online_views(model, batch)
    return nt_xent(z1, z2, model.settings.temperature), y1, y2, {}


METHOD = Method(name="simclr", build_heads=build_heads, forward=forward)

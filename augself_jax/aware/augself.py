"""AugSelf (METHOD.md section 2): heads that predict the parameter difference of two views.

The targets, head sizes and losses are the registry's (`augself_jax.augs`)."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax import augs as registry
from augself_jax.augs import Ranges
from augself_jax.models.mlp import MLP

# aug -> (head output dim, loss kind), for every augmentation that has an AugSelf target.
HEADS = {e.name: (e.augself.dim, e.augself.loss) for e in registry.augself_entries()}


def enabled_augs(augself_config) -> tuple[tuple[str, float], ...]:
    """(aug, weight) for each augmentation whose weight is > 0, in HEADS order."""
    return tuple(
        (a, float(augself_config[a])) for a in HEADS if float(augself_config.get(a, 0.0)) > 0
    )


def pair_targets(
    pa: dict, pb: dict, ranges: Ranges, *, reference: bool = False, augs: tuple = tuple(HEADS)
) -> dict[str, jax.Array]:
    """Targets for the ordered pair (view a, view b), batched over the leading axis."""
    return {a: registry.get(a).augself.target(pa, pb, ranges, reference) for a in augs}


def head_loss(kind: str, pred: jax.Array, target: jax.Array) -> jax.Array:
    """MSE on tanh, BCE on logits, or CE on logits; mean over rows (and dims)."""
    pred = pred.astype(jnp.float32)
    if kind == "mse":
        return jnp.mean((jnp.tanh(pred) - target) ** 2)
    if kind == "bce":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(pred, target))
    if kind == "ce":
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(pred, target))
    raise ValueError(f"loss kind '{kind}'")


def make_heads(
    augs: tuple[str, ...], num_features: int, hidden: int, dtype: Any, rngs: nnx.Rngs
) -> nnx.Dict:
    """One head per aug: Linear(2F->h) BN ReLU Linear(h->h) BN ReLU Linear(h->dim)."""
    return nnx.Dict(
        {
            a: MLP(2 * num_features, [hidden, hidden, HEADS[a][0]], dtype=dtype, rngs=rngs)
            for a in augs
        }
    )


def augself_losses(
    heads: nnx.Dict,
    y1: jax.Array,
    y2: jax.Array,
    p1: dict,
    p2: dict,
    ranges: Ranges,
    *,
    reference: bool = False,
) -> dict[str, jax.Array]:
    """Per-aug loss over both orders: rows [y1, y2] -> t(1, 2) and [y2, y1] -> t(2, 1)."""
    names = tuple(heads.keys())
    x = jnp.concatenate([jnp.concatenate([y1, y2], -1), jnp.concatenate([y2, y1], -1)], 0)
    t12 = pair_targets(p1, p2, ranges, reference=reference, augs=names)
    t21 = pair_targets(p2, p1, ranges, reference=reference, augs=names)
    losses = {}
    for a in names:
        target = jnp.concatenate([t12[a], t21[a]], 0)
        losses[a] = head_loss(HEADS[a][1], heads[a](x), target)
    return losses

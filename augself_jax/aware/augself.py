"""AugSelf (METHOD.md section 2): heads that predict the parameter difference of two views."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax.aware.vectors import Ranges, blur_value, color_vector, crop_box
from augself_jax.models.mlp import MLP

# aug -> (head output dim, loss kind)
HEADS = {
    "crop": (4, "mse"),
    "color": (4, "mse"),
    "flip": (1, "bce"),
    "blur": (1, "mse"),
    "rotation": (4, "ce"),
    "solarize": (1, "mse"),
    "gray": (1, "bce"),
}


def enabled_augs(augself_config) -> tuple[tuple[str, float], ...]:
    """(aug, weight) for each augmentation whose weight is > 0, in HEADS order."""
    return tuple(
        (a, float(augself_config[a])) for a in HEADS if float(augself_config.get(a, 0.0)) > 0
    )


def pair_targets(
    pa: dict, pb: dict, ranges: Ranges, *, reference: bool = False, augs=tuple(HEADS)
) -> dict[str, jax.Array]:
    """Targets for the ordered pair (view a, view b), batched over the leading axis."""
    out = {}
    if "crop" in augs:
        # Offsets in view a's frame: mirror both x-centres when view a is flipped.
        mirror = jnp.asarray(pa["flip"], jnp.float32)
        out["crop"] = crop_box(pa, mirror) - crop_box(pb, mirror)
    if "color" in augs:
        out["color"] = color_vector(pa, ranges) - color_vector(pb, ranges)
    if "flip" in augs:
        out["flip"] = (jnp.asarray(pa["flip"]) == jnp.asarray(pb["flip"])).astype(jnp.float32)[
            ..., None
        ]
    if "blur" in augs:
        out["blur"] = (
            blur_value(pa, ranges, raw=reference) - blur_value(pb, ranges, raw=reference)
        )[..., None]
    if "rotation" in augs:
        out["rotation"] = jnp.mod(
            jnp.asarray(pa["rotation"], jnp.int32) - jnp.asarray(pb["rotation"], jnp.int32), 4
        )
    if "solarize" in augs:
        out["solarize"] = (
            jnp.asarray(pa["solarize"], jnp.float32) - jnp.asarray(pb["solarize"], jnp.float32)
        )[..., None]
    if "gray" in augs:
        out["gray"] = (jnp.asarray(pa["gray"]) == jnp.asarray(pb["gray"])).astype(jnp.float32)[
            ..., None
        ]
    return out


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
    augs = tuple(heads.keys())
    x = jnp.concatenate([jnp.concatenate([y1, y2], -1), jnp.concatenate([y2, y1], -1)], 0)
    t12 = pair_targets(p1, p2, ranges, reference=reference, augs=augs)
    t21 = pair_targets(p2, p1, ranges, reference=reference, augs=augs)
    losses = {}
    for a in augs:
        target = jnp.concatenate([t12[a], t21[a]], 0)
        losses[a] = head_loss(HEADS[a][1], heads[a](x), target)
    return losses

"""AugSelf (docs/METHOD.md section 2): heads that predict the parameter difference of two views.

The targets, head sizes and losses are the registry's (`augself_jax.augs`)."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax import augs as registry
from augself_jax.augs import StaticSettings
from augself_jax.errors import ConfigError, one_of, positive
from augself_jax.models.mlp import MLP

# aug -> (head output dim, loss kind), for every augmentation that has an AugSelf target.
HEADS = {e.name: (e.augself.dim, e.augself.loss) for e in registry.augself_entries()}

# `augself.color_target`: linear is the reference's normalised difference of the four
# jitter factors, whose hue entry is a line that cannot wrap; circular keeps the first
# three and replaces the hue entry by (sin, cos) of the difference of the two views' hue
# shifts (in turns), which is the same for shifts a whole turn apart.
COLOR_TARGETS = ("linear", "circular")


def head_dim(aug: str, color_target: str = "linear") -> int:
    """A head's output size: the registry's, one more for the circular colour target."""
    return HEADS[aug][0] + (aug == "color" and color_target == "circular")


def circular_color_target(pa: dict, pb: dict, settings: StaticSettings) -> jax.Array:
    """[B, 5]: the reference's brightness, contrast and saturation differences, then
    sin and cos of 2 pi (hue shift of a - hue shift of b); a shift is 0 where the
    jitter did not run."""
    linear = registry.get("color").augself.target(pa, pb, settings["color"], False)
    shift = [jnp.asarray(p["color"], jnp.float32)[..., 3]
             * jnp.asarray(p["color_applied"], jnp.float32) for p in (pa, pb)]
    angle = 2.0 * jnp.pi * (shift[0] - shift[1])
    return jnp.concatenate([linear[..., :3], jnp.sin(angle)[..., None],
                            jnp.cos(angle)[..., None]], -1)


def enabled_augs(augself_config) -> tuple[tuple[str, float], ...]:
    """(aug, weight) for each augmentation whose weight is > 0, in HEADS order."""
    return tuple(
        (a, float(augself_config[a])) for a in HEADS if float(augself_config.get(a, 0.0)) > 0
    )


def validate_config(config) -> None:
    """ConfigError naming the first bad field of the `augself` section."""
    a = config.augself
    known = set(HEADS) | {"hidden", "reference", "ss_only", "color_target"}
    for key in a.keys():
        one_of("augself key", key, sorted(known))
    for aug in HEADS:
        if float(a[aug]) < 0:
            raise ConfigError(f"augself.{aug}: weight {a[aug]} is below zero; allowed: >= 0 "
                              "(0 disables the head)")
    if a.get("ss_only", False) and not enabled_augs(a):
        raise ConfigError("augself.ss_only: True trains the AugSelf heads alone, but no head "
                          "is on; allowed: ss_only False, or a weight > 0 for one of "
                          f"{', '.join(HEADS)}")
    positive("augself.hidden", a.hidden)
    one_of("augself.color_target", a.get("color_target", "linear"), COLOR_TARGETS)


def pair_targets(
    pa: dict, pb: dict, settings: StaticSettings, *, reference: bool = False,
    augs: tuple = tuple(HEADS), color_target: str = "linear",
) -> dict[str, jax.Array]:
    """Targets for the ordered pair (view a, view b), batched over the leading axis; each
    augmentation's target reads its own part of `settings`."""
    return {a: circular_color_target(pa, pb, settings)
            if a == "color" and color_target == "circular"
            else registry.get(a).augself.target(pa, pb, settings[a], reference) for a in augs}


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
    augs: tuple[str, ...], num_features: int, hidden: int, dtype: Any, rngs: nnx.Rngs,
    color_target: str = "linear",
) -> nnx.Dict:
    """One head per aug: Linear(2F->h) BN ReLU Linear(h->h) BN ReLU Linear(h->dim)."""
    return nnx.Dict(
        {
            a: MLP(2 * num_features, [hidden, hidden, head_dim(a, color_target)], dtype=dtype,
                   rngs=rngs)
            for a in augs
        }
    )


def augself_losses(
    heads: nnx.Dict,
    y1: jax.Array,
    y2: jax.Array,
    p1: dict,
    p2: dict,
    settings: StaticSettings,
    *,
    reference: bool = False,
    color_target: str = "linear",
) -> dict[str, jax.Array]:
    """Per-aug loss over both orders: rows [y1, y2] -> t(1, 2) and [y2, y1] -> t(2, 1)."""
    names = tuple(heads.keys())
    x = jnp.concatenate([jnp.concatenate([y1, y2], -1), jnp.concatenate([y2, y1], -1)], 0)
    t12 = pair_targets(p1, p2, settings, reference=reference, augs=names,
                       color_target=color_target)
    t21 = pair_targets(p2, p1, settings, reference=reference, augs=names,
                       color_target=color_target)
    losses = {}
    for a in names:
        target = jnp.concatenate([t12[a], t21[a]], 0)
        losses[a] = head_loss(HEADS[a][1], heads[a](x), target)
    return losses

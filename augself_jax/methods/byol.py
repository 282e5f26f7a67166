"""BYOL: online predictor against a momentum target whose tau follows a cosine schedule."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.errors import in_range, one_of
from augself_jax.methods.core import (
    Method,
    cosine,
    cosine_momentum,
    online_views,
    pick,
    predictions,
    target_views,
)
from augself_jax.models.mlp import MLP

AUGSELF_VIEW2 = ("online", "target")


@dataclass(frozen=True)
class Hyper:
    tau_base: float
    augself_view2: str


def byol_loss(p1: jax.Array, p2: jax.Array, t1: jax.Array, t2: jax.Array) -> jax.Array:
    """(2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)), averaged over the batch."""
    return jnp.mean(2 - 2 * cosine(p1, t2)) + jnp.mean(2 - 2 * cosine(p2, t1))


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    out = pick(m.proj_out, 256)
    return {
        "projector": MLP(proj_in, [pick(m.proj_hidden, 4096), out], dtype=dtype, rngs=rngs),
        "predictor": MLP(out, [pick(m.pred_hidden, 4096), out], dtype=dtype, rngs=rngs),
    }


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, z1, z2 = online_views(model, batch)
    p1, p2 = predictions(model, z1, z2)
    _, ty2, t1, t2 = target_views(model, batch)
    # AugSelf reads both views' online features, as the reference does; "target" takes
    # view 2 from the momentum encoder instead (no gradient through it).
    view2 = ty2 if model.settings.hp.augself_view2 == "target" else y2
    return byol_loss(p1, p2, t1, t2), y1, view2, {}


def validate(config) -> None:
    in_range("method.byol_tau_base", config.method.byol_tau_base, 0.0, 1.0)
    one_of("method.byol_augself_view2", config.method.byol_augself_view2, AUGSELF_VIEW2)


METHOD = Method(
    name="byol",
    build_heads=build_heads,
    forward=forward,
    defaults={
        "byol_tau_base": 0.996,  # cosine from this to 1 at the last step
        "byol_augself_view2": "online",  # online (the reference) | target: AugSelf's view 2
    },
    settings=lambda c: Hyper(float(c.method.byol_tau_base), str(c.method.byol_augself_view2)),
    validate=validate,
    momentum=lambda hp, step, total_steps: cosine_momentum(step, total_steps, hp.tau_base),
)

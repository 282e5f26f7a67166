"""SimSiam: predictor against stop-gradient projections; the predictor keeps a constant lr."""

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.errors import ConfigError
from augself_jax.methods.core import Method, cosine, online_views, pick, predictions
from augself_jax.models.mlp import MLP


def simsiam_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """-0.5 (cos(p1, sg z2) + cos(p2, sg z1)), averaged over the batch."""
    sg = jax.lax.stop_gradient
    return -0.5 * (jnp.mean(cosine(p1, sg(z2))) + jnp.mean(cosine(p2, sg(z1))))


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    dim = pick(m.proj_out, 2048)
    hidden = pick(m.proj_hidden, 2048)
    layers = int(m.simsiam_proj_layers)
    return {
        "projector": MLP(
            proj_in, [hidden] * (layers - 1) + [dim], last_bn="affine", dtype=dtype, rngs=rngs
        ),
        "predictor": MLP(dim, [pick(m.pred_hidden, 512), dim], dtype=dtype, rngs=rngs),
    }


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, z1, z2 = online_views(model, batch)
    p1, p2 = predictions(model, z1, z2)
    return simsiam_loss(p1, p2, z1, z2), y1, y2, {}


def validate(config) -> None:
    layers = config.method.simsiam_proj_layers
    if layers not in (2, 3):
        raise ConfigError(f"method.simsiam_proj_layers: '{layers}' is unknown; allowed: 2, 3")


def constant_lr(config) -> tuple[str, ...]:
    # The reference's fix_lr: the predictor learns at the constant (scaled) base lr.
    return ("predictor",) if config.method.simsiam_fixed_predictor_lr else ()


def recipe(config) -> None:
    if config.preset in ("imagenet100", "imagenet1k"):
        config.method.simsiam_proj_layers = 3  # docs/METHOD.md section 4


METHOD = Method(
    name="simsiam",
    build_heads=build_heads,
    forward=forward,
    defaults={"simsiam_proj_layers": 2,  # 3 at ImageNet scale
              "simsiam_fixed_predictor_lr": True},
    validate=validate,
    constant_lr=constant_lr,
    recipe=recipe,
)

"""MoCo v3: a symmetric contrastive loss between online predictions and momentum keys.

As the official MoCo v3 (which the CASSLE reference adapts): BN projector (2 layers on a
ResNet, 3 on a ViT) and BN predictor, every Linear without a bias, both ending in a
BatchNorm without affine parameters except the ResNet predictor, which ends in the Linear
(`mocov3_predictor_end=bn`: in the BN, as CASSLE's MoCo v3 on a ResNet); keys from a
momentum copy of the backbone and projector whose momentum rises from `mocov3_momentum`
to 1 by a cosine over the steps (the CASSLE reference: constant 0.999,
`mocov3_momentum_schedule=constant`); the other images of the global batch are the
negatives (no queue); loss ctr(q1, k2) + ctr(q2, k1) with each cross-entropy scaled by 2T.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax.errors import ConfigError, in_range, one_of
from augself_jax.methods.core import (
    Method,
    cosine_momentum,
    l2_normalize,
    online_views,
    pick,
    predictions,
    target_views,
)
from augself_jax.models.mlp import MLP
from augself_jax.models.registry import is_vit

SCHEDULES = ("cosine", "constant")
PREDICTOR_ENDS = ("auto", "linear", "bn")


@dataclass(frozen=True)
class Hyper:
    temperature: float
    momentum: float
    schedule: str


def momentum(hp: Hyper, step, total_steps):
    """The official MoCo v3's cosine from `mocov3_momentum` to 1 over the steps, or the CASSLE
    reference's constant momentum."""
    if hp.schedule == "constant":
        return hp.momentum
    return cosine_momentum(step, total_steps, hp.momentum)


def temperature(config) -> float:
    """`mocov3_temperature`, or -1: the reference's 0.2 for a ViT, 1.0 for a ResNet."""
    t = float(config.method.mocov3_temperature)
    if t > 0:
        return t
    return 0.2 if is_vit(config.model.backbone) else 1.0


def contrastive(q: jax.Array, k: jax.Array, temperature: float) -> jax.Array:
    """CE of (q_i . k_j / T) over j with the positive j = i, times 2T; q, k are l2-normalised.

    Every key of the global batch is a candidate, as the reference's gathered keys.
    """
    q, k = l2_normalize(q), l2_normalize(k)
    logits = q @ k.T / temperature
    labels = jnp.arange(q.shape[0])
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return ce * 2.0 * temperature


def mocov3_loss(q1, q2, k1, k2, temperature: float) -> jax.Array:
    return contrastive(q1, k2, temperature) + contrastive(q2, k1, temperature)


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    vit = is_vit(config.model.backbone)
    layers = int(m.mocov3_proj_layers) if m.mocov3_proj_layers > 0 else (3 if vit else 2)
    hidden, out = pick(m.proj_hidden, 4096), pick(m.proj_out, 256)
    widths = [hidden] * (layers - 1) + [out]
    # Every Linear without a bias, as the official builder (`bias=False`); where a BN
    # follows, the BN's shift stands in for it.
    return {
        "projector": MLP(proj_in, widths, last_bn="plain", use_bias=False, dtype=dtype,
                         rngs=rngs),
        "predictor": MLP(out, [pick(m.pred_hidden, 4096), out],
                         last_bn="plain" if predictor_ends_in_bn(config) else "none",
                         use_bias=False, dtype=dtype, rngs=rngs),
    }


def predictor_ends_in_bn(config) -> bool:
    """`mocov3_predictor_end`: auto is the official MoCo v3 (an affine-free BN on a ViT, a
    bias-free Linear on a ResNet); bn is CASSLE's MoCo v3, which ends in the BN on a
    ResNet too; linear ends in the Linear on either."""
    end = str(config.method.mocov3_predictor_end)
    return end == "bn" or (end == "auto" and is_vit(config.model.backbone))


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, z1, z2 = online_views(model, batch)
    q1, q2 = predictions(model, z1, z2)
    _, _, k1, k2 = target_views(model, batch)
    # Both views pass through the online encoder, so AugSelf reads both online features.
    return mocov3_loss(q1, q2, k1, k2, model.settings.hp.temperature), y1, y2, {}


def validate(config) -> None:
    m = config.method
    in_range("method.mocov3_momentum", m.mocov3_momentum, 0.0, 1.0)
    if float(m.mocov3_temperature) == 0:
        raise ConfigError("method.mocov3_temperature: 0 must be > 0, or -1 (0.2 for a ViT, "
                          "1.0 for a ResNet)")
    one_of("method.mocov3_proj_layers", m.mocov3_proj_layers, (-1, 2, 3))
    one_of("method.mocov3_momentum_schedule", m.mocov3_momentum_schedule, SCHEDULES)
    one_of("method.mocov3_predictor_end", m.mocov3_predictor_end, PREDICTOR_ENDS)


def recipe(config) -> None:
    """The reference's optimiser: AdamW (lr 1.5e-4 x B/256, wd 0.1, 40 warm-up epochs) for a
    ViT, LARS (lr 0.6 x B/256, wd 1e-6, 10 warm-up epochs) for a ResNet. The built-in
    dataset's short schedule keeps its own warm-up."""
    o = config.optimizer
    if is_vit(config.model.backbone):
        o.update(name="adamw", base_lr=1.5e-4, weight_decay=0.1)
        warmup = 40.0
    else:
        o.update(name="lars", base_lr=0.6, weight_decay=1e-6)
        warmup = 10.0
    if not config.preset.startswith("shapes"):  # shapes, shapes_hue
        o.warmup_epochs = warmup


METHOD = Method(
    name="mocov3",
    build_heads=build_heads,
    forward=forward,
    defaults={
        "mocov3_temperature": -1.0,  # -1: 0.2 for a ViT, 1.0 for a ResNet (the reference)
        "mocov3_momentum": 0.99,  # cosine from this to 1 at the last step
        # cosine (the official MoCo v3) | constant (the CASSLE reference, with 0.999)
        "mocov3_momentum_schedule": "cosine",
        "mocov3_proj_layers": -1,  # -1: 3 for a ViT, 2 for a ResNet (the reference)
        # auto (the official: BN on a ViT, Linear on a ResNet) | linear | bn (CASSLE's
        # MoCo v3 on a ResNet: the predictor ends in an affine-free BN)
        "mocov3_predictor_end": "auto",
    },
    settings=lambda c: Hyper(temperature(c), float(c.method.mocov3_momentum),
                             str(c.method.mocov3_momentum_schedule)),
    validate=validate,
    momentum=momentum,
    recipe=recipe,
)

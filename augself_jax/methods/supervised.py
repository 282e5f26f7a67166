"""Supervised pretraining: a linear classifier on backbone features, cross-entropy on both views."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax.errors import positive
from augself_jax.methods.core import Method, online_views


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    )


def num_classes(config) -> int:
    if config.method.num_classes > 0:
        return int(config.method.num_classes)
    from augself_jax.data import registry as datasets  # the data owner's registry

    return int(datasets.get(config.data.dataset).num_classes)


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    # The classifier plays the projector's role, so CASSLE conditions its input.
    return {"classifier": nnx.Linear(proj_in, num_classes(config), dtype=dtype, rngs=rngs)}


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    y1, y2, logits1, logits2 = online_views(model, batch, head="classifier")
    loss = 0.5 * (cross_entropy(logits1, batch["label"]) + cross_entropy(logits2, batch["label"]))
    acc = jnp.mean((jnp.argmax(logits1, -1) == batch["label"]).astype(jnp.float32))
    return loss, y1, y2, {"train_acc": acc}


METHOD = Method(
    name="supervised",
    build_heads=build_heads,
    forward=forward,
    defaults={"num_classes": -1},  # -1 takes it from the dataset registry
    validate=lambda c: positive("method.num_classes", c.method.num_classes, allow_default=True),
)

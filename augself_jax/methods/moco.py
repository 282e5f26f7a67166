"""MoCo v2: view-1 queries against view-2 keys of a momentum encoder, and a queue of negatives."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from augself_jax.errors import ConfigError, in_range, one_of, positive
from augself_jax.methods.core import Method, Queue, l2_normalize, pick, project
from augself_jax.methods.simclr import build_heads  # MoCo v2's projector is SimCLR's


@dataclass(frozen=True)
class Hyper:
    momentum: float
    enqueue: str


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float) -> jax.Array:
    """CE over [q.k, q.queue] / T with the positive at index 0; q, k, queue rows unit-norm."""
    pos = jnp.sum(q * k, axis=-1, keepdims=True)
    neg = q @ queue.T
    logits = jnp.concatenate([pos, neg], -1) / temperature
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(q.shape[0], jnp.int32))
    )


def init_queue(config, rngs: nnx.Rngs) -> jax.Array:
    """Random unit vectors, as both the paper and the reference start."""
    dim = pick(config.method.proj_out, 128)
    return l2_normalize(jax.random.normal(rngs.params(), (int(config.method.queue_size), dim)))


def init_state(config, rngs: nnx.Rngs) -> dict:
    return {"queue": Queue(init_queue(config, rngs)), "queue_ptr": Queue(jnp.zeros((), jnp.int32))}


def enqueue(model, keys: jax.Array) -> None:
    """Overwrite the oldest len(keys) rows (a ring buffer), in place."""
    queue, ptr = model.queue[...], model.queue_ptr[...]
    idx = (ptr + jnp.arange(keys.shape[0])) % queue.shape[0]
    model.queue[...] = queue.at[idx].set(jax.lax.stop_gradient(keys).astype(queue.dtype))
    model.queue_ptr[...] = (ptr + keys.shape[0]) % queue.shape[0]


def forward(model, batch: dict, step):
    del step  # no part of this loss depends on the schedule
    s = model.settings
    y1 = model.backbone(batch["view1"])
    q = l2_normalize(project(model, y1, batch["params1"]))
    y2 = jax.lax.stop_gradient(model.target_backbone(batch["view2"]))
    k = jax.lax.stop_gradient(l2_normalize(project(model, y2, batch["params2"], target=True)))
    loss = info_nce(q, k, jax.lax.stop_gradient(model.queue[...]), s.temperature)
    enqueue(model, k if s.hp.enqueue == "keys" else q)
    # AugSelf reads view 2 from the key (momentum) encoder, as the reference does.
    return loss, y1, y2, {}


def validate(config) -> None:
    me = config.method
    in_range("method.moco_momentum", me.moco_momentum, 0.0, 1.0)
    one_of("method.moco_enqueue", me.moco_enqueue, ("keys", "queries"))
    positive("method.queue_size", me.queue_size)
    if me.queue_size < config.batch_size:
        raise ConfigError(
            f"method.queue_size: {me.queue_size} is smaller than batch_size "
            f"{config.batch_size}; a step enqueues the whole batch"
        )


METHOD = Method(
    name="moco",
    build_heads=build_heads,
    forward=forward,
    defaults={
        "moco_momentum": 0.999,  # constant
        "queue_size": 65536,
        "moco_enqueue": "keys",  # keys (MoCo paper) | queries (the AugSelf reference)
    },
    settings=lambda c: Hyper(float(c.method.moco_momentum), str(c.method.moco_enqueue)),
    validate=validate,
    momentum=lambda hp, step, total_steps: hp.momentum,
    init_state=init_state,
)

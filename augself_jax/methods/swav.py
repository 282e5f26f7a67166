"""SwAV as in the AugSelf reference: two views swap their Sinkhorn-Knopp cluster assignments.

Each view's normalised projection is scored against unit-norm prototypes; Sinkhorn-Knopp
turns the scores into balanced soft assignments (codes) without gradient, and each view's
softmax(scores / T) predicts the other view's codes. As the reference: 2048-128 projector,
100 prototypes renormalised every step and frozen for the first 409 updates, epsilon 0.05,
3 iterations, T = 0.1, two views (no multi-crop) and no queue.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.errors import ConfigError, positive
from augself_jax.methods.core import Method, l2_normalize, pick, project
from augself_jax.models.mlp import MLP


@dataclass(frozen=True)
class Hyper:
    epsilon: float
    iterations: int
    temperature: float
    freeze_steps: int


def sinkhorn(scores: jax.Array, epsilon: float, iterations: int) -> jax.Array:
    """Codes [B, K] from scores [B, K]: Q = exp(scores / eps), then alternately scaled so
    that each prototype's total is 1/K and each example's 1/B; finally each row sums to 1.

    The global maximum is subtracted before exp (a constant factor, which the first
    normalisation removes) so no entry overflows. No gradient flows through the codes.
    """
    s = jax.lax.stop_gradient(scores.astype(jnp.float32)) / epsilon
    q = jnp.exp(s - jnp.max(s)).T  # [K, B], as the reference
    q = q / jnp.sum(q)
    k, b = q.shape
    for _ in range(iterations):
        q = q * ((1.0 / k) / jnp.sum(q, axis=1, keepdims=True))
        q = q * ((1.0 / b) / jnp.sum(q, axis=0, keepdims=True))
    return (q / jnp.sum(q, axis=0, keepdims=True)).T


def swav_loss(s1: jax.Array, s2: jax.Array, epsilon: float, iterations: int,
              temperature: float) -> jax.Array:
    """-mean sum q1 log softmax(s2 / T) - mean sum q2 log softmax(s1 / T) (the reference's sum
    of the two swapped terms), with q = sinkhorn(s)."""
    q1 = sinkhorn(s1, epsilon, iterations)
    q2 = sinkhorn(s2, epsilon, iterations)
    log_p1 = jax.nn.log_softmax(s1.astype(jnp.float32) / temperature, axis=-1)
    log_p2 = jax.nn.log_softmax(s2.astype(jnp.float32) / temperature, axis=-1)
    return -jnp.mean(jnp.sum(q1 * log_p2, -1)) - jnp.mean(jnp.sum(q2 * log_p1, -1))


def _normalized_rows(kernel: jax.Array) -> jax.Array:
    # The kernel is [dim, K]: prototype k is column k.
    return l2_normalize(kernel.T).T


def build_heads(config, num_features: int, proj_in: int, dtype, rngs: nnx.Rngs) -> dict:
    m = config.method
    out = pick(m.proj_out, 128)
    prototypes = nnx.Linear(out, int(m.swav_prototypes), use_bias=False, dtype=dtype, rngs=rngs,
                            kernel_init=nnx.initializers.variance_scaling(
                                1.0 / 3.0, "fan_in", "uniform"))  # torch's Linear default
    prototypes.kernel[...] = _normalized_rows(prototypes.kernel[...])
    return {
        "projector": MLP(proj_in, [pick(m.proj_hidden, 2048), out], dtype=dtype, rngs=rngs),
        "prototypes": prototypes,
    }


def scores(model, y: jax.Array, params: dict, frozen) -> jax.Array:
    """Projection of `y` (normalised) against the prototypes; while `frozen` the prototypes
    pass no gradient (the reference drops their gradient for its first steps)."""
    z = l2_normalize(project(model, y, params))
    kernel = model.prototypes.kernel[...]
    kernel = jnp.where(frozen, jax.lax.stop_gradient(kernel), kernel)
    dtype = model.prototypes.dtype or jnp.float32
    return (z.astype(dtype) @ kernel.astype(dtype)).astype(jnp.float32)


def forward(model, batch: dict, step):
    hp: Hyper = model.settings.hp
    frozen = jnp.asarray(step) < hp.freeze_steps
    y1, y2 = model.backbone(batch["view1"]), model.backbone(batch["view2"])
    s1 = scores(model, y1, batch["params1"], frozen)
    s2 = scores(model, y2, batch["params2"], frozen)
    loss = swav_loss(s1, s2, hp.epsilon, hp.iterations, hp.temperature)
    return loss, y1, y2, {}


def normalize_prototypes(model) -> None:
    """Unit-norm prototypes after every update, as the reference renormalises each step."""
    model.prototypes.kernel[...] = _normalized_rows(model.prototypes.kernel[...])


def validate(config) -> None:
    m = config.method
    positive("method.swav_prototypes", m.swav_prototypes)
    positive("method.swav_iterations", m.swav_iterations)
    for f in ("swav_epsilon", "swav_temperature"):
        if float(m[f]) <= 0:
            raise ConfigError(f"method.{f}: {m[f]} must be > 0")
    if not isinstance(m.swav_freeze_steps, int) or m.swav_freeze_steps < 0:
        raise ConfigError(f"method.swav_freeze_steps: {m.swav_freeze_steps!r} must be an "
                          "integer >= 0")


def recipe(config) -> None:
    if config.preset.startswith("shapes"):  # shapes, shapes_hue
        # The reference freezes the prototypes for 410 of its 82,000 steps (STL-10, 200
        # epochs); the built-in dataset's 300-step schedule would never train them.
        config.method.swav_freeze_steps = 0


METHOD = Method(
    name="swav",
    build_heads=build_heads,
    forward=forward,
    defaults={
        "swav_prototypes": 100,  # the AugSelf reference (the SwAV paper: 3000 on ImageNet)
        "swav_epsilon": 0.05,
        "swav_iterations": 3,
        "swav_temperature": 0.1,
        # Prototypes get no gradient for this many first updates: the reference's
        # `iteration < 410` with ignite's iterations counted from 1.
        "swav_freeze_steps": 409,
    },
    settings=lambda c: Hyper(float(c.method.swav_epsilon), int(c.method.swav_iterations),
                             float(c.method.swav_temperature), int(c.method.swav_freeze_steps)),
    validate=validate,
    after_update=normalize_prototypes,
    recipe=recipe,
)

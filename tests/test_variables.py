"""models.variables: flax's BatchNorm with RunningStat statistics computes what flax's own
does, in and out of jit; the backbones and heads use it, and the momentum copies and the
queue are assigned the same way."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from augself_jax.methods.core import Momentum, Queue
from augself_jax.models.mlp import MLP
from augself_jax.models.resnet import ResNet
from augself_jax.models.variables import AssignedUnderJit, RunningStat, batch_norm


def _stats(norm: nnx.BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(norm.mean[...]), np.asarray(norm.var[...])


def test_running_averages_match_flax_batch_norm_under_jit_and_eagerly():
    x = jax.random.normal(jax.random.key(0), (16, 6)) * 3.0 + 1.0
    ours = batch_norm(6, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    flax_own = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    assert isinstance(ours.mean, RunningStat) and isinstance(ours.var, RunningStat)

    @nnx.jit
    def train_call(norm, x):
        return norm(x)

    for _ in range(2):  # two updates under jit
        np.testing.assert_array_equal(train_call(ours, x), train_call(flax_own, x))
    for got, want in zip(_stats(ours), _stats(flax_own), strict=True):
        np.testing.assert_array_equal(got, want)
    # by hand: two steps of m <- 0.9 m + 0.1 batch mean from m = 0
    np.testing.assert_allclose(_stats(ours)[0], 0.19 * np.mean(np.asarray(x), axis=0),
                               rtol=1e-5)
    # eagerly, and a partial assignment, as flax does them
    ours(x)
    flax_own(x)
    ours.mean[0] = 5.0
    flax_own.mean[0] = 5.0
    for got, want in zip(_stats(ours), _stats(flax_own), strict=True):
        np.testing.assert_array_equal(got, want)


def test_backbones_and_heads_keep_running_stats():
    for model in (ResNet("resnet18", width=4, rngs=nnx.Rngs(0)),
                  MLP(8, (8, 4), last_bn="plain", rngs=nnx.Rngs(0))):
        stats = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.BatchStat)]
        assert stats and all(isinstance(v, RunningStat) for v in stats), type(model)
    assert jnp.all(jnp.isfinite(stats[0][...]))


def test_momentum_copies_and_the_queue_are_assigned_under_jit_as_running_stats():
    assert issubclass(Momentum, AssignedUnderJit) and issubclass(Queue, AssignedUnderJit)

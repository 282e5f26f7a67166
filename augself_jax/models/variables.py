"""nnx variables assigned in place under jit (running averages, momentum copies, queues),
and flax's `nnx.BatchNorm` built with them."""

from typing import Any

import jax
from flax import nnx


class AssignedUnderJit:
    """A mixin for an `nnx.Variable` type that is assigned in full inside the train step
    (`var[...] = value`). For a traced value, flax's `[...]` assignment first asks it for
    its sharding, and the tracer, which has none, builds an error message by walking back
    through the program traced so far, once per variable: two BYOL + AugSelf steps of the
    tests' tiny model took 22 s with that, 13 s without (momentum copies and batch-norm
    statistics the same way). A traced full assignment replaces the value directly, as
    flax's own path ends up doing; any other assignment is flax's."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key is Ellipsis and isinstance(value, jax.core.Tracer):
            self.set_value(value)
        else:
            super().__setitem__(key, value)


class RunningStat(AssignedUnderJit, nnx.BatchStat):
    """A batch-norm running average (`nnx.BatchNorm` updates it with `stat[...] = v`)."""


def batch_norm(num_features: int, **kwargs: Any) -> nnx.BatchNorm:
    """`nnx.BatchNorm(num_features, **kwargs)` with `RunningStat` mean and variance."""
    norm = nnx.BatchNorm(num_features, **kwargs)
    norm.mean = RunningStat(norm.mean[...])
    norm.var = RunningStat(norm.var[...])
    return norm

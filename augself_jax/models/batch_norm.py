"""flax's `nnx.BatchNorm`, with running statistics that are cheap to update under jit."""

from typing import Any

import jax
from flax import nnx


class RunningStat(nnx.BatchStat):
    """A batch-norm running average. `nnx.BatchNorm` updates it with `stat[...] = value`;
    for a traced value, flax's `[...]` assignment first asks it for its sharding, and the
    tracer, which has none, builds an error message by walking back through the program
    traced so far. Once per statistic, that was 4 of the 17 s that two BYOL + AugSelf steps
    of the tests' tiny model took. A traced full assignment replaces the value directly,
    as flax's own path ends up doing; any other assignment is flax's."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key is Ellipsis and isinstance(value, jax.core.Tracer):
            self.set_value(value)
        else:
            super().__setitem__(key, value)


def batch_norm(num_features: int, **kwargs: Any) -> nnx.BatchNorm:
    """`nnx.BatchNorm(num_features, **kwargs)` with `RunningStat` mean and variance."""
    norm = nnx.BatchNorm(num_features, **kwargs)
    norm.mean = RunningStat(norm.mean[...])
    norm.var = RunningStat(norm.var[...])
    return norm

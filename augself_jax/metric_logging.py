"""Metric logging: the one TensorBoard writer of a run, and the mean of the step metrics over
a log interval.

The writer is made once, in the shared start-up (app.run), and handed to the trainer or the
evaluation; only process 0 writes, the others get a writer that drops everything. Step
metrics are summed on the device as they come (one small dispatched add per step, no host
sync); the host fetches the sum only at a log step, together with that step's own values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from clu import metric_writers


def make_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard event files in `workdir` (process 0); a writer that writes nothing on the
    other processes. The readable line per log step is the trainer's progress line (clu's
    LoggingWriter would print the same numbers a second time)."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


@jax.jit
def _add(total: dict, metrics: dict) -> dict:
    return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), total, metrics)


class IntervalMean:
    """The running sum of each step's metrics since the last `reset`, kept on the device."""

    def __init__(self) -> None:
        self._sum: dict | None = None
        self.count = 0

    def add(self, metrics: dict[str, jax.Array]) -> None:
        if self._sum is None:
            self._sum = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
        else:
            self._sum = _add(self._sum, metrics)
        self.count += 1

    def fetch(self, current: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        """(this step's metrics, the interval's means) as floats, in one transfer."""
        current, total = jax.device_get((current, self._sum))
        means = {k: float(v) / self.count for k, v in (total or {}).items()}
        return {k: float(v) for k, v in current.items()}, means

    def reset(self) -> None:
        self._sum, self.count = None, 0

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
import ml_collections
from clu import metric_writers


def make_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard event files in `workdir` (process 0); a writer that writes nothing on the
    other processes. The readable line per log step is the trainer's progress line (clu's
    LoggingWriter would print the same numbers a second time)."""
    if jax.process_index() != 0:
        return metric_writers.MultiWriter([])
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


def config_hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
    """The config's leaves under dotted names, as TensorBoard's hparams take them (scalars;
    anything else, such as a tuple or None, as its text)."""
    flat = {}

    def walk(prefix: str, node: Any) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                walk(f"{name}.", value)
            elif isinstance(value, (bool, int, float, str)):
                flat[name] = value
            else:
                flat[name] = str(value)

    walk("", config.to_dict())
    return flat


def write_config(writer: metric_writers.MetricWriter, config: ml_collections.ConfigDict
                 ) -> None:
    """The resolved config at step 0: as text (`config`, the JSON of config.json) and as
    hparams (TensorBoard's HPARAMS tab, to compare runs by any field)."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    writer.write_texts(0, {"config": f"```\n{text}\n```"})  # a code block keeps the layout
    writer.write_hparams(config_hparams(config))


def write_sample_views(writer: metric_writers.MetricWriter, config: ml_collections.ConfigDict,
                       num_images: int = 16) -> None:
    """The preview's captioned grid of the config's first `num_images` examples and their
    two views (data/preview.py) as image `sample_views` at step 0."""
    import numpy as np

    from augself_jax.data.preview import sample_views

    _, image = sample_views(config, num_images)
    writer.write_images(0, {"sample_views": np.asarray(image)[None]})


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

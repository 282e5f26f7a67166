"""Frozen-backbone features, sharded over every device.

The backbone runs in eval mode (batch norm with running statistics) on fixed-shape global
batches split over the mesh's 'data' axis; normalisation with the PRETRAINING dataset's
mean and std happens here, on the device (the host ships uint8). Padded rows are dropped
with the mask after the features come back, so one compile serves a whole split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def eval_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """All devices on one 'data' axis: evaluation is data-parallel only."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


class FeatureExtractor:
    """`extractor(batches)` -> dict of NumPy arrays: `features` [N, F] and every other key of
    the batches (labels), padded rows removed. `fn(model, x)` picks what to compute
    (default: the pooled backbone output)."""

    def __init__(self, backbone: nnx.Module, mesh: jax.sharding.Mesh, mean: Sequence[float],
                 std: Sequence[float],
                 fn: Callable[[nnx.Module, jax.Array], jax.Array | dict] | None = None):
        self.mesh = mesh
        graphdef, state = nnx.split(backbone)
        self._state = jax.device_put(state, NamedSharding(mesh, P()))
        self._rows = NamedSharding(mesh, P("data"))
        mean = jnp.asarray(mean, jnp.float32)
        std = jnp.asarray(std, jnp.float32)
        fn = fn or (lambda model, x: model(x))

        def extract(state, batch):
            model = nnx.merge(graphdef, state)
            x = (batch.pop("image").astype(jnp.float32) / 255.0 - mean) / std
            out = jax.tree.map(lambda f: f.astype(jnp.float32), fn(model, x))
            return out, batch

        self._extract = jax.jit(extract, out_shardings=self._rows)

    def global_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self._rows, v)
                for k, v in host_batch.items()}

    def __call__(self, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        outs, others = [], []
        for host_batch in batches:
            out, rest = self._extract(self._state, self.global_batch(host_batch))
            outs.append(out)
            others.append(rest)
        fetch = (jax.device_get if jax.process_count() == 1
                 else lambda t: multihost_utils.process_allgather(t, tiled=True))
        outs, others = fetch((outs, others))
        rest = {k: np.concatenate([o[k] for o in others]) for k in others[0]}
        mask = rest.pop("mask").astype(bool)
        result = {k: v[mask] for k, v in rest.items()}
        if isinstance(outs[0], dict):
            for k in outs[0]:
                result[k] = np.concatenate([o[k] for o in outs])[mask]
        else:
            result["features"] = np.concatenate(outs)[mask]
        return result

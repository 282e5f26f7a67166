"""Frozen-backbone features, sharded over every device: the one feature extractor of
evaluate.py and of the trainer's kNN monitor.

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

from augself_jax.data.global_batch import make_global_batch
from augself_jax.data.photometric import normalize


def eval_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """All devices on one 'data' axis: evaluation is data-parallel only."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


class FeatureExtractor:
    """`extractor(backbone, batches)` -> dict of NumPy arrays: `features` [N, F] and every
    other key of the host batches (labels), padded rows removed. Each batch is this
    process's rows of a global batch (`image` uint8, `mask`, labels). `fn(model, x)` picks
    what to compute (default: the pooled backbone output).

    The compiled function depends on the backbone's structure only, not its values, so the
    trainer's monitor passes a new backbone each time without a recompile."""

    def __init__(self, mesh: jax.sharding.Mesh, mean: Sequence[float], std: Sequence[float],
                 fn: Callable[[nnx.Module, jax.Array], jax.Array | dict] | None = None):
        self.mesh = mesh
        self._replicated = NamedSharding(mesh, P())
        fn = fn or (lambda model, x: model(x))

        def extract(graphdef, state, batch):
            model = nnx.merge(graphdef, state)
            x = normalize(batch.pop("image").astype(jnp.float32) / 255.0, mean, std)
            out = jax.tree.map(lambda f: f.astype(jnp.float32), fn(model, x))
            return out, batch

        self._extract = jax.jit(extract, static_argnums=0,
                                out_shardings=NamedSharding(mesh, P("data")))

    def __call__(self, backbone: nnx.Module,
                 batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        graphdef, state = nnx.split(backbone)
        state = jax.device_put(state, self._replicated)
        outs, others = [], []
        for host_batch in batches:
            out, rest = self._extract(graphdef, state, make_global_batch(host_batch, self.mesh))
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

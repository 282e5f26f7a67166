"""Host-local numpy batches -> global jax.Arrays sharded over the mesh's 'data' axis."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_global_batch(host_batch, mesh: Mesh, axis: str = "data"):
    """Every leaf [b, ...] (this process's rows) becomes one global [b * processes, ...]
    array whose leading axis is split over `axis` (replicated over the other axes)."""
    sharding = NamedSharding(mesh, PartitionSpec(axis))

    def to_global(x):
        x = np.asarray(x)
        if x.dtype == np.int64 and not jax.config.jax_enable_x64:
            x = x.astype(np.int32)  # example indices: jax would truncate with a warning
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(to_global, host_batch)

"""Host-local numpy batches -> global jax.Arrays sharded over the mesh's 'data' axis, and
the one check that a global batch size splits evenly over processes and that axis."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from augself_jax.errors import ConfigError


def check_batch_divides(field: str, batch_size: int, *, data_axis: int = 1,
                        process_count: int = 1) -> None:
    """ConfigError naming `field` unless `batch_size` is positive and splits evenly over
    `process_count` processes (each feeds its rows) and the `data_axis` devices of the
    mesh's data axis (each computes on its rows)."""
    if batch_size < 1:
        raise ConfigError(f"{field}: {batch_size} must be > 0")
    if batch_size % process_count:
        raise ConfigError(f"{field}: {batch_size} does not divide over {process_count} "
                          f"processes; allowed: a multiple of {process_count}")
    if data_axis < 1 or batch_size % data_axis:
        raise ConfigError(f"{field}: {batch_size} does not divide over the {data_axis} devices "
                          f"of the mesh's data axis; allowed: a multiple of {data_axis}")


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

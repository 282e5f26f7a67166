"""The device mesh: axes ('data', 'model'); the batch is split on 'data', the state replicated."""

import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from augself_jax.errors import ConfigError

AXES = ("data", "model")


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
    """(data, model) sizes; -1 in config.mesh takes all the devices the other axis leaves."""
    data, model = int(config.mesh.data), int(config.mesh.model)
    if model == -1 and data == -1:
        raise ConfigError("mesh: at most one of mesh.data and mesh.model may be -1")
    if model == -1:
        model = num_devices // max(data, 1)
    if data == -1:
        data = num_devices // max(model, 1)
    if data < 1 or model < 1 or data * model != num_devices:
        raise ConfigError(f"mesh: data {config.mesh.data} x model {config.mesh.model} does not "
                          f"cover the {num_devices} devices; allowed: a product equal to "
                          f"{num_devices} (-1 fills one axis)")
    return data, model


def make_mesh(config: ml_collections.ConfigDict,
              devices: list | None = None) -> jax.sharding.Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    # Auto axes: the compiler propagates shardings (global BN, SimCLR negatives) by itself.
    return jax.make_mesh(mesh_shape(config, len(devices)), AXES, devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P("data"))


def fast_compile_options(enabled: bool = True) -> dict | None:
    """XLA options that cut CPU compile time several-fold (at some cost in run time);
    None elsewhere, where compiles are quick and run time is what counts."""
    if not enabled or jax.default_backend() != "cpu":
        return None
    return {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

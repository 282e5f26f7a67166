"""The trainer's share of config validation (top level, optimizer, mesh, AugSelf vs pipeline)."""

import ml_collections

from augself_jax import augs
from augself_jax.data.global_batch import check_batch_divides
from augself_jax.errors import ConfigError
from augself_jax.train.mesh import mesh_shape
from augself_jax.train.optimizers import OPTIMIZERS, SCHEDULES


def _positive_int(config: ml_collections.ConfigDict, name: str, minimum: int = 1) -> None:
    value = config[name]
    if not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: {value!r} is not allowed; allowed: an integer >= {minimum}")


def validate_train_config(config: ml_collections.ConfigDict, num_devices: int | None = None,
                          process_count: int | None = None) -> None:
    """Raises ConfigError (one line naming the field); `num_devices` and `process_count`
    default to jax's."""
    for name in ("batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
        _positive_int(config, name)
    _positive_int(config, "knn_every", 0)
    if config.total_steps is not None:
        _positive_int(config, "total_steps")
    elif config.num_epochs <= 0:
        raise ConfigError(f"num_epochs: {config.num_epochs} is not allowed; allowed: > 0 "
                          "(or set total_steps)")

    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name: unknown '{opt.name}'; allowed: {', '.join(OPTIMIZERS)}")
    if opt.schedule not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule: unknown '{opt.schedule}'; "
                          f"allowed: {', '.join(SCHEDULES)}")
    if not opt.base_lr > 0:
        raise ConfigError(f"optimizer.base_lr: {opt.base_lr} is not allowed; allowed: > 0")
    for name in ("weight_decay", "warmup_epochs"):
        if opt[name] < 0:
            raise ConfigError(f"optimizer.{name}: {opt[name]} is below zero; allowed: >= 0")
    for name in ("momentum", "b1", "b2"):
        if not 0 <= opt[name] < 1:
            raise ConfigError(f"optimizer.{name}: {opt[name]} is not allowed; allowed: [0, 1)")

    # The weights themselves are the augself section's (aware/augself.py); here, whether the
    # pipeline this config trains with ever applies what a head predicts.
    for entry in augs.augself_entries():
        key = entry.name
        weight = config.augself.get(key, 0.0)
        if weight > 0 and entry.probability(config.aug) <= 0:
            field = entry.prob_field
            raise ConfigError(f"augself.{key}: weight {weight} > 0 but the pipeline never "
                              f"applies {key} (aug.{field} = {config.aug[field]}); "
                              f"allowed: weight 0, or aug.{field} > 0")

    if num_devices is None or process_count is None:
        import jax

        num_devices = jax.device_count() if num_devices is None else num_devices
        process_count = jax.process_count() if process_count is None else process_count
    data, _ = mesh_shape(config, num_devices)
    check_batch_divides("batch_size", int(config.batch_size), data_axis=data,
                        process_count=process_count)

"""The arrays to export: the backbone of a workdir's checkpoint, read as evaluation reads it
(augself_jax/checkpoints/restore.py: parameters and batch statistics, --step N or best), or its
momentum encoder."""

from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from augself_jax import checkpoints
from augself_jax.errors import ConfigError


def momentum_methods() -> list[str]:
    from augself_jax.methods import registry

    return sorted(name for name, m in registry.entries().items() if m.momentum is not None)


def check_momentum(config: ml_collections.ConfigDict) -> None:
    """ConfigError when --momentum_encoder names a method that keeps no momentum encoder."""
    allowed = momentum_methods()
    if config.method.name not in allowed:
        raise ConfigError(f"momentum_encoder: the run's method {config.method.name} keeps no "
                          f"momentum encoder; allowed with {', '.join(allowed)}")


def _numpy_tree(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _numpy_tree(v) for k, v in tree.items()}
    return np.asarray(jax.device_get(tree))


def restore_arrays(workdir: str, config: ml_collections.ConfigDict, step: int | str | None,
                   momentum: bool) -> tuple[dict, int]:
    """(the encoder's arrays as NumPy, nested by module path: `conv1/kernel`, `bn1/mean`,
    `blocks/<i>/...`; the step). ConfigError / CheckpointError in one line for a missing
    step, a checkpoint that does not fit the config, or NaN/Inf."""
    module = "target_backbone" if momentum else "backbone"
    encoder, step = checkpoints.restore_backbone(workdir, config, step, module=module)
    return _numpy_tree(checkpoints.to_nested(nnx.state(encoder))), step

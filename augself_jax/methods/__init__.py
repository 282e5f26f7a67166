"""Base methods: one module each (its heads, loss, targets, state and config fields), found
by `registry`; `build_model`, `compute_loss`, `update_targets` are the trainer's three calls."""

from augself_jax.methods.core import Momentum, Queue
from augself_jax.methods.model import (
    PretrainModel,
    build_model,
    compute_loss,
    update_targets,
)
from augself_jax.methods.validate import validate_model_config

__all__ = [
    "Momentum",
    "PretrainModel",
    "Queue",
    "build_model",
    "compute_loss",
    "update_targets",
    "validate_model_config",
]

"""Base methods: one file each, with its heads and its loss; `build_model`, `compute_loss`,
`update_targets` are the trainer's three calls."""

from augself_jax.methods.core import Momentum, Queue
from augself_jax.methods.model import (
    METHODS,
    PretrainModel,
    build_model,
    compute_loss,
    update_targets,
)
from augself_jax.methods.validate import validate_model_config

__all__ = [
    "METHODS",
    "Momentum",
    "PretrainModel",
    "Queue",
    "build_model",
    "compute_loss",
    "update_targets",
    "validate_model_config",
]

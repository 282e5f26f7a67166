"""A pretraining run's Orbax checkpoints: `store` (the on-disk layout, shared), `manager`
(the trainer's saves, the last K and the resume) and `restore` (evaluation's and the
export's: the backbone alone). This module never imports the trainer.
"""

from augself_jax.checkpoints.manager import TrainCheckpointer
from augself_jax.checkpoints.restore import parse_step, restore_backbone, step_record
from augself_jax.checkpoints.store import (
    BEST,
    BEST_SUBDIR,
    CHECKPOINT_SUBDIR,
    UNREADABLE_SUBDIR,
    all_steps,
    checkpoint_dir,
    failure_cause,
    first_non_finite,
    from_nested,
    latest_step,
    to_nested,
    tree_mismatch,
)

__all__ = [
    "BEST", "BEST_SUBDIR", "CHECKPOINT_SUBDIR", "UNREADABLE_SUBDIR", "TrainCheckpointer",
    "all_steps", "checkpoint_dir", "failure_cause", "first_non_finite", "from_nested",
    "latest_step", "parse_step", "restore_backbone", "step_record", "to_nested",
    "tree_mismatch",
]

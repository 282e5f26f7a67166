"""Validation of the sections a pretraining model is built from: one ConfigError line each,
the first bad field named. Each section's fields are checked by their owner: the backbone
by `models/registry.py`, the method's own fields by its registry entry
(`Method.validate`), AugSelf and CASSLE by `aware/`; the `method` fields every method
shares are checked here.
"""

from augself_jax.aware import augself, cassle
from augself_jax.errors import ConfigError, positive
from augself_jax.methods.registry import get as get_method
from augself_jax.models.registry import validate_backbone


def validate_model_config(config) -> None:
    """Raise ConfigError naming the first bad field of model, method, augself or cassle."""
    validate_backbone(config)
    me = config.method
    method = get_method(me.name)
    if float(me.temperature) <= 0:
        raise ConfigError(f"method.temperature: {me.temperature} must be > 0")
    for f in ("proj_hidden", "proj_out", "pred_hidden"):
        positive(f"method.{f}", me[f], allow_default=True)
    method.validate(config)
    augself.validate_config(config)
    cassle.validate_config(config)

"""The protocol registry (the idiom is `augself_jax/registries.py`): every module of this
package that defines `PROTOCOL`, an `Evaluator` subclass (common.py), by protocol name."""

import ml_collections

from augself_jax.errors import ConfigError
from augself_jax.evaluation.common import Context, Evaluator, split_list
from augself_jax.registries import Registry, scan

REGISTRY: Registry[type[Evaluator]] = Registry(
    "eval.protocols", lambda: scan(__package__, "PROTOCOL", order=lambda p: p.name))
entries, names, get = REGISTRY.entries, REGISTRY.names, REGISTRY.get


def validate(config: ml_collections.ConfigDict) -> list[type[Evaluator]]:
    """The classes of `eval.protocols`, each protocol's own fields checked."""
    listed = split_list(config.eval.protocols)
    if not listed:
        raise ConfigError(f"eval.protocols: empty; allowed: {', '.join(names())}")
    classes = [get(n) for n in listed]
    for cls in classes:
        cls.validate(config)
    return classes


def build(config: ml_collections.ConfigDict, context: Context) -> list[Evaluator]:
    """The evaluators of `eval.protocols`, in the listed order."""
    return [cls.from_config(config, context) for cls in validate(config)]

"""The method registry (the idiom is `augself_jax/registries.py`): every base method is one
module of this package defining `METHOD`, a `Method` (methods/core.py, where the entry type
lives so that no method module imports the registry that imports it).

The trainer, the optimiser, the config and its validation ask this registry what a method
needs (its heads, loss, momentum targets and their schedule, extra state such as a queue,
parameter groups with their own learning rate, its config fields and their checks); none
of them names a method. The config resolves `method.name` to its entry once
(`model.settings.method`).
"""

from typing import Any

from augself_jax.methods.core import Method
from augself_jax.registries import Registry, scan


def _load() -> dict[str, Method]:
    found = scan(__package__, "METHOD")
    owners: dict[str, str] = {}
    for method in found.values():
        for key in method.defaults:
            if key in owners:
                raise ValueError(f"config field method.{key} is declared by both "
                                 f"'{owners[key]}' and '{method.name}'")
            owners[key] = method.name
    return found


REGISTRY: Registry[Method] = Registry("method.name", _load)
entries, names, get = REGISTRY.entries, REGISTRY.names, REGISTRY.get


def config_defaults() -> dict[str, Any]:
    """Every registered method's own `config.method` fields with their defaults."""
    out: dict[str, Any] = {}
    for method in entries().values():
        out.update(method.defaults)
    return out

"""The method registry: every base method is one module of this package defining `METHOD`, a
`Method` (methods/core.py, where the entry type lives so that no method module imports the
registry that imports it).

The trainer, the optimiser, the config and its validation ask this registry what a method
needs (its heads, loss, momentum targets and their schedule, extra state such as a queue,
parameter groups with their own learning rate, its config fields and their checks); none
of them names a method. A module is registered by defining a module-level `METHOD = Method(...)`
in `augself_jax/methods/`: the package is scanned, so no other module lists the methods.
"""

import functools
import importlib
import os
import pkgutil
from typing import Any

from augself_jax.errors import ConfigError
from augself_jax.methods.core import Method


@functools.cache
def methods() -> dict[str, Method]:
    """name -> Method for every module of this package that defines `METHOD`, sorted."""
    found: dict[str, Method] = {}
    here = os.path.dirname(os.path.abspath(__file__))
    for info in sorted(pkgutil.iter_modules([here]), key=lambda i: i.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            if method.name in found:
                raise ValueError(f"method '{method.name}' is registered twice")
            found[method.name] = method
    owners: dict[str, str] = {}
    for method in found.values():
        for key in method.defaults:
            if key in owners:
                raise ValueError(f"config field method.{key} is declared by both "
                                 f"'{owners[key]}' and '{method.name}'")
            owners[key] = method.name
    return found


def names() -> tuple[str, ...]:
    return tuple(methods())


def get(name: str) -> Method:
    """The Method called `name`; ConfigError listing the registered ones otherwise."""
    found = methods()
    if name not in found:
        raise ConfigError(f"method.name: '{name}' is unknown; allowed: {', '.join(found)}")
    return found[name]


def config_defaults() -> dict[str, Any]:
    """Every registered method's own `config.method` fields with their defaults."""
    out: dict[str, Any] = {}
    for method in methods().values():
        out.update(method.defaults)
    return out

"""The one registry idiom.

Every kind of thing a config names by string (a method, an augmentation, an evaluation
protocol, a dataset, a backbone) has a `registry.py` beside its entries exposing the same
three functions, made here by `Registry`:

    entries() -> {name: entry}      names() -> (name, ...)      get(name) -> entry

`get` of an unknown name raises the ConfigError every choice field raises
(`errors.one_of`): the config field, the name, the allowed names.

Where the entries are code (methods, augmentations, protocols), each is a module of the
package defining one upper-case constant (`METHOD`, `AUGMENTATION`, `PROTOCOL`), found by
`scan`: adding one is adding its module, and nothing else lists them. Where they are data
(datasets, backbone sizes), they are the rows of one table in the registry itself.
"""

import functools
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from augself_jax.errors import one_of

Entry = TypeVar("Entry")


def scan(package: str, attribute: str, order: Callable[[Any], Any] | None = None
         ) -> dict[str, Any]:
    """{entry.name: entry} for every module of `package` that defines `attribute`, in module
    name order, or sorted by `order(entry)`. A name defined twice is an error."""
    found: dict[str, Any] = {}
    path = importlib.import_module(package).__path__
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        entry = getattr(importlib.import_module(f"{package}.{info.name}"), attribute, None)
        if entry is None:
            continue
        if entry.name in found:
            raise ValueError(f"{package}: two {attribute} entries are named '{entry.name}'")
        found[entry.name] = entry
    if order is not None:
        found = dict(sorted(found.items(), key=lambda item: order(item[1])))
    return found


class Registry(Generic[Entry]):
    """A registry of the config field `field`, its entries loaded once by `load()`."""

    def __init__(self, field: str, load: Callable[[], dict[str, Entry]]):
        self.field = field
        self._load = functools.cache(load)

    def entries(self) -> dict[str, Entry]:
        return self._load()

    def names(self) -> tuple[str, ...]:
        return tuple(self._load())

    def get(self, name: str) -> Entry:
        """The entry called `name`; ConfigError naming the field and the allowed names."""
        found = self._load()
        one_of(self.field, name, found)
        return found[name]

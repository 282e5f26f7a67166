"""The method registry: every base method is one module of this package defining `METHOD`.

The trainer, the optimiser, the config and its validation ask this registry what a method
needs (its heads, loss, momentum targets and their schedule, extra state such as a queue,
parameter groups with their own learning rate, its config fields and their checks); none
of them names a method. A module is registered by defining a module-level `METHOD = Method(...)`
in `augself_jax/methods/`: the package is scanned, so adding a method touches no other file.
"""

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from augself_jax.errors import ConfigError


def _nothing(config) -> None:
    del config


def _no_groups(config) -> tuple[str, ...]:
    del config
    return ()


@dataclass(frozen=True)
class Method:
    """What one base method contributes. Only `name`, `build_heads` and `forward` are required.

    build_heads(config, num_features, proj_in, dtype, rngs) -> {attribute: module}: the heads
        the model holds under those attribute names (projector, predictor, classifier, ...);
        `proj_in` is the projector's input width (the backbone's, or more with CASSLE).
    forward(model, batch, step) -> (loss, y1, y2, metrics): the method loss and the
        backbone features of view 1 and view 2 that the AugSelf heads read; `step` is the
        optimiser step (a traced scalar), for losses that change during training.
    defaults: the `config.method` fields this method owns, with their defaults. Names are
        prefixed by the method (a field is declared by one method only).
    settings(config) -> a hashable value (a frozen dataclass) of the hyperparameters the
        loss reads inside jit; the model holds it as `model.settings.hp`.
    validate(config): raise ConfigError naming the first bad field this method owns.
    momentum(hp, step, total_steps) -> tau: when set, the model holds EMA copies
        `target_backbone`, `target_<head>` for each of `target_heads` (and `target_cassle`),
        updated after each optimiser step as target <- tau target + (1 - tau) online.
    init_state(config, rngs) -> {attribute: nnx.Variable}: extra non-trained state (a queue).
    constant_lr(config) -> top-level attributes trained at the constant (scaled) base lr
        instead of the schedule (SimSiam's predictor).
    after_update(model): in-place changes after the optimiser step (SwAV's prototype
        normalisation); runs before the momentum update.
    recipe(config): the method's reference training recipe (optimiser, lr, head depth)
        for the config's preset and backbone, applied in place by `configs/common.experiment`.
    """

    name: str
    build_heads: Callable[..., dict]
    forward: Callable[..., tuple]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    settings: Callable[[Any], Any] = _nothing
    validate: Callable[[Any], None] = _nothing
    momentum: Callable[..., Any] | None = None
    target_heads: tuple[str, ...] = ("projector",)
    init_state: Callable[..., dict] | None = None
    constant_lr: Callable[[Any], tuple[str, ...]] = _no_groups
    after_update: Callable[[Any], None] | None = None
    recipe: Callable[[Any], None] = _nothing


@functools.cache
def methods() -> dict[str, Method]:
    """name -> Method for every module of this package that defines `METHOD`, sorted."""
    import augself_jax.methods as package

    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
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

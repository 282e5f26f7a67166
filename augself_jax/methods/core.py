"""What every method shares: the registry entry type (`Method`), target and queue variable
types, static settings, EMA, conditioned projection, the two views' encodings."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.augs import StaticSettings
from augself_jax.aware import augself, cassle
from augself_jax.models.variables import AssignedUnderJit


def _nothing(config) -> None:
    del config


def _no_groups(config) -> tuple[str, ...]:
    del config
    return ()


@dataclass(frozen=True, eq=False)
class Method:
    """What one base method contributes. Only `name`, `build_heads` and `forward` are required.

    Resolved from `method.name` once, when the model is built, and carried from there (the
    model's static settings hold it; `eq=False`: one object per method, hashed by identity).

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


class Momentum(AssignedUnderJit, nnx.Variable):
    """An EMA copy of an online parameter. Not an nnx.Param: never trained, never decayed."""


class Queue(AssignedUnderJit, nnx.Variable):
    """MoCo's key queue and its write pointer. Not an nnx.Param."""


@dataclass(frozen=True)
class Settings:
    """The static (hashable) part of the config the losses read inside jit.

    `method` is the method's registry entry, resolved once from `method.name` when the model
    is built; `hp` its own hyperparameters (the entry's `settings(config)`).
    """

    method: Method
    dtype: str
    temperature: float  # shared by the contrastive methods that read `method.temperature`
    hp: Any
    augself: tuple[tuple[str, float], ...]
    augself_reference: bool
    cassle_keys: tuple[str, ...] | None  # None: CASSLE off
    cassle_mode: str
    cassle_reference: bool
    aug_settings: StaticSettings  # each augmentation's own (its targets and descriptors)
    augself_ss_only: bool = False  # the AugSelf heads' loss alone, no SSL term
    augself_color_target: str = "linear"  # linear (the reference) | circular

    @classmethod
    def from_config(cls, config, method: Method) -> "Settings":
        m, c = config.method, config.cassle
        return cls(
            method=method,
            dtype=config.model.dtype,
            temperature=float(m.temperature),
            hp=method.settings(config),
            augself=augself.enabled_augs(config.augself),
            augself_reference=bool(config.augself.reference),
            cassle_keys=cassle.parse_keys(c.descriptor_keys) if c.enabled else None,
            cassle_mode=c.mode,
            cassle_reference=bool(c.reference),
            aug_settings=StaticSettings.from_aug(config.aug),
            augself_ss_only=bool(config.augself.get("ss_only", False)),
            augself_color_target=str(config.augself.get("color_target", "linear")),
        )


def pick(value: int, default: int) -> int:
    """Config widths use -1 for 'the method's reference width'."""
    return default if value is None or value < 0 else int(value)


def cosine_momentum(step, total_steps, base: float):
    """tau = 1 - (1 - base) (cos(pi t / T) + 1) / 2: from base at t=0 to 1 at t=T (per step)."""
    t = jnp.clip(jnp.asarray(step, jnp.float32) / jnp.maximum(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * t) + 1.0) / 2.0


def momentum_copy(module: nnx.Module) -> nnx.Module:
    """A deep copy of `module` whose nnx.Params are turned into Momentum variables."""
    target = nnx.clone(module)
    nodes = [node for _, node in nnx.iter_graph(target) if isinstance(node, nnx.Module)]
    for node in nodes:
        for name, value in list(vars(node).items()):
            if isinstance(value, nnx.Param):
                setattr(node, name, Momentum(value[...]))
    return target


def ema_update(target: nnx.Module, online: nnx.Module, tau) -> None:
    """target <- tau * target + (1 - tau) * online, in place, for every Momentum/Param pair."""
    online_params = {p: v for p, v in nnx.iter_graph(online) if isinstance(v, nnx.Param)}
    for path, var in nnx.iter_graph(target):
        if isinstance(var, Momentum):
            var[...] = tau * var[...] + (1.0 - tau) * jax.lax.stop_gradient(
                online_params[path][...]
            )


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) like torch F.normalize, with a finite gradient at x = 0.

    (jnp.linalg.norm's gradient at 0 is NaN; a ReLU head can output an exact zero row.)
    """
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def project(
    model, y: jax.Array, params: dict, *, target: bool = False, head: str = "projector"
) -> jax.Array:
    """The head `head` (projector or classifier) on features `y` of a view, its input
    conditioned on the view's descriptor when CASSLE is on.

    `target=True` uses the momentum projector and the momentum copy of the CASSLE encoder.
    """
    s: Settings = model.settings
    module = getattr(model, "target_" + head if target else head)
    if s.cassle_keys is not None:
        desc = cassle.descriptor(params, s.cassle_keys, s.aug_settings,
                                 reference=s.cassle_reference)
        encoder = model.target_cassle if target else model.cassle
        y = cassle.condition(y, desc, encoder, s.cassle_mode)
    return module(y).astype(jnp.float32)


def online_views(model, batch: dict, head: str = "projector") -> tuple[jax.Array, ...]:
    """Both views through the online backbone and `head`: (y1, y2, z1, z2), the backbone
    features AugSelf reads and the (CASSLE-conditioned) head outputs."""
    y1, y2 = model.backbone(batch["view1"]), model.backbone(batch["view2"])
    z1 = project(model, y1, batch["params1"], head=head)
    z2 = project(model, y2, batch["params2"], head=head)
    return y1, y2, z1, z2


def predictions(model, z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The predictor on both views' projections, in float32 (BYOL, SimSiam, MoCo v3)."""
    return (model.predictor(z1).astype(jnp.float32), model.predictor(z2).astype(jnp.float32))


def target_views(model, batch: dict) -> tuple[jax.Array, ...]:
    """Both views through the momentum backbone and projector, without gradient:
    (ty1, ty2, t1, t2), the target features and projections."""
    sg = jax.lax.stop_gradient
    ty1, ty2 = sg(model.target_backbone(batch["view1"])), sg(model.target_backbone(batch["view2"]))
    t1 = sg(project(model, ty1, batch["params1"], target=True))
    t2 = sg(project(model, ty2, batch["params2"], target=True))
    return ty1, ty2, t1, t2

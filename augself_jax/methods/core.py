"""What every method shares: target and queue variable types, static settings, EMA,
conditioned projection."""

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.augs import Ranges
from augself_jax.aware import augself, cassle


class Momentum(nnx.Variable):
    """An EMA copy of an online parameter. Not an nnx.Param: never trained, never decayed."""


class Queue(nnx.Variable):
    """MoCo's key queue and its write pointer. Not an nnx.Param."""


@dataclass(frozen=True)
class Settings:
    """The static (hashable) part of the config the losses read inside jit.

    `hp` is the method's own hyperparameters (its registry entry's `settings(config)`).
    """

    method: str
    dtype: str
    temperature: float  # shared by the contrastive methods that read `method.temperature`
    hp: Any
    augself: tuple[tuple[str, float], ...]
    augself_reference: bool
    cassle_keys: tuple[str, ...] | None  # None: CASSLE off
    cassle_mode: str
    cassle_reference: bool
    ranges: Ranges
    augself_ss_only: bool = False  # the AugSelf heads' loss alone, no SSL term
    augself_color_target: str = "linear"  # linear (the reference) | circular

    @classmethod
    def from_config(cls, config, hp: Any = None) -> "Settings":
        m, c = config.method, config.cassle
        return cls(
            method=m.name,
            dtype=config.model.dtype,
            temperature=float(m.temperature),
            hp=hp,
            augself=augself.enabled_augs(config.augself),
            augself_reference=bool(config.augself.reference),
            cassle_keys=cassle.parse_keys(c.descriptor_keys) if c.enabled else None,
            cassle_mode=c.mode,
            cassle_reference=bool(c.reference),
            ranges=Ranges.from_config(config),
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
        desc = cassle.descriptor(params, s.cassle_keys, s.ranges, reference=s.cassle_reference)
        encoder = model.target_cassle if target else model.cassle
        y = cassle.condition(y, desc, encoder, s.cassle_mode)
    return module(y).astype(jnp.float32)

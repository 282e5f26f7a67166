"""What one augmentation is, and the registry that holds them (docs/METHOD.md sections 1-3):
every module of this package defining `AUGMENTATION`, in `draw_order` (the idiom is
`augself_jax/registries.py`).

An `Augmentation` entry is everything the codebase knows about one augmentation: its
config fields and their checks, its uniform draws and how they become a parameter record
(host, TensorFlow), its op (geometric on the host in tf.data, or photometric on the
device in JAX), its preview caption, its AugSelf target, its CASSLE descriptors and its
static settings (what those read from `config.aug` besides the record). The pipeline, the
losses, validation, the preview and the sensitivity analysis all loop over the registry;
none of them names an augmentation, nor knows what any augmentation's settings hold
(`StaticSettings` carries them all and hands each entry its own).

TensorFlow is imported inside the host-side functions only: configs read the registry
(for the AugSelf / CASSLE key lists) and must not pay TensorFlow's import.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from augself_jax.errors import ConfigError
from augself_jax.registries import Registry, scan

# Chain positions (docs/METHOD.md section 1): crop, flip, colour jitter, solarize,
# grayscale, blur, rotation. Rotation commutes with every photometric op here (pixel-wise ops, a
# global mean, a symmetric separable kernel with reflect padding), so it runs with the
# other geometric ops on the host.
HOST, DEVICE = "host", "device"


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of the parameter record: its per-view shape, dtype and 'not applied' value.

    `on_device`: filled by the device op (the host ships nothing for it)."""

    key: str
    shape: tuple[int, ...]
    dtype: str  # "float32" | "int32"
    identity: tuple[float, ...]
    on_device: bool = False

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclasses.dataclass(frozen=True)
class AugSelfTarget:
    """An AugSelf head: output size, loss kind (mse | bce | ce) and the target of the
    ordered pair (view a, view b): target(pa, pb, settings, reference) -> [B, dim]
    (int [B] for ce), `settings` being its augmentation's own (`Augmentation.settings`)."""

    dim: int
    loss: str
    target: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """A CASSLE descriptor key: its size and value(params, settings, reference) -> [B, dim],
    `settings` being its augmentation's own (`Augmentation.settings`)."""

    key: str
    dim: int
    value: Callable[..., Any]


def switched_on(u: dict, slot: str, probability: float) -> Any:
    """The views an augmentation runs on ("applied with probability p"): those whose
    uniform in `slot` is below `probability`. Every switchable sampler draws it this way."""
    return u[slot] < probability


def same_flag_target(key: str) -> AugSelfTarget:
    """AugSelf's target for a 0/1 record flag: 1 where the two views agree (BCE)."""

    def target(pa, pb, settings, reference):
        import jax.numpy as jnp

        return (jnp.asarray(pa[key]) == jnp.asarray(pb[key])).astype(jnp.float32)[..., None]

    return AugSelfTarget(1, "bce", target)


def flag_descriptor(key: str) -> Descriptor:
    """A CASSLE descriptor that is the record's 0/1 flag `key` itself."""

    def value(p, settings, reference):
        import jax.numpy as jnp

        return jnp.asarray(p[key], jnp.float32)[..., None]

    return Descriptor(key, 1, value)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    name: str
    stage: str  # HOST (geometric, tf.data) or DEVICE (photometric, JAX)
    chain: float  # position in the chain (docs/METHOD.md section 1); ops run in this order
    # Position of its draws in each view's uniform vector: the registry lays the entries
    # out in this order, so a new one takes the next number and every existing draw keeps
    # its bits (crop 0, flip 1, color 2, gray 3, blur 4, solarize 5, rotation 6).
    draw_order: int
    defaults: dict[str, Any]  # its config.aug fields and their defaults
    draws: tuple[tuple[str, int], ...]  # named uniform slots: (slot, count)
    record: tuple[Field, ...]
    # sample(u: {slot: [V, count] uniforms of draw_dtype, [V] if count is 1}, aug, height,
    # width) -> {record key: [V, ...]} (plus host-only extras such as 'crop_px').
    sample: Callable[..., dict]
    # HOST: op(image float [H, W, 3], params of one view, out_size) -> image (TensorFlow).
    # DEVICE: op(x float [B, H, W, 3] in [0, 1], params, settings=its own settings) ->
    # (x, updates).
    op: Callable[..., Any]
    caption: Callable[[dict, int], str]  # one short line for the preview grid
    prob_field: str | None = None  # the config field that switches it on (None: always)
    # The probability that the op runs, from config.aug (AugSelf refuses a head whose
    # target never varies).
    applied: Callable[[Any], float] | None = None
    check: Callable[[Any, int], None] | None = None  # (aug, image_size) -> raise ConfigError
    augself: AugSelfTarget | None = None
    cassle: tuple[Descriptor, ...] = ()
    # Config overrides that make the op an identity (default: prob_field = 0); the
    # sensitivity analysis applies one augmentation with every other one neutral.
    neutral: dict[str, Any] | None = None
    # The slots' dtype as `sample` receives them (float64 where float32 rounding would
    # bias a draw, as the crop's areas and aspect ratios).
    draw_dtype: str = "float32"
    always: dict[str, Any] | None = None  # overrides that make it run (default: prob_field = 1)
    # settings(aug) -> a hashable value: the static settings its op, AugSelf target and
    # CASSLE descriptors read besides the record (the colour jitter's clamped ranges, the
    # blur's kernel), from config.aug; None: it has none.
    settings: Callable[[Any], Any] | None = None

    def neutral_overrides(self) -> dict[str, Any]:
        if self.neutral is not None:
            return dict(self.neutral)
        return {self.prob_field: 0.0}

    def always_overrides(self) -> dict[str, Any]:
        """Config overrides that make the op run on every view."""
        if self.always is not None:
            return dict(self.always)
        return {} if self.prob_field is None else {self.prob_field: 1.0}

    def probability(self, aug) -> float:
        if self.applied is not None:
            return float(self.applied(aug))
        return 1.0 if self.prob_field is None else float(aug[self.prob_field])


def _load() -> dict[str, Augmentation]:
    return checked(scan(__package__, "AUGMENTATION", order=lambda e: e.draw_order))


def checked(found: dict[str, Augmentation]) -> dict[str, Augmentation]:
    """`found`, unless two entries share a draw_order (their draws would overlap) or a
    record key (ValueError naming both)."""
    orders: dict[int, str] = {}
    keys: dict[str, str] = {}
    for entry in found.values():
        if entry.draw_order in orders:
            raise ValueError(f"augmentations '{orders[entry.draw_order]}' and '{entry.name}' "
                             f"share draw_order {entry.draw_order}")
        orders[entry.draw_order] = entry.name
        for field in entry.record:
            if field.key in keys:
                raise ValueError(f"record key '{field.key}' is declared by both "
                                 f"'{keys[field.key]}' and '{entry.name}'")
            keys[field.key] = entry.name
    return found


REGISTRY: Registry[Augmentation] = Registry("augmentation", _load)
entries, names, get = REGISTRY.entries, REGISTRY.names, REGISTRY.get


def chain(stage: str) -> tuple[Augmentation, ...]:
    """The ops of one stage, in the order they run."""
    return tuple(sorted((e for e in entries().values() if e.stage == stage),
                        key=lambda e: e.chain))


def record_fields() -> tuple[Field, ...]:
    return tuple(f for e in entries().values() for f in e.record)


def record_keys() -> tuple[str, ...]:
    return tuple(f.key for f in record_fields())


def augself_entries() -> tuple[Augmentation, ...]:
    return tuple(e for e in entries().values() if e.augself is not None)


def descriptors() -> dict[str, Descriptor]:
    """Every CASSLE descriptor key -> its Descriptor, in draw order."""
    return {d.key: d for e in entries().values() for d in e.cassle}


def config_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in entries().values():
        out.update(e.defaults)
    return out


@dataclasses.dataclass(frozen=True)
class StaticSettings:
    """Every augmentation's own static settings (its entry's `settings(aug)`), by name. The
    generic code carries this one value and hands each entry its own part, so nothing here
    knows what any augmentation's settings hold. Hashable: jit reads it as a constant."""

    by_name: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, name: str) -> Any:
        """`name`'s settings (None for an augmentation that has none)."""
        return dict(self.by_name).get(name)

    @classmethod
    def from_aug(cls, aug) -> "StaticSettings":
        """From a config's `aug` section."""
        return cls(tuple((e.name, e.settings(aug)) for e in entries().values()
                         if e.settings is not None))

    @classmethod
    def of(cls, **aug_fields: Any) -> "StaticSettings":
        """From the registry's `config.aug` defaults with `aug_fields` overridden."""
        import ml_collections

        return cls.from_aug(ml_collections.ConfigDict({**config_defaults(), **aug_fields}))


def check_probability(aug, field: str) -> None:
    p = aug[field]
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"aug.{field}: {p} is not a probability; allowed: [0, 1]")


def check_pair(aug, field: str, low: float, high: float) -> None:
    value = tuple(aug[field])
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ConfigError(f"aug.{field}: {value} must be (a, b) with {low} <= a <= b <= {high}")

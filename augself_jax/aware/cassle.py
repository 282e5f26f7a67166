"""CASSLE (docs/METHOD.md section 3): a projector conditioned on each view's own augmentation
parameters."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax import augs
from augself_jax.augs import StaticSettings
from augself_jax.errors import ConfigError, one_of, positive
from augself_jax.models.mlp import MLP

# descriptor key -> size, for every key the registry's augmentations describe.
KEY_DIMS = {k: d.dim for k, d in sorted(augs.descriptors().items())}
MODES = ("raw", "proj-cat", "proj-add", "proj-mul")
# Keys renamed to the record's spelling: old name -> new name.
RENAMED = {"grayscale": "gray"}


def parse_keys(keys: str) -> tuple[str, ...]:
    """'crop,blur' -> ('blur', 'crop'): the descriptor's order is alphabetical."""
    return tuple(sorted(k.strip() for k in keys.split(",") if k.strip()))


def check_keys(keys: str) -> None:
    """One ConfigError line for an empty, unknown, renamed or repeated descriptor key."""
    names = [k.strip() for k in str(keys).split(",") if k.strip()]
    allowed = ", ".join(KEY_DIMS)
    if not names:
        raise ConfigError(f"cassle.descriptor_keys: empty; allowed: {allowed}")
    for k in names:
        if k in RENAMED:
            raise ConfigError(f"cassle.descriptor_keys: '{k}' is now spelled "
                              f"'{RENAMED[k]}' (as the parameter record's key)")
        if k not in KEY_DIMS:
            raise ConfigError(f"cassle.descriptor_keys: unknown '{k}'; allowed: {allowed}")
    if len(set(names)) != len(names):
        raise ConfigError(f"cassle.descriptor_keys: '{keys}' names a key twice")


def validate_config(config) -> None:
    """ConfigError naming the first bad field of the `cassle` section."""
    c = config.cassle
    for key in c.keys():
        one_of("cassle key", key,
               ("enabled", "descriptor_keys", "mode", "depth", "width", "reference"))
    one_of("cassle.mode", c.mode, MODES)
    check_keys(c.descriptor_keys)
    positive("cassle.depth", c.depth)
    positive("cassle.width", c.width)


def descriptor_dim(keys: tuple[str, ...]) -> int:
    return sum(KEY_DIMS[k] for k in keys)


def descriptor(
    params: dict, keys: tuple[str, ...], settings: StaticSettings, *, reference: bool = False
) -> jax.Array:
    """One view's descriptor [B, D]: its enabled keys concatenated in sorted order, each
    reading its augmentation's own part of `settings`."""
    table = augs.descriptors()
    owner = {d.key: e.name for e in augs.entries().values() for d in e.cassle}
    return jnp.concatenate([table[k].value(params, settings[owner[k]], reference)
                            for k in sorted(keys)], axis=-1)


def make_encoder(
    mode: str, desc_dim: int, num_features: int, depth: int, width: int, dtype: Any, rngs: nnx.Rngs
) -> MLP | None:
    """gamma: (depth-1) x [Linear(no bias) BN ReLU] then Linear(no bias) BN; None in `raw` mode."""
    if mode == "raw":
        return None
    out = width if mode == "proj-cat" else num_features
    return MLP(desc_dim, [width] * (depth - 1) + [out], last_bn="affine", dtype=dtype, rngs=rngs)


def projector_in_features(mode: str, num_features: int, desc_dim: int, width: int) -> int:
    return {"raw": num_features + desc_dim, "proj-cat": num_features + width}.get(
        mode, num_features
    )


def condition(y: jax.Array, desc: jax.Array, encoder: MLP | None, mode: str) -> jax.Array:
    """The projector's input for features `y` [B, F] of a view with descriptor `desc` [B, D]."""
    if mode == "raw":
        return jnp.concatenate([y, desc.astype(y.dtype)], -1)
    g = encoder(desc).astype(y.dtype)
    if mode == "proj-cat":
        return jnp.concatenate([y, g], -1)
    if mode == "proj-add":
        return y + g
    if mode == "proj-mul":
        return y * g
    raise ValueError(f"cassle.mode '{mode}'; allowed: {', '.join(MODES)}")

"""Orbax checkpoints of a pretraining run, for the trainer and the evaluation binary.

Layout: `WORKDIR/checkpoints/<step>/state` holds one nested dict of arrays
  step, params/<module path>, rest/<module path> (batch statistics, momentum
  targets, the MoCo queue), opt_state/<optax state path>
and `WORKDIR/checkpoints/<step>/meta` a JSON record (step, data_position, the
model section). Orbax writes each step to a temporary directory and renames it
only when complete, so a save cut short by a crash never replaces the last good
checkpoint; leftovers are removed on the next start.

This module sits below both `train/` and `evaluation/`: it never imports the trainer.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from augself_jax.errors import ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
_ITEMS = ("state", "meta")


def checkpoint_dir(workdir: str | epath.Path) -> epath.Path:
    return epath.Path(workdir) / CHECKPOINT_SUBDIR


# ---------------------------------------------------------------------------
# Pytrees <-> nested dicts of strings. The checkpoint is a plain nested dict named
# by module path (readable, and independent of the nnx/optax classes); the live
# structure comes from the abstract target at restore time.

def _name(key: Any) -> str | None:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return None if key.name == "value" else key.name  # drop nnx.Variable's `.value`
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _names(path: tuple) -> tuple[str, ...]:
    return tuple(n for n in (_name(k) for k in path) if n is not None)


def _is_key_array(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(leaf: Any) -> Any:
    """Typed PRNG keys are stored as their raw uint32 data."""
    if not _is_key_array(leaf):
        return leaf
    if isinstance(leaf, jax.ShapeDtypeStruct):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=leaf.sharding)
    return jax.random.key_data(leaf)


def to_nested(tree: Any) -> dict:
    """A pytree as a nested dict keyed by the path names of its leaves."""
    nested: dict = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        names = _names(path)
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})
        if names[-1] in node:
            raise ValueError(f"checkpoint: two leaves named {'/'.join(names)}")
        node[names[-1]] = _storable(leaf)
    return nested


def from_nested(nested: dict, like: Any) -> Any:
    """The inverse of `to_nested`: `like`'s structure filled from `nested`."""
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = []
    for path, like_leaf in paths_leaves:
        value = nested
        for name in _names(path):
            value = value[name]
        if _is_key_array(like_leaf):
            impl = jax.random.key_impl(like_leaf) if not isinstance(
                like_leaf, jax.ShapeDtypeStruct) else None
            value = jax.random.wrap_key_data(value, impl=impl)
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _manager(workdir: str | epath.Path, *, keep: int | None = None,
             read_only: bool = False, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=handlers)


class TrainCheckpointer:
    """Asynchronous saves of the whole train state, keeping the last `keep`."""

    def __init__(self, workdir: str | epath.Path, *, keep: int, async_save: bool = True):
        self._manager = _manager(workdir, keep=keep, async_save=async_save)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts a save; returns once the arrays are copied off the device (donation-safe)."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(to_nested(state)), meta=ocp.args.JsonSave(meta)),
            force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """The state at `step`, placed with the shardings of `abstract_state`'s leaves
        (so a checkpoint written on 8 devices restores onto 1 and vice versa)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(to_nested(abstract_state)),
            meta=ocp.args.JsonRestore()))
        return from_nested(restored["state"], abstract_state), dict(restored["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def all_steps(workdir: str | epath.Path) -> list[int]:
    """Steps with a complete checkpoint in WORKDIR, ascending ([] when none)."""
    if not checkpoint_dir(workdir).exists():
        return []
    manager = _manager(workdir, read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def latest_step(workdir: str | epath.Path) -> int | None:
    steps = all_steps(workdir)
    return steps[-1] if steps else None


def _describe_model(config: ml_collections.ConfigDict) -> str:
    m = config.model
    return f"{m.backbone}, stem {m.stem}, width {m.width}"


def restore_backbone(workdir: str | epath.Path, config: ml_collections.ConfigDict,
                     step: int | None = None) -> tuple[nnx.Module, int]:
    """The pretrained backbone (`model.backbone`, in eval mode) of WORKDIR's checkpoint at
    `step` (default: the latest), on this process's first device, and the step."""
    from augself_jax.methods import build_model  # the model definition lives with the methods

    steps = all_steps(workdir)
    if not steps:
        raise ConfigError(f"workdir: no checkpoint in {checkpoint_dir(workdir)}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ConfigError(f"step: no checkpoint at step {step} in {checkpoint_dir(workdir)}; "
                          f"allowed: {', '.join(map(str, steps))}")

    abstract_model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(config.seed)))
    graphdef, params, rest = nnx.split(abstract_model.backbone, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          {"params": {"backbone": params}, "rest": {"backbone": rest}})
    target_nested = to_nested(target)

    manager = _manager(workdir, read_only=True)
    try:
        stored = manager.item_metadata(step)["state"]
        _check_matches(target_nested, stored, config, workdir)
        # The backbone alone: a partial restore, which only the PyTree handler offers (the
        # manager registered the Standard handler for "state"; the on-disk format is shared).
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = {"state": checkpointer.restore(
                checkpoint_dir(workdir) / str(step) / "state", args=ocp.args.PyTreeRestore(
                    target_nested, restore_args=ocp.checkpoint_utils.construct_restore_args(
                        target_nested), partial_restore=True))}
    finally:
        manager.close()
    values = from_nested(restored["state"], target)
    backbone = nnx.merge(graphdef, values["params"]["backbone"], values["rest"]["backbone"])
    backbone.eval()
    return backbone, step


def _check_matches(target: dict, stored: Any, config: ml_collections.ConfigDict,
                   workdir: str | epath.Path) -> None:
    """ConfigError naming the first backbone array that the checkpoint lacks or shapes
    differently from what the config builds."""
    def walk(t: dict, s: Any, prefix: str) -> None:
        for key, value in t.items():
            name = f"{prefix}/{key}" if prefix else key
            if not hasattr(s, "keys") or key not in s:
                raise ConfigError(
                    f"model: the config's backbone ({_describe_model(config)}) does not match "
                    f"the checkpoint in {checkpoint_dir(workdir)}: it has no {name}")
            if isinstance(value, dict):
                walk(value, s[key], name)
            elif tuple(s[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"model: the config's backbone ({_describe_model(config)}) does not match "
                    f"the checkpoint in {checkpoint_dir(workdir)}: {name} has shape "
                    f"{tuple(s[key].shape)} there, {tuple(value.shape)} in the config")

    walk(target, stored, "")


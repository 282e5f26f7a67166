"""The on-disk layout of a pretraining run's Orbax checkpoints, shared by the trainer's
manager (`manager.py`) and evaluation's restore (`restore.py`).

Layout: `WORKDIR/checkpoints/<step>/state` holds one nested dict of arrays
  step, params/<module path>, rest/<module path> (batch statistics, momentum
  targets, the MoCo queue), opt_state/<optax state path>
and `WORKDIR/checkpoints/<step>/meta` a JSON record (step, data_position, the
model section, the resume contract). The last `keep_checkpoints` steps are kept there.
With the kNN monitor on, `WORKDIR/best_checkpoint/<step>` holds the one checkpoint of the
best monitor accuracy so far (its meta adds `knn_1nn_top1_pct`): a second manager, so the last-K
pruning never removes it, and resume never reads it (it resumes from the latest).

Orbax writes each step to a temporary directory and renames it only when complete, so a
save cut short by a crash never replaces the last good checkpoint; leftovers are removed on
the next start. A step that cannot be restored is moved, never deleted, to
`WORKDIR/unreadable_checkpoints/<step>`.
"""

import errno
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best_checkpoint"
BEST = "best"  # the `step` that picks the best checkpoint (evaluate.py --step best)
UNREADABLE_SUBDIR = "unreadable_checkpoints"
META_FILE = "metadata"  # where Orbax's JSON handler keeps the `meta` item of a step


def checkpoint_dir(workdir: str | epath.Path, subdir: str = CHECKPOINT_SUBDIR) -> epath.Path:
    return epath.Path(workdir) / subdir


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


def open_manager(directory: epath.Path, *, keep: int | None = None,
             read_only: bool = False, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def failure_cause(error: BaseException) -> str:
    """The root cause of a failed read or write, short: an OSError's strerror (e.g. `No space
    left on device`) when one is in the exception chain, else the innermost message's first
    line. Orbax and TensorStore wrap the OS error in their own exceptions."""
    seen, chain, node = set(), [], error
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        node = node.__cause__ or node.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno is not None:
            return f"{e.strerror or errno.errorcode.get(e.errno, e.errno)}" + (
                f" ({e.filename})" if e.filename else "")
    for e in chain:
        text = str(e)
        for marker in ("No space left on device", "Read-only file system", "Permission denied",
                       "Disk quota exceeded"):
            if marker in text:
                return marker
    text = str(chain[-1]).strip().splitlines()
    first = text[0] if text else type(chain[-1]).__name__
    return f"{type(chain[-1]).__name__}: {first[:300]}"


def sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)



def tree_mismatch(target: dict, stored: Any, prefix: str = "", *,
                  partial: bool = False) -> str | None:
    """The first array the stored tree lacks, has extra, or shapes differently from the
    target (nested dicts of arrays or metadata with `.shape`); None when they agree.
    `partial`: the target is a part of the stored tree (the backbone alone), so arrays
    the target does not name are not a mismatch."""
    if not hasattr(stored, "keys"):
        return f"{prefix or 'the state'} is not a tree"
    for key, value in target.items():
        name = f"{prefix}/{key}" if prefix else key
        if key not in stored:
            return f"it has no {name}"
        if isinstance(value, dict):
            found = tree_mismatch(value, stored[key], name, partial=partial)
            if found is not None:
                return found
        elif tuple(getattr(stored[key], "shape", ())) != tuple(value.shape):
            return f"{name} has shape {tuple(stored[key].shape)} there, {tuple(value.shape)} here"
    extra = sorted(set(stored.keys()) - set(target))
    if extra and not partial:
        return f"it has {prefix + '/' if prefix else ''}{extra[0]}, which this config does not"
    return None


@jax.jit
def _finite_flags(tree: Any) -> list:
    return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]


def first_non_finite(tree: Any) -> str | None:
    """The path of the first floating-point array holding NaN or Inf, None when all are
    finite. One jitted reduction per array, fetched together."""
    floats = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    flags = jax.device_get(_finite_flags([x for _, x in floats]))
    for (path, _), ok in zip(floats, flags, strict=True):
        if not ok:
            return "/".join(_names(path))
    return None


def all_steps(workdir: str | epath.Path, subdir: str = CHECKPOINT_SUBDIR) -> list[int]:
    """Steps with a complete checkpoint in WORKDIR/`subdir`, ascending ([] when none)."""
    if not checkpoint_dir(workdir, subdir).exists():
        return []
    manager = open_manager(checkpoint_dir(workdir, subdir), read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def latest_step(workdir: str | epath.Path, subdir: str = CHECKPOINT_SUBDIR) -> int | None:
    steps = all_steps(workdir, subdir)
    return steps[-1] if steps else None

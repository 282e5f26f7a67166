"""Orbax checkpoints of a pretraining run, for the trainer and the evaluation binary.

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

Every failure a user can meet here (an unreadable step, a failed save, a checkpoint
that does not fit the config, non-finite values) is a one-line ConfigError or
CheckpointError naming the path and the cause.

This module sits below both `train/` and `evaluation/`: it never imports the trainer.
"""

import errno
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from augself_jax.errors import CheckpointError, ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best_checkpoint"
BEST = "best"  # the `step` that picks the best checkpoint (evaluate.py --step best)
UNREADABLE_SUBDIR = "unreadable_checkpoints"
_META_FILE = "metadata"  # where Orbax's JSON handler keeps the `meta` item of a step
_ITEMS = ("state", "meta")


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


def _manager(directory: epath.Path, *, keep: int | None = None,
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


class TrainCheckpointer:
    """Asynchronous saves of the whole train state in WORKDIR/`subdir`, keeping the last
    `keep` (the trainer's best checkpoint is a second one, subdir=BEST_SUBDIR, keep=1).

    A background save that fails is reported by the next call to `check_for_errors`,
    `save`, `wait` or `close` as one CheckpointError naming the step's path and the cause;
    the earlier checkpoints stay (Orbax prunes old steps only after a save commits)."""

    def __init__(self, workdir: str | epath.Path, *, keep: int, async_save: bool = True,
                 subdir: str = CHECKPOINT_SUBDIR):
        self._dir = checkpoint_dir(workdir, subdir)
        self._manager = _manager(self._dir, keep=keep, async_save=async_save)
        self._pending_step: int | None = None  # the save that may still be in flight
        self._last_attempted: int | None = None
        self._last_committed: int | None = self._manager.latest_step()
        self._closed = False

    @property
    def directory(self) -> epath.Path:
        return self._dir

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def last_good_step(self) -> int | None:
        """The newest step known to be complete on disk (a pending save is not counted)."""
        return self._last_committed

    def _committed(self, step: int) -> bool:
        """Whether `step` is complete on disk: Orbax writes this marker last (and, on a local
        disk, renames the temporary directory only after it)."""
        return (self._dir / str(step) / "commit_success.txt").exists()

    def _save_failed(self, step: int | None, error: BaseException) -> CheckpointError:
        step = step if step is not None else self._last_attempted
        where = self._dir / str(step) if step is not None else self._dir
        last = (f"step {self._last_committed} in {self._dir}" if self._last_committed is not None
                else "none")
        return CheckpointError(f"could not save step {step} to {where}: {failure_cause(error)}; "
                               f"stopped. The last good checkpoint is {last}")

    def _settled(self, call: Callable[[], None]) -> None:
        """Runs `call` (which may surface the pending save's failure) and, if it returns,
        records the pending save as committed."""
        try:
            call()
        except Exception as e:
            step, self._pending_step = self._pending_step, None
            raise self._save_failed(step, e) from e

    def check_for_errors(self) -> None:
        """Raises CheckpointError now if the pending background save has failed; records it
        as the last good one once its commit marker is on disk."""
        self._settled(self._manager.check_for_errors)
        if self._pending_step is not None and not self._manager.is_saving_in_progress():
            self._settled(self._manager.wait_until_finished)
            if self._committed(self._pending_step):
                self._last_committed, self._pending_step = self._pending_step, None

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts a save; returns once the arrays are copied off the device (donation-safe).
        Waits for the previous save first, so its failure surfaces here at the latest. The
        first save of a run is waited for: a disk where no checkpoint fits (or a workdir
        that cannot be written) stops the run at the step of that save, not some steps
        later."""
        first = self._last_attempted is None
        self.wait()
        self._pending_step = self._last_attempted = step
        self._settled(lambda: self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(to_nested(state)), meta=ocp.args.JsonSave(meta)),
            force=True))
        if first:
            self.wait()

    def read_meta(self, step: int) -> dict:
        """The JSON record of `step` alone (cheap: no array is read). Read as a file rather
        than through Orbax, whose JSON handler hides which file is bad and why."""
        path = self._dir / str(step) / "meta" / _META_FILE
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: {e.strerror if isinstance(e, OSError) else e}") from e
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: a JSON {type(meta).__name__}, not an object")
        return meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """The state at `step`, placed with the shardings of `abstract_state`'s leaves
        (so a checkpoint written on 8 devices restores onto 1 and vice versa)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(to_nested(abstract_state)),
            meta=ocp.args.JsonRestore()))
        return from_nested(restored["state"], abstract_state), dict(restored["meta"])

    def restore_newest_good(self, abstract_state: Any, check_meta: Callable[[int, dict], None],
                            report: Callable[[str], None]) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest step that restores with finite values, or None
        when there is no checkpoint. `check_meta(step, meta)` runs on the newest readable
        meta before any array is read and may raise (a changed config). A step that cannot
        be read is reported in one line through `report`, moved aside, and the next older
        one is tried; when none restores, CheckpointError."""
        steps = self.all_steps()
        moved: list[str] = []
        checked = False
        for step in reversed(steps):
            path = self._dir / str(step)
            try:
                meta = self.read_meta(step)
            except Exception as e:
                moved.append(self._set_aside(step, str(e), report))
                continue
            if not checked:
                check_meta(step, meta)
                checked = True
            mismatch = self._shape_mismatch(step, abstract_state)
            if mismatch is not None and not mismatch.startswith("unreadable"):
                raise ConfigError(f"resume: the checkpoint at {path} does not fit this config's "
                                  f"state ({mismatch}); start fresh with a new --workdir")
            try:
                if mismatch is not None:
                    raise ValueError(mismatch.removeprefix("unreadable: "))
                state, meta = self.restore(step, abstract_state)
            except Exception as e:
                moved.append(self._set_aside(step, failure_cause(e), report))
                continue
            bad = first_non_finite(state)
            if bad is not None:
                moved.append(self._set_aside(step, f"{bad} holds NaN or Inf", report))
                continue
            self._last_committed = step
            return step, state, meta
        if moved:
            raise CheckpointError(f"no checkpoint in {self._dir} restores (moved aside: "
                                  f"{', '.join(moved)}); start fresh with a new --workdir")
        return None

    def _shape_mismatch(self, step: int, abstract_state: Any) -> str | None:
        """What differs between the stored tree and the target (a changed config), 'unreadable:
        ...' when the stored tree's metadata cannot be read, None when they agree."""
        try:
            stored = self._manager.item_metadata(step)["state"]
            if stored is None:
                raise ValueError("no array metadata")
        except Exception as e:
            return f"unreadable: {self._dir / str(step) / 'state'}: {failure_cause(e)}"
        return tree_mismatch(to_nested(abstract_state), stored)

    def _set_aside(self, step: int, cause: str, report: Callable[[str], None]) -> str:
        """Moves an unrestorable step out of the way (process 0; never deleted) and reports
        it in one line; returns where it went."""
        source = self._dir / str(step)
        target = self._dir.parent / UNREADABLE_SUBDIR / (
            str(step) if self._dir.name == CHECKPOINT_SUBDIR else f"{self._dir.name}_{step}")
        if target.exists():
            target = target.parent / f"{step}.{int(time.time())}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        _sync(f"set_aside_{step}")
        self._manager.reload()
        report(f"checkpoint error: {source} cannot be restored ({cause}); moved to {target}, "
               f"trying the previous step")
        return str(target)

    def wait(self, timeout_s: float = 600.0) -> None:
        """Blocks until the pending save is on disk; CheckpointError if it failed. Orbax may
        start the save's finalize thread just after `save` returns, so the commit marker
        (not the manager's say-so) decides."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._settled(self._manager.check_for_errors)
            self._settled(self._manager.wait_until_finished)
            if self._pending_step is None:
                return
            if self._committed(self._pending_step):
                self._last_committed, self._pending_step = self._pending_step, None
                return
            if time.monotonic() > deadline:
                self._settled(_raiser(TimeoutError(
                    f"no commit marker after {timeout_s:.0f} s")))
            time.sleep(0.05)

    def close(self) -> None:
        """Waits for the pending save (raising its failure) and releases the manager; a
        second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._manager.close()


def _raiser(error: Exception) -> Callable[[], None]:
    def fail() -> None:
        raise error

    return fail


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def tree_mismatch(target: dict, stored: Any, prefix: str = "") -> str | None:
    """The first array the stored tree lacks, has extra, or shapes differently from the
    target (nested dicts of arrays or metadata with `.shape`); None when they agree."""
    if not hasattr(stored, "keys"):
        return f"{prefix or 'the state'} is not a tree"
    for key, value in target.items():
        name = f"{prefix}/{key}" if prefix else key
        if key not in stored:
            return f"it has no {name}"
        if isinstance(value, dict):
            found = tree_mismatch(value, stored[key], name)
            if found is not None:
                return found
        elif tuple(getattr(stored[key], "shape", ())) != tuple(value.shape):
            return f"{name} has shape {tuple(stored[key].shape)} there, {tuple(value.shape)} here"
    extra = sorted(set(stored.keys()) - set(target))
    if extra:
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
    manager = _manager(checkpoint_dir(workdir, subdir), read_only=True)
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


def parse_step(value: str | int | None) -> int | str | None:
    """A --step value: None or '' (the latest), 'best', or a step number; else ConfigError."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text == BEST:
        return BEST
    if not text.isdigit():
        raise ConfigError(f"step: '{value}' is not a checkpoint step; allowed: a step number, "
                          f"'{BEST}' (the best kNN-monitor checkpoint) or nothing (the latest)")
    return int(text)


def _pick_step(workdir: str | epath.Path, step: int | str | None) -> tuple[str, int, list[int]]:
    """(subdir, step, that subdir's steps) of the checkpoint `step` names, or ConfigError."""
    steps = all_steps(workdir)
    if step == BEST:
        best = all_steps(workdir, BEST_SUBDIR)
        if not best:
            raise ConfigError(
                f"step: no best checkpoint in {checkpoint_dir(workdir, BEST_SUBDIR)} (it is "
                "kept only when the run had the kNN monitor on, knn_every > 0); allowed: "
                + (f"one of the steps {', '.join(map(str, steps))}, or no --step (the latest)"
                   if steps else "none, the workdir has no checkpoint"))
        return BEST_SUBDIR, best[-1], best
    if not steps:
        raise ConfigError(f"workdir: no checkpoint in {checkpoint_dir(workdir)}")
    if step is None:
        return CHECKPOINT_SUBDIR, steps[-1], steps
    if step not in steps:
        best = f" or {BEST}" if all_steps(workdir, BEST_SUBDIR) else ""
        raise ConfigError(f"step: no checkpoint at step {step} in {checkpoint_dir(workdir)}; "
                          f"allowed: {', '.join(map(str, steps))}{best}")
    return CHECKPOINT_SUBDIR, int(step), steps


def step_record(workdir: str | epath.Path, step: int | str | None) -> tuple[epath.Path, dict]:
    """(the directory, the JSON record) of the checkpoint `step` names (see restore_backbone);
    ConfigError for a step that is not there, {} for a record that cannot be read (the
    restore then names the cause)."""
    subdir, step, _ = _pick_step(workdir, step)
    path = checkpoint_dir(workdir, subdir) / str(step)
    try:
        meta = json.loads((path / "meta" / _META_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    return path, meta if isinstance(meta, dict) else {}


def restore_backbone(workdir: str | epath.Path, config: ml_collections.ConfigDict,
                     step: int | str | None = None, *,
                     module: str = "backbone") -> tuple[nnx.Module, int]:
    """The pretrained backbone (`model.backbone`, in eval mode) of WORKDIR's checkpoint at
    `step` (default: the latest; 'best': the best kNN-monitor checkpoint), on this
    process's first device, and the step. `module="target_backbone"`: its momentum encoder
    (the export's --momentum_encoder; a ConfigError when the method keeps none)."""
    from augself_jax.methods import build_model  # the model definition lives with the methods

    subdir, step, steps = _pick_step(workdir, step)

    abstract_model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(config.seed)))
    if getattr(abstract_model, module, None) is None:
        raise ConfigError(f"method.name: the {config.method.name} model keeps no {module}")
    graphdef, params, rest = nnx.split(getattr(abstract_model, module), nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          {"params": {module: params}, "rest": {module: rest}})
    target_nested = to_nested(target)

    path = checkpoint_dir(workdir, subdir) / str(step)
    manager = _manager(checkpoint_dir(workdir, subdir), read_only=True)
    try:
        stored = manager.item_metadata(step)["state"]
        if stored is None:
            raise ValueError("no array metadata")
        _check_matches(target_nested, stored, config, path.parent)
        # The backbone alone: a partial restore, which only the PyTree handler offers (the
        # manager registered the Standard handler for "state"; the on-disk format is shared).
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = {"state": checkpointer.restore(
                path / "state", args=ocp.args.PyTreeRestore(
                    target_nested, restore_args=ocp.checkpoint_utils.construct_restore_args(
                        target_nested), partial_restore=True))}
    except ConfigError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} cannot be read ({failure_cause(e)}); pick another step "
                              f"with --step (steps: {', '.join(map(str, steps))})") from e
    finally:
        manager.close()
    values = from_nested(restored["state"], target)
    bad = first_non_finite(values)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or Inf in {bad}; a diverged model is not "
                              f"evaluated (steps: {', '.join(map(str, steps))}; --step picks one)")
    backbone = nnx.merge(graphdef, values["params"][module], values["rest"][module])
    backbone.eval()
    return backbone, step


def _check_matches(target: dict, stored: Any, config: ml_collections.ConfigDict,
                   directory: epath.Path) -> None:
    """ConfigError naming the first backbone array that the checkpoint lacks or shapes
    differently from what the config builds."""
    def walk(t: dict, s: Any, prefix: str) -> None:
        for key, value in t.items():
            name = f"{prefix}/{key}" if prefix else key
            if not hasattr(s, "keys") or key not in s:
                raise ConfigError(
                    f"model: the config's backbone ({_describe_model(config)}) does not match "
                    f"the checkpoint in {directory}: it has no {name}")
            if isinstance(value, dict):
                walk(value, s[key], name)
            elif tuple(s[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"model: the config's backbone ({_describe_model(config)}) does not match "
                    f"the checkpoint in {directory}: {name} has shape "
                    f"{tuple(s[key].shape)} there, {tuple(value.shape)} in the config")

    walk(target, stored, "")


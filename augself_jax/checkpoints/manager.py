"""The trainer's checkpoints: asynchronous saves of the whole train state, the last K kept,
and the resume's restore of the newest good step (the layout is `store.py`'s).

Every failure a user can meet here (an unreadable step, a failed save, a checkpoint
that does not fit the config, non-finite values) is a one-line ConfigError or
CheckpointError naming the path and the cause.
"""

import json
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from augself_jax.checkpoints.store import (
    CHECKPOINT_SUBDIR,
    META_FILE,
    UNREADABLE_SUBDIR,
    checkpoint_dir,
    failure_cause,
    first_non_finite,
    from_nested,
    open_manager,
    sync_processes,
    to_nested,
    tree_mismatch,
)
from augself_jax.errors import CheckpointError, ConfigError


class TrainCheckpointer:
    """Asynchronous saves of the whole train state in WORKDIR/`subdir`, keeping the last
    `keep` (the trainer's best checkpoint is a second one, subdir=BEST_SUBDIR, keep=1).

    A background save that fails is reported by the next call to `check_for_errors`,
    `save`, `wait` or `close` as one CheckpointError naming the step's path and the cause;
    the earlier checkpoints stay (Orbax prunes old steps only after a save commits)."""

    def __init__(self, workdir: str | epath.Path, *, keep: int, async_save: bool = True,
                 subdir: str = CHECKPOINT_SUBDIR):
        self._dir = checkpoint_dir(workdir, subdir)
        self._manager = open_manager(self._dir, keep=keep, async_save=async_save)
        self._pending_step: int | None = None  # the save that may still be in flight
        self._last_attempted: int | None = None
        self._last_committed: int | None = self._manager.latest_step()
        self._closed = False

    @property
    def directory(self) -> epath.Path:
        return self._dir

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
        path = self._dir / str(step) / "meta" / META_FILE
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
        steps = sorted(self._manager.all_steps())
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
        sync_processes(f"set_aside_{step}")
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

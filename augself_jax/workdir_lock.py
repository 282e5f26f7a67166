"""One run per workdir: a lock file, WORKDIR/run.lock, held by process 0 for a run's life.

The file is JSON naming its holder: program, host, pid, the pid's kernel start time, the
start time, and a heartbeat rewritten every HEARTBEAT_S seconds by a daemon thread. Rules:

- A run whose lock is held refuses at once (ConfigError: one line naming the holder).
- A lock of this host whose pid is gone (or now belongs to another process, told by the
  kernel's start time) is stale: it is taken over, with a line that says so.
- A lock of another host (a workdir on a shared file system or a bucket) is stale when its
  heartbeat is older than LEASE_S: its holder cannot be asked whether it lives, so the lease
  decides. A live holder rewrites the heartbeat long before the lease ends.
- Locally the lock is created with O_EXCL, so of two starts exactly one wins. On `gs://`
  (and any other URL) object storage offers no exclusive create through epath: the lock is
  written, then read back after SETTLE_S; a start that finds another holder's token there
  refuses. Two starts within that window may both see their own write only in the rare
  case that the store is not read-after-write consistent; GCS is.

Only process 0 takes the lock; every process learns the outcome (`hold_workdir`), so a
multi-process run takes it once. The holder removes the file when the run ends; a run
killed with SIGKILL leaves it, and the next run takes it over by the rules above.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from etils import epath

from augself_jax.errors import ConfigError

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
LEASE_S = 300.0  # 10 missed heartbeats
SETTLE_S = 2.0  # gs://: how long after writing the lock it is read back


def _is_url(workdir: str) -> bool:
    return "://" in workdir


def _pid_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22);
    None where /proc is not readable. A reused pid has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) is in parentheses and may hold spaces.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start_time: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    if start_time is None:
        return True
    now = _pid_start_time(pid)
    return now is None or now == start_time


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def describe(holder: dict) -> str:
    """`main.py (pid 123 on host h, started 2026-01-01 10:00:00 UTC)`."""
    started = holder.get("started")
    when = _utc(started) if isinstance(started, (int, float)) else "at an unknown time"
    return (f"{holder.get('program', 'a run')} (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {when})")


def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why the lock `holder` describes is stale, or None while its holder may be running."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"], holder.get("pid_start")):
            return "its process is no longer running"
        return None
    beat = holder.get("heartbeat")
    if not isinstance(beat, (int, float)):
        return "it has no heartbeat"
    if now - beat > LEASE_S:
        return f"its last heartbeat was {now - beat:.0f} s ago (the lease is {LEASE_S:.0f} s)"
    return None


class WorkdirLock:
    """The lock of one workdir, for process 0. `acquire` raises ConfigError when another run
    holds it; `release` removes it when it is still ours."""

    def __init__(self, workdir: str, program: str, report: Callable[[str], None] = print):
        self.workdir = workdir
        self.path = epath.Path(workdir) / LOCK_FILE
        self.report = report
        now = time.time()
        self.record = {"program": program, "host": socket.gethostname(), "pid": os.getpid(),
                       "pid_start": _pid_start_time(os.getpid()), "started": now,
                       "heartbeat": now, "token": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    # -- reading and writing the file -----------------------------------------------------
    def _read(self) -> dict | None:
        """The current holder; {} for a file that is not a lock record (half-written by a
        killed run: stale); None when there is no lock."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _text(self) -> str:
        return json.dumps(self.record, indent=2, sort_keys=True) + "\n"

    def _create_local(self) -> bool:
        """Writes the lock where none is; False when one appeared first."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._text())
        return True

    def _create_url(self) -> bool:
        if self.path.exists():
            return False
        self.path.write_text(self._text())
        time.sleep(SETTLE_S)
        holder = self._read()
        return bool(holder) and holder.get("token") == self.record["token"]

    def _rewrite(self) -> None:
        """The heartbeat: local files are replaced by a rename (never seen half-written)."""
        if _is_url(self.workdir):
            self.path.write_text(self._text())
            return
        partial = self.path.parent / f".{LOCK_FILE}.{self.record['token']}"
        partial.write_text(self._text())
        partial.replace(self.path)

    # -- the protocol ---------------------------------------------------------------------
    def acquire(self) -> None:
        create = self._create_url if _is_url(self.workdir) else self._create_local
        for _ in range(3):  # a lock removed or taken over between our read and write: retry
            if create():
                self._start_heartbeat()
                return
            holder = self._read()
            if holder is None:
                continue
            reason = stale_reason(holder)
            if reason is None:
                raise ConfigError(
                    f"workdir: {self.workdir} is in use by {describe(holder)}; one run per "
                    f"workdir: wait for it to end, or pass another --workdir (its lock, "
                    f"{LOCK_FILE}, is taken over without asking once that run has ended)")
            if not self._set_aside(holder):
                continue
            self.report(f"workdir: took over the lock of {describe(holder)} in {self.path}: "
                        f"{reason}")
        raise ConfigError(f"workdir: could not take the lock {self.path}: other runs keep "
                          "starting in this workdir; one run per workdir")

    def _set_aside(self, holder: dict) -> bool:
        """Removes the stale lock `holder` unless another run replaced it meanwhile."""
        if _is_url(self.workdir):
            if self._read() != holder:
                return False
            self.path.unlink(missing_ok=True)
            return True
        # A rename is atomic: of two runs taking over the same stale lock, one moves it.
        aside = self.path.parent / f".{LOCK_FILE}.stale.{self.record['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = json.loads(aside.read_text())
        except ValueError:
            moved = {}
        if moved != holder and stale_reason(moved) is None:
            os.rename(aside, self.path)  # not the lock we judged: put it back, look again
            return False
        aside.unlink()
        return True

    def _start_heartbeat(self) -> None:
        self._held = True

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                self.record["heartbeat"] = time.time()
                with contextlib.suppress(OSError):
                    self._rewrite()

        self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stops the heartbeat and removes the lock if it is still ours."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            holder = self._read()
            if holder and holder.get("token") == self.record["token"]:
                self.path.unlink()


@contextlib.contextmanager
def hold_workdir(workdir: str, program: str, report: Callable[[str], None] = print
                 ) -> Iterator[None]:
    """Holds WORKDIR's lock for the body (process 0 takes it; with several processes every
    one learns whether it did, and all refuse together). ConfigError when it is held."""
    import jax

    lock = WorkdirLock(workdir, program, report) if jax.process_index() == 0 else None
    error: ConfigError | None = None
    if lock is not None:
        try:
            lock.acquire()
        except ConfigError as e:
            error = e
        except OSError as e:  # not left unsaid: the other processes wait for the outcome
            error = ConfigError(f"workdir: cannot write its lock {lock.path} ({e.strerror or e})")
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = ConfigError(f"workdir: {workdir} is in use by another run (process 0 "
                                "names it); one run per workdir")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()

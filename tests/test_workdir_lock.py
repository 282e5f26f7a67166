"""One run per workdir (augself_jax/workdir_lock.py): a held lock refuses a second run in one
line naming its holder; a lock whose process is gone, or whose heartbeat is older than the
lease, is taken over with a line saying so; the holder's heartbeat keeps it fresh; a
release removes only the holder's own lock; a gs:// workdir gets the same rules.

The end-to-end cases (two real main.py processes, evaluate.py while main.py runs) are in
tests/test_refusals_write_nothing.py."""

import datetime
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from test_workdir_io import fake_gcs  # noqa: F401 (a fixture)

from augself_jax import workdir_lock
from augself_jax.errors import ConfigError
from augself_jax.workdir_lock import LOCK_FILE, WorkdirLock, hold_workdir


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _write_lock(workdir, **record) -> None:
    (workdir / LOCK_FILE).write_text(json.dumps(record))


def test_a_held_lock_refuses_a_second_run_naming_the_holder(tmp_path):
    first = WorkdirLock(str(tmp_path), "main.py")
    first.acquire()
    record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert (record["host"], record["pid"], record["program"]) == (
        socket.gethostname(), os.getpid(), "main.py")
    started = datetime.datetime.fromtimestamp(record["started"], datetime.UTC)
    with pytest.raises(ConfigError) as e:
        WorkdirLock(str(tmp_path), "evaluate.py").acquire()
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"workdir: {tmp_path} is in use by main.py")
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
    assert started.strftime("started %Y-%m-%d %H:%M:%S UTC") in line
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    second = WorkdirLock(str(tmp_path), "evaluate.py")
    second.acquire()  # free again
    second.release()


def test_a_dead_process_lock_is_taken_over_with_a_line(tmp_path):
    pid = _dead_pid()
    _write_lock(tmp_path, program="main.py", host=socket.gethostname(), pid=pid,
                started=time.time() - 60, heartbeat=time.time())
    lines = []
    lock = WorkdirLock(str(tmp_path), "main.py", report=lines.append)
    lock.acquire()
    assert len(lines) == 1 and lines[0].startswith("workdir: took over the lock of main.py "
                                                   f"(pid {pid} on host ")
    assert lines[0].endswith("its process is no longer running")
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert os.listdir(tmp_path) == []  # the stale lock was not kept anywhere


def test_a_reused_pid_is_told_by_its_start_time(tmp_path):
    # Our own pid, alive, but recorded with another kernel start time: a pid reused since.
    _write_lock(tmp_path, program="main.py", host=socket.gethostname(), pid=os.getpid(),
                pid_start="1", started=time.time(), heartbeat=time.time())
    lines = []
    lock = WorkdirLock(str(tmp_path), "main.py", report=lines.append)
    lock.acquire()
    assert len(lines) == 1 and "no longer running" in lines[0]
    lock.release()


def test_another_hosts_lock_is_held_until_its_lease_ends(tmp_path):
    now = time.time()
    _write_lock(tmp_path, program="main.py", host="node-7", pid=1, started=now - 3600,
                heartbeat=now - 10)
    with pytest.raises(ConfigError, match="in use by main.py \\(pid 1 on host node-7"):
        WorkdirLock(str(tmp_path), "main.py").acquire()
    _write_lock(tmp_path, program="main.py", host="node-7", pid=1, started=now - 3600,
                heartbeat=now - workdir_lock.LEASE_S - 5)
    lines = []
    lock = WorkdirLock(str(tmp_path), "main.py", report=lines.append)
    lock.acquire()
    assert len(lines) == 1 and "node-7" in lines[0] and "last heartbeat was" in lines[0]
    lock.release()


def test_a_half_written_lock_is_stale(tmp_path):
    (tmp_path / LOCK_FILE).write_text('{"host": "vm", "pi')
    lines = []
    lock = WorkdirLock(str(tmp_path), "main.py", report=lines.append)
    lock.acquire()
    assert len(lines) == 1 and "no heartbeat" in lines[0]
    lock.release()


def test_the_heartbeat_advances_and_release_keeps_a_lock_not_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
    lock = WorkdirLock(str(tmp_path), "main.py")
    lock.acquire()
    first = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] == first:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.02)
    lock._stop.set()  # the heartbeat must not rewrite the other run's lock below
    lock._thread.join()
    other = {"program": "main.py", "host": "node-2", "pid": 5, "token": "theirs"}
    _write_lock(tmp_path, **other)  # taken over by another run meanwhile
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == other


def test_hold_workdir_holds_for_the_body_only(tmp_path):
    with hold_workdir(str(tmp_path), "evaluate.py"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["program"] == "evaluate.py"
        with pytest.raises(ConfigError, match="in use by evaluate.py"):
            with hold_workdir(str(tmp_path), "main.py"):
                pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_gs_workdir_gets_a_lease_file_with_the_same_rules(fake_gcs, monkeypatch):  # noqa: F811
    monkeypatch.setattr(workdir_lock, "SETTLE_S", 0.0)
    workdir = "gs://bkt/runs/a"
    lock = WorkdirLock(workdir, "main.py")
    lock.acquire()
    record = json.loads(fake_gcs.cat(f"{workdir}/{LOCK_FILE}"))
    assert record["pid"] == os.getpid() and record["heartbeat"] >= record["started"]
    with pytest.raises(ConfigError, match=f"{workdir} is in use by main.py"):
        WorkdirLock(workdir, "main.py").acquire()
    lock.release()
    assert not fake_gcs.exists(f"{workdir}/{LOCK_FILE}")
    fake_gcs.pipe(f"{workdir}/{LOCK_FILE}", json.dumps(
        {"program": "main.py", "host": "tpu-vm-3", "pid": 9, "started": 0.0,
         "heartbeat": time.time() - workdir_lock.LEASE_S - 1}).encode())
    lines = []
    lock = WorkdirLock(workdir, "main.py", report=lines.append)
    lock.acquire()
    assert len(lines) == 1 and "tpu-vm-3" in lines[0]
    lock.release()

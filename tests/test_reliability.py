"""A run survives preemption, divergence, a full disk, a corrupt checkpoint and a changed
config, and says so in one line (README "Reliability").

One uninterrupted in-process run (the `reference`) is the independent expectation: a run
stopped by a signal, or resumed past a corrupt step, must end with its exact bits. User
errors are checked by running `python main.py` / `evaluate.py` as a user does, from a
temporary directory with a relative --workdir. The slower whole-CLI versions (a real
SIGTERM to a running main.py, a full tmpfs, a diverging run and evaluate.py on a NaN
checkpoint) are marked slow.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train_support import ROOT, config_with, host_leaves

from augself_jax import checkpoints
from augself_jax.errors import CheckpointError, ConfigError, DivergedError
from augself_jax.train import loop

TOTAL = 6
OVERRIDES = {
    "total_steps": TOTAL, "batch_size": 16, "log_every": 1, "checkpoint_every": 2,
    "knn_every": 0, "xla_fast_compile": True, "data.image_size": 16, "model.width": 4,
    "augself.hidden": 16, "method.proj_hidden": 32, "method.proj_out": 16,
}
CONFIG_FILE = os.path.join(ROOT, "configs", "simclr_augself.py")


def _config(data_dir: str, **changes):
    return config_with({**OVERRIDES, **changes}, data_dir)


def _flags(data_dir: str, **changes) -> list[str]:
    return [f"--config={CONFIG_FILE}:shapes"] + [
        f"--config.{k}={v}" for k, v in {**OVERRIDES, **changes}.items()] + [
        f"--config.data.data_dir={data_dir}"]


def _run(script: str, args: list[str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python <script> <args>` typed in `cwd`."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _user_lines(stderr: str) -> list[str]:
    """stderr without the libraries' own log lines (absl-format `I1123 ...`, the C++
    start-up banners of TensorFlow and XLA, Python warnings)."""
    noise = ("WARNING: All log messages before absl", "oneDNN", "warnings.warn")
    return [line for line in stderr.splitlines() if line.strip()
            and not any(n in line for n in noise)
            and not (line[:1] in "IWE" and line[1:5].isdigit())
            and "Warning:" not in line]


def _one_line(result: subprocess.CompletedProcess, prefix: str, status: int = 2) -> str:
    """The whole of stderr is one line (no TensorFlow, absl or Orbax banner either)."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def _snapshot(workdir) -> dict[str, bytes]:
    """Every file under `workdir` (relative path) and its bytes."""
    found = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, workdir)] = f.read()
    return found


def _stored(workdir, step: int) -> dict[str, np.ndarray]:
    """The arrays of a step as Orbax reads them back, named by path (independent of the
    trainer's own restore)."""
    path = os.path.join(str(workdir), "checkpoints", str(step), "state")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore(path)
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _same_state(result: loop.TrainResult, expected: loop.TrainResult) -> None:
    assert int(result.state.step) == int(expected.state.step) == TOTAL
    for part in ("params", "rest", "opt_state"):
        a, b = host_leaves(getattr(result.state, part)), host_leaves(getattr(expected.state, part))
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.tobytes() == y.tobytes(), part


@pytest.fixture(scope="module")
def reference(shapes_data_dir, tmp_path_factory):
    """An uninterrupted run: (workdir with checkpoints 2, 4, 6, its result)."""
    workdir = tmp_path_factory.mktemp("reference")
    result = loop.train(_config(shapes_data_dir), str(workdir))
    assert checkpoints.all_steps(workdir) == [2, 4, 6]
    return workdir, result


# 2. Every documented override parses from the command line --------------------------------

DOCUMENTED_OVERRIDES = (  # the README's override lines, each with a valid value
    "--config.optimizer.base_lr=0.05", "--config.batch_size=512", "--config.total_steps=1000",
    "--config.optimizer.name=lars", "--config.method.name=moco",
    "--config.method.moco_enqueue=queries", "--config.augself.rotation=0.5",
    "--config.augself.reference=True", "--config.cassle.enabled=True",
    "--config.cassle.descriptor_keys=crop,color", "--config.cassle.mode=proj-add",
    "--config.optimizer.warmup_epochs=2", "--config.aug.rotation_prob=0.5",
    "--config.eval.protocols=linear,knn",
    "--config.eval.datasets=cifar10,dtd", "--config.eval.manual_dir=/manual",
)


def test_every_documented_override_parses_from_the_command_line(shapes_data_dir):
    from absl import flags
    from ml_collections import config_flags

    from augself_jax.app import validate_config

    argv = ["main.py", f"--config={CONFIG_FILE}:shapes", *DOCUMENTED_OVERRIDES,
            f"--config.data.data_dir={shapes_data_dir}"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    c = values.config
    assert c.cassle.descriptor_keys == "crop,color" and c.cassle.enabled
    assert (c.optimizer.base_lr, c.batch_size, c.optimizer.name) == (0.05, 512, "lars")
    assert (c.method.moco_enqueue, c.augself.rotation, c.eval.manual_dir) == (
        "queries", 0.5, "/manual")
    validate_config(c, num_devices=8)


# 7. Every error a user can cause is one line, exit status 2 ------------------------------

@pytest.mark.parametrize("args,expected", [
    (["--config.nonexistent=1"], "config error: config.nonexistent: no such field"),
    (["--config.optimizer.nope=1"], "config error: config.optimizer.nope: no such field"),
    (["--config.batch_size=abc"], "config error: flag --config.batch_size=abc"),
])
def test_a_bad_override_is_one_line(args, expected, tmp_path):
    result = _run("main.py", [f"--config={CONFIG_FILE}:shapes", "--workdir=run", *args],
                  cwd=tmp_path)
    assert _one_line(result, expected)
    assert not (tmp_path / "run").exists()


def test_an_unknown_preset_or_config_file_is_one_line(tmp_path):
    line = _one_line(_run("main.py", [f"--config={ROOT}/configs/simclr.py:nope",
                                      "--workdir=run"], cwd=tmp_path), "config error: ")
    assert "unknown 'nope'" in line and "shapes" in line
    line = _one_line(_run("main.py", ["--config=configs/nofile.py", "--workdir=run"],
                          cwd=tmp_path), "config error: ")
    assert "configs/nofile.py" in line and "No such file" in line
    assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_or_missing_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a workdir")
    line = _one_line(_run("main.py", [f"--config={CONFIG_FILE}:shapes",
                                      "--workdir=notes.txt"], cwd=tmp_path),
                     "config error: workdir:")
    assert "notes.txt is a file" in line
    # evaluate.py reads an earlier run: a mistyped workdir is refused, not created.
    line = _one_line(_run("evaluate.py", [f"--config={CONFIG_FILE}:shapes",
                                          "--workdir=runs/typo"], cwd=tmp_path),
                     "config error: workdir:")
    assert "runs/typo does not exist" in line
    assert not (tmp_path / "runs").exists()


# 3. A changed config is refused before anything is written -------------------------------

def test_a_changed_config_stops_with_one_line_and_leaves_the_workdir_alone(
        reference, shapes_data_dir, tmp_path):
    workdir, _ = reference
    shutil.copytree(workdir, tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    result = _run("main.py", ["--workdir=run", *_flags(shapes_data_dir, batch_size=32, seed=1)],
                  cwd=tmp_path)
    line = _one_line(result, "config error: resume:")
    assert "batch_size 16 -> 32" in line and "seed 0 -> 1" in line
    assert "checkpoints" in line and "new --workdir" in line
    # Not a byte written: no config.json, no events file, no lock left behind.
    assert _snapshot(tmp_path / "run") == before


def test_the_contract_is_checked_in_process_too(reference, shapes_data_dir, tmp_path):
    workdir, _ = reference
    shutil.copytree(workdir, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"method.name \"simclr\" -> \"byol\""):
        loop.train(_config(shapes_data_dir, **{"method.name": "byol"}),
                                str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="schedule_length 6 -> 8") as e:
        loop.train(_config(shapes_data_dir, total_steps=8), str(tmp_path / "run"))
    # total_steps changed the schedule: it is not listed as plainly safe to change.
    safe = str(e.value).split("safe to change on resume: ")[1]
    assert "total_steps" not in safe.split(";")[0] and "log_every" in safe
    assert "total_steps and num_epochs only where they give the same schedule length" in safe


# 4. A corrupt latest step: fall back, keep it aside, end bit-identical --------------------

def _corrupt(step_dir, how: str) -> None:
    data = step_dir / "state" / "ocdbt.process_0" / "d"
    if how == "truncated":
        for f in data.iterdir():
            with open(f, "r+b") as handle:
                handle.truncate(8)
    elif how == "deleted":
        for f in data.iterdir():
            f.unlink()
    elif how == "garbage_meta":
        (step_dir / "meta" / "metadata").write_text("\x00garbage{")
    elif how == "garbage_array_metadata":
        (step_dir / "state" / "_METADATA").write_text("garbage")


@pytest.mark.parametrize("how", ["truncated", "deleted", "garbage_meta",
                                 "garbage_array_metadata"])
def test_a_corrupt_latest_step_falls_back_to_the_previous_one(
        how, reference, shapes_data_dir, tmp_path, capsys):
    ref_dir, expected = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    _corrupt(workdir / "checkpoints" / "6", how)

    result = loop.train(_config(shapes_data_dir), str(workdir))
    captured = capsys.readouterr()
    about = [line for line in captured.err.splitlines() if "checkpoints/6" in line]
    assert len(about) == 1 and about[0].startswith("checkpoint error:"), captured.err
    assert f"{workdir}/checkpoints/6 cannot be restored" in about[0]
    assert "resuming from the checkpoint at step 4" in captured.out
    # Moved aside, never deleted; steps 5 and 6 run again and end with the uninterrupted
    # run's bits.
    assert (workdir / "unreadable_checkpoints" / "6" / "state").is_dir()
    assert checkpoints.all_steps(workdir) == [2, 4, 6]
    _same_state(result, expected)


def test_no_restorable_step_is_one_line(reference, shapes_data_dir, tmp_path):
    ref_dir, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    for step in (2, 4, 6):
        _corrupt(workdir / "checkpoints" / str(step), "garbage_meta")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints restores") as e:
        loop.train(_config(shapes_data_dir), str(workdir))
    assert "\n" not in str(e.value) and "new --workdir" in str(e.value)
    assert sorted(os.listdir(workdir / "unreadable_checkpoints")) == ["2", "4", "6"]


# 6. SIGTERM and Ctrl-C: save at the step boundary, exit cleanly, resume exactly ----------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_at_the_next_step_and_the_resume_is_exact(
        signum, reference, shapes_data_dir, tmp_path, monkeypatch, capsys):
    from augself_jax.data import global_batch

    _, expected = reference
    real = global_batch.make_global_batch
    calls = []

    def make_global_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # arrives while step 3 is being prepared
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(global_batch, "make_global_batch", make_global_batch)
    # No device prefetch, so the third transfer is step 3's; the resume below prefetches.
    stopped = loop.train(_config(shapes_data_dir, **{"data.device_prefetch": 0}), str(tmp_path))
    monkeypatch.undo()
    assert stopped.stopped_by == signal.Signals(signum).name
    assert int(stopped.state.step) == 3 and checkpoints.all_steps(tmp_path) == [2, 3]
    out = capsys.readouterr().out
    assert f"stopped by {signal.Signals(signum).name} at step 3 of 6: saved the checkpoint at " \
           f"step 3 in {tmp_path}/checkpoints" in out
    # log_every is a safe change on resume.
    resumed = loop.train(_config(shapes_data_dir, log_every=2), str(tmp_path))
    assert resumed.stopped_by is None
    _same_state(resumed, expected)


# 5. A failed save stops the run at once and keeps the last good checkpoint ----------------

def _mount_tmpfs(mount, options: str) -> None:
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB tmpfs, filled up by the test when it chooses."""
    mount = tmp_path / "disk"
    _mount_tmpfs(mount, "size=64m")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _fill(disk) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def test_a_full_disk_stops_at_the_failed_save_and_keeps_the_last_good(
        small_disk, shapes_data_dir, monkeypatch, capsys):
    from augself_jax.data import global_batch

    workdir = small_disk / "run"
    real, calls = global_batch.make_global_batch, []

    def make_global_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the step-2 save has started: let it commit, then fill the disk
            deadline = time.monotonic() + 120
            while not (workdir / "checkpoints" / "2").is_dir() and time.monotonic() < deadline:
                time.sleep(0.05)
            _fill(small_disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(global_batch, "make_global_batch", make_global_batch)
    with pytest.raises(CheckpointError) as e:  # no device prefetch: transfer 3 is step 3's
        loop.train(_config(shapes_data_dir, **{"data.device_prefetch": 0}), str(workdir))
    message = str(e.value)
    assert "\n" not in message
    assert f"could not save step 4 to {workdir}/checkpoints/4: No space left on device; " \
           "stopped" in message
    assert f"last good checkpoint is step 2 in {workdir}/checkpoints" in message
    assert checkpoints.all_steps(workdir) == [2]
    assert "done:" not in capsys.readouterr().out
    assert all(np.isfinite(x).all() for x in _stored(workdir, 2).values()
               if x.dtype.kind == "f")


# 1. Only a finite state is ever saved; evaluation refuses a non-finite one ----------------

@pytest.fixture(scope="module")
def diverged(shapes_data_dir, tmp_path_factory):
    """The issue's run: a learning rate of 1e6 (no warm-up), a checkpoint and a NaN check
    every step. Its loss stays finite at the step where the update first makes the state
    NaN (the loss is computed before the update)."""
    workdir = tmp_path_factory.mktemp("diverged")
    config = _config(shapes_data_dir, **{"optimizer.base_lr": 1e6, "checkpoint_every": 1,
                                         "optimizer.warmup_epochs": 0.0})
    with pytest.raises(DivergedError) as e:
        loop.train(config, str(workdir))
    return workdir, str(e.value)


def test_a_diverged_run_saves_only_finite_checkpoints(diverged):
    workdir, message = diverged
    saved = checkpoints.all_steps(workdir)
    for step in saved:
        for name, x in _stored(workdir, step).items():
            assert x.dtype.kind != "f" or np.isfinite(x).all(), (step, name)
    bad_step = int(message.split("at step ")[1].split(";")[0].split(" ")[0])
    assert all(s < bad_step for s in saved)
    last = f"step {max(saved)} in {workdir}/checkpoints" if saved else "none"
    assert f"The last good checkpoint is {last}" in message and "\n" not in message


def _save_poisoned(workdir, state, step: int) -> None:
    """A checkpoint at `step` whose first backbone array holds a NaN, as versions before
    the finite guard could write."""
    poisoned = []

    def poison(path, x):
        if not poisoned and "backbone" in jax.tree_util.keystr(path) and x.dtype.kind == "f":
            poisoned.append(path)
            return x.at[(0,) * x.ndim].set(np.nan)
        return x

    params = jax.tree_util.tree_map_with_path(poison, state.params)
    saver = checkpoints.TrainCheckpointer(workdir, keep=5, async_save=False)
    saver.save(step, state.replace(params=params), {"step": step, "data_position": step})
    saver.close()


def test_evaluation_refuses_a_non_finite_checkpoint(reference, shapes_data_dir, tmp_path):
    ref_dir, result = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    _save_poisoned(workdir, result.state, step=8)
    config = _config(shapes_data_dir)
    with pytest.raises(CheckpointError, match=r"checkpoints/8 holds NaN or Inf in "
                                              r"params/backbone/"):
        checkpoints.restore_backbone(workdir, config)
    assert checkpoints.restore_backbone(workdir, config, step=6)[1] == 6


# The whole CLI, as a user meets it (slow: each is one or two real trainings) --------------

def _main_flags(data_dir: str, **changes) -> list[str]:
    return ["--workdir=run", *_flags(data_dir, **changes)]


@pytest.mark.slow
def test_sigterm_to_a_running_main_py_then_resume_is_bit_identical(
        reference, shapes_data_dir, tmp_path):
    ref_dir, _ = reference
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"),
                             *_main_flags(shapes_data_dir)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step 3/{TOTAL}"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    stop_line = [line for line in lines if line.startswith("stopped by SIGTERM")]
    assert len(stop_line) == 1 and f"{tmp_path}/run/checkpoints" in stop_line[0], lines
    stopped_at = int(stop_line[0].split("at step ")[1].split(" ")[0])
    assert 3 <= stopped_at < TOTAL and checkpoints.latest_step(tmp_path / "run") == stopped_at

    resumed = _run("main.py", _main_flags(shapes_data_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from the checkpoint at step {stopped_at}" in resumed.stdout
    got, want = _stored(tmp_path / "run", TOTAL), _stored(ref_dir, TOTAL)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.slow
def test_cli_corrupt_latest_step_falls_back_in_one_line(reference, shapes_data_dir, tmp_path):
    ref_dir, _ = reference
    shutil.copytree(ref_dir, tmp_path / "run")
    _corrupt(tmp_path / "run" / "checkpoints" / "6", "truncated")
    result = _run("main.py", _main_flags(shapes_data_dir, total_steps=TOTAL), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    about = [line for line in _user_lines(result.stderr) if "checkpoints/6" in line]
    assert len(about) == 1 and "moved to" in about[0], result.stderr[-3000:]
    assert "resuming from the checkpoint at step 4" in result.stdout
    got, want = _stored(tmp_path / "run", TOTAL), _stored(ref_dir, TOTAL)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.slow
def test_cli_full_disk_is_one_line(shapes_data_dir, tmp_path):
    # A 2 MiB tmpfs: the config and the events file fit, no checkpoint of this width does
    # (~8 MB of parameters and optimizer state). The first save fails; the run stops there.
    _mount_tmpfs(tmp_path / "disk", "size=2m")
    try:
        # No warm-up: its "covers the whole run" warning is not what this test counts.
        result = _run("main.py", _main_flags(shapes_data_dir, **{
            "model.width": 16, "optimizer.warmup_epochs": 0.0}), cwd=tmp_path / "disk")
        steps = checkpoints.all_steps(tmp_path / "disk" / "run")
    finally:
        subprocess.run(["umount", "--lazy", str(tmp_path / "disk")], check=True)
    # One line, the whole of stderr: no Orbax error log, no asyncio traceback.
    line = _one_line(result, "checkpoint error: could not save step 2 to ")
    assert "run/checkpoints/2: No space left on device; stopped" in line
    assert line.endswith("The last good checkpoint is none")
    assert steps == []
    # Stopped at the step of the failed save: no progress line after it.
    progress = [x for x in result.stdout.splitlines() if x.startswith("step ")]
    assert progress and progress[-1].startswith(f"step 2/{TOTAL}"), result.stdout


@pytest.mark.slow
def test_cli_divergence_is_one_line_and_saves_only_finite_state(shapes_data_dir, tmp_path):
    result = _run("main.py", _main_flags(shapes_data_dir, **{
        "optimizer.base_lr": 1e6, "checkpoint_every": 1, "optimizer.warmup_epochs": 0.0}),
                  cwd=tmp_path)
    line = _one_line(result, "error: ", status=1)
    assert "stopped. The last good checkpoint is" in line
    for step in checkpoints.all_steps(tmp_path / "run"):
        assert all(np.isfinite(x).all() for x in _stored(tmp_path / "run", step).values()
                   if x.dtype.kind == "f")


@pytest.mark.slow
def test_cli_read_only_workdir_is_one_line(shapes_data_dir, tmp_path):
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "ro,size=1m")
    try:
        result = _run("main.py", ["--workdir=ro/run", *_flags(shapes_data_dir)], cwd=tmp_path)
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
    line = _one_line(result, "config error: workdir: cannot write to")
    assert "ro/run" in line and "Read-only file system" in line


@pytest.mark.slow
def test_cli_evaluate_refuses_a_non_finite_checkpoint(reference, shapes_data_dir, tmp_path):
    ref_dir, result = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    _save_poisoned(workdir, result.state, step=8)
    before = _snapshot(workdir)
    line = _one_line(_run("evaluate.py", ["--workdir=run", *_flags(shapes_data_dir)],
                          cwd=tmp_path), "checkpoint error:")
    assert "checkpoints/8 holds NaN or Inf" in line
    assert _snapshot(workdir) == before  # no eval_config.json, events file or eval/
    assert json.loads((workdir / "checkpoints" / "8" / "meta" / "metadata").read_text())

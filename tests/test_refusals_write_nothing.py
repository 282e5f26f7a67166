"""A refused command writes nothing, and one run at a time holds a workdir (README
"Reliability"), through `python main.py` / `evaluate.py` as a user types them.

Each refusal is one line on stderr (the whole of stderr: no TensorFlow, absl or Orbax
banner), exit status 2, and the workdir's file list and every file's bytes are what they
were before: no eval_config.json, no events file, no eval/. The trained workdir is a copy
of the session's tiny run (conftest.tiny_run). The cheapest refusals run in the default
suite; the rest are slow (each is one evaluate.py start-up, ~20-40 s here).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import (
    TINY_RUN_CONFIG,
    TINY_RUN_FLAGS,
    copy_checkout,
    reporting_imports,
    run_command,
    tiny_run_command,
)
from test_reliability import _snapshot

from augself_jax.workdir_lock import LOCK_FILE


def _the_one_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The whole stderr is one line starting with `prefix`; exit status 2."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def trained(tiny_run, tmp_path):
    """(checkout, a copy of the tiny run's workdir as `runs/w`, its snapshot)."""
    checkout, workdir, _ = tiny_run
    target = os.path.join(checkout, "runs", tmp_path.name)
    shutil.copytree(os.path.join(checkout, workdir), target)
    yield checkout, f"runs/{tmp_path.name}", _snapshot(target)
    shutil.rmtree(target)


def _evaluate(checkout, workdir, *args):
    return run_command(["evaluate.py", f"--workdir={workdir}", *args], cwd=checkout)


def test_evaluate_refuses_a_missing_step_and_writes_nothing(trained):
    checkout, workdir, before = trained
    # No --config: the workdir's config.json is read, and an eval override applies to it.
    line = _the_one_line(_evaluate(checkout, workdir, "--step=999",
                                   "--config.eval.protocols=knn"), "config error: step:")
    assert "no checkpoint at step 999" in line and "allowed: 1, 2 or best" in line
    assert _snapshot(os.path.join(checkout, workdir)) == before


def test_evaluate_refuses_another_methods_config_and_writes_nothing(trained):
    checkout, workdir, before = trained
    line = _the_one_line(_evaluate(checkout, workdir, "--config=configs/byol_augself.py:shapes"),
                         "config error: method: ")
    assert f"{workdir}/checkpoints was trained with another config" in line
    assert 'method.name "moco" -> "byol"' in line and "Leave out --config" in line
    assert _snapshot(os.path.join(checkout, workdir)) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", ["step_abc", "wider_model", "no_best_checkpoint"])
def test_more_refused_evaluations_write_nothing(trained, case):
    checkout, workdir, before = trained
    if case == "step_abc":
        args, prefix = ["--step=abc"], "config error: step:"
        expected = "'abc' is not a checkpoint step"
    elif case == "wider_model":  # the training's --config and flags, but for the width
        with open(os.path.join(checkout, workdir, "config.json")) as f:
            width = json.load(f)["model"]["width"]
        args = [f"--config={TINY_RUN_CONFIG}", *TINY_RUN_FLAGS,
                f"--config.model.width={width + 8}"]
        prefix, expected = "config error: model:", f"model.width {width} -> {width + 8}"
    else:  # a run without the kNN monitor has no best checkpoint
        shutil.rmtree(os.path.join(checkout, workdir, "best_checkpoint"))
        before = _snapshot(os.path.join(checkout, workdir))
        args, prefix, expected = ["--step=best"], "config error: step:", "no best checkpoint"
    line = _the_one_line(_evaluate(checkout, workdir, *args), prefix)
    assert expected in line
    assert _snapshot(os.path.join(checkout, workdir)) == before


# One run per workdir ------------------------------------------------------------------------

def _wait_for(path, proc, timeout=600) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.2)


def test_a_second_main_py_and_an_evaluate_py_refuse_while_main_py_runs(
        shapes_data_dir, tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    # A long run, stopped with SIGTERM once the others have been refused; a thinner model
    # than the tiny run's, compiled fast (its compile is most of this test's time).
    command = [*tiny_run_command("runs/w", shapes_data_dir), "--config.total_steps=100000",
               "--config.knn_every=0", "--config.checkpoint_every=100000",
               "--config.xla_fast_compile=True", "--config.data.image_size=16",
               "--config.model.width=4"]
    first = subprocess.Popen([sys.executable, *command], cwd=checkout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        workdir = os.path.join(checkout, "runs", "w")
        _wait_for(os.path.join(workdir, LOCK_FILE), first)
        _wait_for(os.path.join(workdir, "config.json"), first)
        holder = json.loads(open(os.path.join(workdir, LOCK_FILE)).read())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        others = [subprocess.Popen([sys.executable, *reporting_imports(args)],
                                   cwd=checkout, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
                  for args in (command, ["evaluate.py", "--workdir=runs/w"])]
        for proc in others:
            stdout, stderr = proc.communicate(timeout=600)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
            line = _the_one_line(result, f"config error: workdir: {workdir} is in use by "
                                         f"main.py (pid {first.pid} on host ")
            assert "one run per workdir" in line
            # refused before TensorFlow's import, most of a refused run's time
            assert "tensorflow imported: False" in stdout, stdout[-500:]
        assert first.poll() is None  # the holder ran on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0 and stderr == "", stderr[-3000:]
    assert "stopped by SIGTERM" in stdout
    assert not os.path.exists(os.path.join(workdir, LOCK_FILE))  # released at the end


@pytest.mark.slow
def test_evaluate_takes_over_a_dead_processs_lock_in_one_line(trained):
    checkout, workdir, _ = trained
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    with open(os.path.join(checkout, workdir, LOCK_FILE), "w") as f:
        json.dump({"program": "main.py", "host": socket.gethostname(), "pid": dead,
                   "started": time.time() - 600, "heartbeat": time.time() - 30}, f)
    r = _evaluate(checkout, workdir, "--config.eval.protocols=knn",
                  "--config.eval.max_examples=64", "--config.eval.knn_k=1")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"workdir: took over the lock of main.py (pid {dead} on host "), lines
    assert lines[0].endswith("its process is no longer running")
    assert not os.path.exists(os.path.join(checkout, workdir, LOCK_FILE))
    assert os.path.exists(os.path.join(checkout, workdir, "eval_config.json"))

"""Exact resume: a main.py run killed mid-way and restarted ends with bit-identical state to
an uninterrupted run; plus the files a run leaves in its workdir."""

import glob
import os
import signal
import subprocess
import sys

import jax
import pytest
from test_train_support import ROOT, host_leaves, load_config

from augself_jax import checkpoints
from augself_jax.train import loop

TOTAL = 8
KILL_AT = 5  # checkpoints every 2 steps: 2 is complete by then, 4 may still be in flight

OVERRIDES = {
    "total_steps": TOTAL, "batch_size": 16, "log_every": 1, "checkpoint_every": 2,
    "knn_every": 0, "xla_fast_compile": True, "data.image_size": 16, "model.width": 4,
    "augself.hidden": 16, "method.proj_hidden": 32, "method.proj_out": 16,
}


def _config(data_dir):
    config = load_config("simclr_augself")
    for key, value in OVERRIDES.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.data.data_dir = data_dir
    return config


def _flags(data_dir):
    return ["--config=configs/simclr_augself.py:shapes"] + [
        f"--config.{k}={v}" for k, v in OVERRIDES.items()] + [f"--config.data.data_dir={data_dir}"]


@pytest.fixture(scope="module")
def killed_run(shapes_data_dir, tmp_path_factory):
    """main.py in a subprocess, SIGKILLed once it reports step KILL_AT."""
    workdir = str(tmp_path_factory.mktemp("killed"))
    proc = subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}",
                             *_flags(shapes_data_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step {KILL_AT}/{TOTAL}"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return workdir, lines


def test_killed_run_resumes_bit_identically(killed_run, shapes_data_dir, tmp_path, capsys):
    workdir, lines = killed_run
    assert any(line.startswith(f"step {KILL_AT}/{TOTAL}") for line in lines), lines
    saved = checkpoints.all_steps(workdir)
    assert saved and max(saved) < TOTAL and max(saved) >= 2

    config = _config(shapes_data_dir)
    resumed = loop.train_and_evaluate(config, workdir)
    assert f"resuming from the checkpoint at step {max(saved)}" in capsys.readouterr().out
    fresh = loop.train_and_evaluate(config, str(tmp_path))
    assert int(resumed.state.step) == int(fresh.state.step) == TOTAL
    for part in ("params", "rest", "opt_state"):
        a, b = host_leaves(getattr(resumed.state, part)), host_leaves(getattr(fresh.state, part))
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.tobytes() == y.tobytes(), part
    assert checkpoints.latest_step(workdir) == TOTAL
    assert len(checkpoints.all_steps(workdir)) <= config.keep_checkpoints

    # Restarting a finished run does nothing.
    loop.train_and_evaluate(config, workdir)
    assert "nothing to do" in capsys.readouterr().out

    # The files an uninterrupted run leaves: TensorBoard events and the final checkpoint.
    assert glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))
    assert checkpoints.latest_step(tmp_path) == TOTAL
    backbone, step = checkpoints.restore_backbone(tmp_path, config)
    assert step == TOTAL
    x = jax.numpy.zeros((2, 16, 16, 3))
    assert backbone(x).shape == (2, backbone.num_features)


def test_cli_run_writes_config_and_progress_lines(killed_run):
    workdir, lines = killed_run
    with open(os.path.join(workdir, "config.json")) as f:
        text = f.read()
    assert '"total_steps": 8' in text and '"image_size": 16' in text
    progress = [line for line in lines if line.startswith("step ")]
    assert progress[0].startswith("step 1/8 ") and "loss=" in progress[0]
    assert "steps/s" in progress[0] and "augself/crop=" in progress[0]


def test_divergence_names_the_step_and_last_checkpoint(tmp_path):
    loop.check_finite(1.5, 10, None, str(tmp_path))
    with pytest.raises(loop.DivergedError, match="at step 30.*last good checkpoint is step 20"):
        loop.check_finite(float("nan"), 30, 20, str(tmp_path))
    with pytest.raises(loop.DivergedError, match="inf at step 3.*none"):
        loop.check_finite(float("inf"), 3, None, str(tmp_path))


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(shapes_data_dir, tmp_path):
    config = _config(shapes_data_dir)
    config.checkpoint_every = 1
    config.optimizer.base_lr = 1e12  # diverges within a few steps
    with pytest.raises(loop.DivergedError, match=r"at step (\d+); stopped") as e:
        loop.train_and_evaluate(config, str(tmp_path))
    bad_step = int(str(e.value).split("at step ")[1].split(";")[0])
    saved = checkpoints.all_steps(tmp_path)
    assert all(s < bad_step for s in saved)
    if saved:
        assert f"last good checkpoint is step {max(saved)}" in str(e.value)

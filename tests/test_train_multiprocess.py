"""Two CPU processes joined by jax.distributed on localhost (launch/local_multiprocess.sh)
train the same model as one process fed the same global batches. Slow (one to three
minutes): the default suite's real two-process run is the README's local_multiprocess.sh
command in test_launch; this one adds the parity of the updates."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_train_support import ROOT, config_with, host_leaves

from augself_jax import checkpoints
from augself_jax.data.global_batch import make_global_batch
from augself_jax.data.pipeline import make_pretrain_iterator
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import state as state_lib
from augself_jax.train.step import STEP_KEYS, make_train_step

STEPS = 3
OVERRIDES = {
    "total_steps": STEPS, "batch_size": 16, "log_every": 1, "checkpoint_every": STEPS,
    "knn_every": 0, "xla_fast_compile": True, "data.image_size": 16, "model.width": 4,
    "augself.hidden": 16, "method.proj_hidden": 32, "method.proj_out": 16,
}


def tiny_config_from(data_dir):
    """The config the command line's OVERRIDES make, built in-process."""
    return config_with(OVERRIDES, data_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(shapes_data_dir, tmp_path):
    workdir = tmp_path / "two"
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--num_processes=2",
         "--devices_per_process=1", f"--port={_free_port()}", f"--workdir={workdir}", "--",
         *flags, f"--config.data.data_dir={shapes_data_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(workdir / "process_0.log") as f:
        assert f"step {STEPS}/{STEPS}" in f.read()
    assert checkpoints.latest_step(workdir) == STEPS

    # One process, two devices, fed the concatenation of what the two processes read.
    config = tiny_config_from(shapes_data_dir)
    config.total_steps = STEPS
    mesh = mesh_lib.make_mesh(config, jax.devices()[:2])
    setup = state_lib.make_setup(config, mesh)
    state = state_lib.init_state(config, setup)
    initial = {part: host_leaves(getattr(state, part)) for part in ("params", "rest")}
    train_step = make_train_step(config, setup)
    shards = [make_pretrain_iterator(config, process_index=i, process_count=2) for i in (0, 1)]
    for _ in range(STEPS):
        parts = [next(it) for it in shards]
        host = jax.tree.map(lambda *xs: np.concatenate(xs),
                            *[{k: p[k] for k in STEP_KEYS} for p in parts])
        state, _ = train_step(state, make_global_batch(host, mesh))

    ckpt = checkpoints.TrainCheckpointer(workdir, keep=1)
    restored, _ = ckpt.restore(STEPS, setup.abstract_state)
    ckpt.close()
    # The updates agree, to well below their own size (the weights alone would agree
    # to 1e-4 even if the two processes had not trained at all).
    for part in ("params", "rest"):
        one = [x - x0 for x, x0 in zip(host_leaves(getattr(state, part)), initial[part],
                                       strict=True)]
        two = [y - x0 for y, x0 in zip(host_leaves(getattr(restored, part)), initial[part],
                                       strict=True)]
        size = max(float(np.abs(u).max()) for u in one)
        assert size > 0, part
        err = max(float(np.abs(u - v).max()) for u, v in zip(one, two, strict=True))
        assert err < 0.01 * size, (part, err, size)

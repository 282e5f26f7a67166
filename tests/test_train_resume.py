"""Exact resume, as a user meets it: `python main.py` interrupted after a checkpoint and run
again with the same command ends bit-identical to an uninterrupted run, for MoCo (the queue
and its pointer) and BYOL (the momentum targets); plus the files a run leaves."""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import copy_checkout

TOTAL = 4
QUEUE = 48  # 4 steps of 16 keys wrap around a 48-row queue: the pointer ends at 16

FLAGS = (f"--config.total_steps={TOTAL}", "--config.batch_size=16", "--config.log_every=1",
         "--config.checkpoint_every=2", "--config.knn_every=0",
         f"--config.method.queue_size={QUEUE}")


def _arrays(run_dir, step):
    """Every array of checkpoint `step`, read with Orbax itself: {path: ndarray}."""
    path = os.path.join(run_dir, "checkpoints", str(step), "state")
    with ocp.PyTreeCheckpointer() as ckpt:
        tree = ckpt.metadata(path).item_metadata
        tree = dict(getattr(tree, "tree", tree))
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        nested = ckpt.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    flat, _ = jax.tree_util.tree_flatten_with_path(nested)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


@pytest.fixture(scope="module")
def runs(shapes_data_dir, tmp_path_factory):
    """For each method, from a copy of the checkout with relative workdirs:
    `runs/full`, an uninterrupted run; `runs/resumed`, the same run stopped after the
    checkpoint at step 2 (its later checkpoints removed, as a kill leaves it) and then
    re-run with the same command. The methods' runs go side by side (2 cores)."""
    checkout = copy_checkout(tmp_path_factory.mktemp("resume") / "checkout")
    configs = {"moco": "configs/moco_augself.py:shapes", "byol": "configs/byol_augself.py:shapes"}

    def command(method, workdir):
        return [sys.executable, "main.py", f"--config={configs[method]}",
                f"--workdir=runs/{method}/{workdir}", *FLAGS,
                f"--config.data.data_dir={shapes_data_dir}"]

    def run_all(workdir):
        procs = {m: subprocess.Popen(command(m, workdir), cwd=checkout, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for m in configs}
        out = {}
        for m, p in procs.items():
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stderr[-3000:]
            out[m] = stdout
        return out

    full = run_all("full")
    for m in configs:
        base = os.path.join(checkout, "runs", m)
        shutil.copytree(os.path.join(base, "full"), os.path.join(base, "resumed"))
        ckpts = os.path.join(base, "resumed", "checkpoints")
        assert sorted(os.listdir(ckpts)) == ["2", "4"]
        shutil.rmtree(os.path.join(ckpts, "4"))
    resumed = run_all("resumed")
    return checkout, full, resumed


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_rerun_resumes_bit_identically(runs, method):
    checkout, full, resumed = runs
    assert "resuming from the checkpoint at step 2" in resumed[method]
    assert f"step 3/{TOTAL} " in resumed[method] and "step 1/" not in resumed[method]
    base = os.path.join(checkout, "runs", method)
    a, b = _arrays(os.path.join(base, "full"), TOTAL), _arrays(os.path.join(base, "resumed"),
                                                                TOTAL)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key
    # What must be in there, and moving: momentum targets apart from the online weights
    # after 4 steps; MoCo's queue and its wrapped pointer.
    two = _arrays(os.path.join(base, "resumed"), 2)
    targets = [k for k in a if "target_backbone" in k and k.endswith("['kernel']")]
    assert targets
    online = {k: k.replace("['rest']", "['params']").replace("target_backbone", "backbone")
              for k in targets}
    # Kernels behind a zero-initialised batch-norm scale get no gradient in 4 steps, so only
    # most (not all) targets have moved.
    apart = [k for k in targets if not np.array_equal(a[k], a[online[k]])]
    moved = [k for k in targets if not np.array_equal(a[k], two[k])]
    assert len(apart) > len(targets) // 2 and len(moved) > len(targets) // 2
    if method == "moco":
        (queue,) = [k for k in a if k.endswith("['queue']")]
        (ptr,) = [k for k in a if k.endswith("['queue_ptr']")]
        assert a[queue].shape[0] == QUEUE and not np.array_equal(a[queue], two[queue])
        assert int(a[ptr]) == (TOTAL * 16) % QUEUE and int(two[ptr]) == 2 * 16


def test_run_leaves_config_events_and_progress_lines(runs):
    checkout, full, _ = runs
    run_dir = os.path.join(checkout, "runs", "moco", "full")
    with open(os.path.join(run_dir, "config.json")) as f:
        resolved = json.load(f)
    assert resolved["total_steps"] == TOTAL and resolved["method"]["queue_size"] == QUEUE
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    progress = [line for line in full["moco"].splitlines() if line.startswith("step ")]
    assert [p.split()[1] for p in progress] == [f"{k}/{TOTAL}" for k in range(1, TOTAL + 1)]
    assert "loss=" in progress[0] and "steps/s" in progress[0] and "augself/crop=" in progress[0]


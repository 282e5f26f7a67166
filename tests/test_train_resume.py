"""Exact resume, as a user meets it: `python main.py` interrupted after a checkpoint and run
again with the same command ends bit-identical to an uninterrupted run, for MoCo (the queue
and its pointer, from the shared tiny run) and BYOL (the momentum targets; slow)."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import copy_checkout, run_command, tiny_run_command


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


def _interrupted_copy(run_dir, dest, keep_step):
    """`run_dir` as a run killed after its checkpoint at `keep_step` leaves it."""
    shutil.copytree(run_dir, dest)
    ckpts = os.path.join(dest, "checkpoints")
    for name in os.listdir(ckpts):
        if int(name) > keep_step:
            shutil.rmtree(os.path.join(ckpts, name))
    assert os.listdir(ckpts) == [str(keep_step)]


def _assert_bit_identical(full_dir, resumed_dir, step):
    a, b = _arrays(full_dir, step), _arrays(resumed_dir, step)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key
    return a


def _assert_targets_moved(last, earlier):
    """Momentum targets apart from the online weights and moving between checkpoints."""
    targets = [k for k in last if "target_backbone" in k and k.endswith("['kernel']")]
    assert targets
    online = {k: k.replace("['rest']", "['params']").replace("target_backbone", "backbone")
              for k in targets}
    # Kernels behind a zero-initialised batch-norm scale get no gradient in a few steps, and
    # the preset's warm-up starts the lr at 0, so the EMA moves some targets by less than a
    # float32 ulp: most are apart from the online weights, some have moved.
    apart = [k for k in targets if not np.array_equal(last[k], last[online[k]])]
    moved = [k for k in targets if not np.array_equal(last[k], earlier[k])]
    assert len(apart) > len(targets) // 2 and moved


def test_moco_rerun_resumes_bit_identically(tiny_run, shapes_data_dir):
    checkout, workdir, full = tiny_run
    _interrupted_copy(os.path.join(checkout, workdir), os.path.join(checkout, "runs", "resumed"),
                      keep_step=1)
    r = run_command(tiny_run_command("runs/resumed", shapes_data_dir), cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint at step 1" in r.stdout
    assert "step 2/2 " in r.stdout and "step 1/2 " not in r.stdout
    # The same kNN number at the end, printed by both runs.
    knn = [line for line in full.stdout.splitlines() if "kNN" in line]
    assert knn and knn == [line for line in r.stdout.splitlines() if "kNN" in line]
    last = _assert_bit_identical(os.path.join(checkout, workdir),
                                 os.path.join(checkout, "runs", "resumed"), 2)
    first = _arrays(os.path.join(checkout, "runs", "resumed"), 1)
    _assert_targets_moved(last, first)
    (queue,) = [k for k in last if k.endswith("['queue']")]
    (ptr,) = [k for k in last if k.endswith("['queue_ptr']")]
    assert last[queue].shape[0] == 24 and not np.array_equal(last[queue], first[queue])
    assert int(first[ptr]) == 16 and int(last[ptr]) == (2 * 16) % 24  # wrapped around


def test_run_leaves_config_events_and_progress_lines(tiny_run):
    checkout, workdir, full = tiny_run
    run_dir = os.path.join(checkout, workdir)
    with open(os.path.join(run_dir, "config.json")) as f:
        resolved = json.load(f)
    assert resolved["total_steps"] == 2 and resolved["method"]["queue_size"] == 24
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    progress = [line for line in full.stdout.splitlines()
                if line.startswith("step ") and "kNN" not in line]
    assert [p.split()[1] for p in progress] == ["1/2", "2/2"]
    assert "loss=" in progress[0] and "steps/s" in progress[0] and "augself/crop=" in progress[0]


@pytest.mark.slow  # MoCo's resume (targets too) is in the default suite
def test_byol_rerun_resumes_bit_identically(shapes_data_dir, tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    flags = ["--config=configs/byol_augself.py:shapes", "--config.total_steps=4",
             "--config.batch_size=16", "--config.checkpoint_every=2", "--config.knn_every=0",
             f"--config.data.data_dir={shapes_data_dir}"]
    r = run_command(["main.py", "--workdir=runs/full", *flags], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    _interrupted_copy(os.path.join(checkout, "runs", "full"),
                      os.path.join(checkout, "runs", "resumed"), keep_step=2)
    r = run_command(["main.py", "--workdir=runs/resumed", *flags], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint at step 2" in r.stdout
    last = _assert_bit_identical(os.path.join(checkout, "runs", "full"),
                                 os.path.join(checkout, "runs", "resumed"), 4)
    _assert_targets_moved(last, _arrays(os.path.join(checkout, "runs", "resumed"), 2))

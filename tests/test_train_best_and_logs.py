"""What a run logs and keeps beside its last K checkpoints:

- each logged metric is its mean over the log interval (read back from the TensorBoard
  event file, against the NumPy mean of the same run's per-step values);
- with the kNN monitor on, the checkpoint of the best accuracy is kept, whatever the last-K
  pruning removes (the monitor here is a fake with a known accuracy sequence), and
  `evaluate.py --step best` evaluates it; a changed config or a corrupt best checkpoint is
  one line.
"""

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
from test_reliability import OVERRIDES, _config, _flags, _one_line
from test_train_support import ROOT

from augself_jax import checkpoints
from augself_jax.errors import CheckpointError, ConfigError
from augself_jax.train import loop
from augself_jax.train import monitor as monitor_lib


def _scalars(workdir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every TensorBoard event file of `workdir`."""
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(str(workdir), "events.out.tfevents*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue  # the config's text and hparams, the sample views
                out.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return out


@pytest.mark.slow  # two trainings (~110 s); tests/test_metric_logging.py checks the means
def test_logged_metrics_are_interval_means(shapes_data_dir, tmp_path):
    # The schedule of every run in this file (and test_reliability's): one compile for all.
    steps, k = OVERRIDES["total_steps"], 3
    every_step = tmp_path / "every_step"
    loop.train(_config(shapes_data_dir, log_every=1), str(every_step))
    per_step = _scalars(every_step)
    interval = tmp_path / "interval"
    loop.train(_config(shapes_data_dir, log_every=k), str(interval))
    logged = _scalars(interval)

    for tag in ("loss", "grad_norm"):
        assert sorted(per_step[tag]) == list(range(1, steps + 1))
        assert sorted(logged[tag]) == list(range(k, steps + 1, k))
        for step in logged[tag]:
            expected = np.mean([per_step[tag][s] for s in range(step - k + 1, step + 1)])
            np.testing.assert_allclose(logged[tag][step], expected, rtol=1e-6)
    # The mean, not the last step's value: the loss moves from step to step.
    assert logged["loss"][k] != per_step["loss"][k]


class _FakeMonitor:
    """Stands in for the kNN monitor: returns the next accuracy of ACCURACIES."""

    accuracies: list[float] = []
    num_train = num_test = 64  # the images the real monitor reports using

    def __init__(self, config, setup):
        self._left = iter(type(self).accuracies)

    def __call__(self, state) -> float:
        return next(self._left)


# Up, then down, level with the peak at step 5 (a tie keeps the earlier step), then below
# it: the best is step 3.
ACCURACIES = [0.1, 0.5, 0.7, 0.3, 0.7, 0.6]


@pytest.fixture(scope="module")
def best_run(shapes_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("best_run")
    patch = pytest.MonkeyPatch()
    _FakeMonitor.accuracies = ACCURACIES
    patch.setattr(monitor_lib, "KnnMonitor", _FakeMonitor)
    try:
        result = loop.train(_config(shapes_data_dir, knn_every=1, keep_checkpoints=2),
                            str(workdir))
    finally:
        patch.undo()
    return workdir, result


def test_best_checkpoint_is_kept_beside_the_last_k(best_run):
    workdir, result = best_run
    assert checkpoints.all_steps(workdir) == [4, 6]  # the last K = 2 of 2, 4, 6
    assert checkpoints.all_steps(workdir, checkpoints.BEST_SUBDIR) == [3]
    best = checkpoints.TrainCheckpointer(workdir, keep=1, subdir=checkpoints.BEST_SUBDIR)
    try:
        assert best.read_meta(3)["knn_1nn_top1_pct"] == 0.7
        state, meta = best.restore(3, result.setup.abstract_state)
    finally:
        best.close()
    assert int(state.step) == 3 and meta["step"] == 3
    # The kept state is step 3's, not the final one.
    final = jax.device_get(result.state.params)
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(final), strict=True))


def test_resume_reads_the_latest_not_the_best(best_run, shapes_data_dir, monkeypatch):
    workdir, result = best_run
    _FakeMonitor.accuracies = []
    monkeypatch.setattr(monitor_lib, "KnnMonitor", _FakeMonitor)
    again = loop.train(_config(shapes_data_dir, knn_every=1, keep_checkpoints=2),
                       str(workdir))
    assert int(again.state.step) == OVERRIDES["total_steps"]  # nothing left to do
    assert checkpoints.all_steps(workdir, checkpoints.BEST_SUBDIR) == [3]


def _stored_backbone(path) -> dict[str, np.ndarray]:
    """The backbone arrays of a checkpoint as Orbax reads them back, by path."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.restore(os.path.join(str(path), "state"))
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree["params"]["backbone"])}


def test_restore_backbone_best_is_the_best_checkpoint(best_run, shapes_data_dir):
    from flax import nnx

    workdir, _ = best_run
    backbone, step = checkpoints.restore_backbone(workdir, _config(shapes_data_dir), "best")
    assert step == 3
    params = nnx.state(backbone, nnx.Param)
    got = {jax.tree_util.keystr(p): np.asarray(x)
           for p, x in jax.tree_util.tree_leaves_with_path(checkpoints.to_nested(params))}
    expected = _stored_backbone(os.path.join(str(workdir), checkpoints.BEST_SUBDIR, "3"))
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_step_best_errors_are_one_line(best_run, shapes_data_dir, tmp_path):
    workdir, _ = best_run
    with pytest.raises(ConfigError, match="^step: 'bset' is not a checkpoint step"):
        checkpoints.parse_step("bset")
    # A run without the monitor has no best checkpoint.
    no_monitor = tmp_path / "no_monitor"
    (no_monitor / checkpoints.CHECKPOINT_SUBDIR).mkdir(parents=True)
    with pytest.raises(ConfigError, match="^step: no best checkpoint"):
        checkpoints.restore_backbone(no_monitor, _config(shapes_data_dir), "best")
    # A changed config: the backbone does not fit.
    with pytest.raises(ConfigError, match=f"^model: .*{checkpoints.BEST_SUBDIR}"):
        checkpoints.restore_backbone(workdir, _config(shapes_data_dir, **{"model.width": 8}),
                                     "best")
    # A corrupt best checkpoint (a copy, so the other tests keep theirs).
    corrupt = tmp_path / "corrupt"
    shutil.copytree(workdir, corrupt)
    for path in glob.glob(str(corrupt / checkpoints.BEST_SUBDIR / "3" / "state" / "**" / "*"),
                          recursive=True):
        if os.path.isfile(path) and "metadata" not in os.path.basename(path):
            with open(path, "wb") as f:
                f.write(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        checkpoints.restore_backbone(corrupt, _config(shapes_data_dir), "best")
    assert "\n" not in str(e.value) and f"{checkpoints.BEST_SUBDIR}/3" in str(e.value)


@pytest.mark.slow  # ~50 s; the default suite runs --step best in test_eval_end_to_end
def test_evaluate_step_best_from_the_command_line(best_run, shapes_data_dir):
    workdir, _ = best_run
    quick = ["--config.eval.protocols=knn", "--config.eval.max_examples=64",
             "--config.eval.batch_size=32", "--config.eval.knn_k=1"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                        *_flags(shapes_data_dir), *quick, f"--workdir={workdir}",
                        "--step=best"], capture_output=True, text=True, timeout=600,
                       cwd=str(workdir))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(str(workdir), "eval", "results.json")) as f:
        records = json.load(f)
    assert records and {x["step"] for x in records} == {3}
    # A changed config is one line, before anything is evaluated.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                        *_flags(shapes_data_dir, **{"model.width": 8}), *quick,
                        f"--workdir={workdir}", "--step=best"], capture_output=True, text=True,
                       timeout=600, cwd=str(workdir))
    assert "best_checkpoint" in _one_line(r, "config error: model:")

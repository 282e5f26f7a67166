"""End to end: a tiny pretraining run on the built-in dataset, then evaluate.py writes
results.json with every protocol; the error cases exit with one clear line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from augself_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/simclr_augself.py:shapes"
TINY = ["--config.model.width=8", "--config.batch_size=16"]
QUICK_EVAL = ["--config.eval.max_examples=300", "--config.eval.linear.l2_num=3",
              "--config.eval.fewshot.episodes=10", "--config.eval.fewshot.shots=1",
              "--config.eval.sensitivity.num_images=32", "--config.eval.batch_size=64"]


def _run(script, workdir, data_dir, *extra):
    cmd = [sys.executable, script, f"--config={CONFIG}", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", *TINY, *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pretrained(shapes_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    r = _run("main.py", workdir, shapes_data_dir, "--config.total_steps=2",
             "--config.checkpoint_every=2", "--config.knn_every=0")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def _config(data_dir, **eval_overrides):
    sys.path.insert(0, ROOT)
    from configs import simclr_augself

    c = simclr_augself.get_config("shapes")
    c.model.width = 8
    c.batch_size = 16
    c.data.data_dir = data_dir
    for k, v in eval_overrides.items():
        c.eval[k] = v
    return c


@pytest.mark.slow  # about 3.5 minutes on 2 cores (pretraining, then every protocol)
def test_evaluate_writes_every_protocol(pretrained, shapes_data_dir):
    r = _run("evaluate.py", pretrained, shapes_data_dir, *QUICK_EVAL, "--save_features")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(pretrained, "eval", "results.json")) as f:
        records = json.load(f)
    protocols = {x["protocol"] for x in records}
    assert protocols == {"linear", "fewshot", "knn", "sensitivity", "probe"}
    linear_tasks = {x["dataset"] for x in records if x["protocol"] == "linear"}
    assert linear_tasks == {"shapes/shape", "shapes/hue", "shapes/position", "shapes/size"}
    metrics = {x["metric"] for x in records}
    assert {"hue_err_deg", "position_r2", "color_hist_r2", "top1_k1", "top1_k20"} <= metrics
    for x in records:
        assert x["step"] == 2 and len(x["config_hash"]) == 12
        assert np.isfinite(x["value"])
        if x["protocol"] == "linear":
            assert 0 <= x["value"] <= 100 and x["l2"] > 0 and x["n_val"] > 0
            assert x["val_seed"] == 0
    assert os.path.exists(os.path.join(pretrained, "eval", "results.md"))
    assert os.path.exists(os.path.join(pretrained, "eval", "sensitivity_shapes.png"))
    feats = np.load(os.path.join(pretrained, "eval", "shapes", "hue", "features.npz"))
    assert set(feats.files) == {"train_x", "train_y", "val_x", "val_y", "test_x", "test_y"}
    assert len(feats["train_x"]) + len(feats["val_x"]) == 300 and feats["test_x"].shape[1] == 64
    assert "| shapes/hue | linear | top1 |" in r.stdout

    cmp = _run("evaluate.py", pretrained, shapes_data_dir, f"--compare={pretrained}")
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert "| shapes/hue | linear | top1 |" in cmp.stdout and "+0.00" in cmp.stdout

    from augself_jax.evaluation.run import evaluate

    wide = _config(shapes_data_dir)
    wide.model.width = 16
    with pytest.raises(ConfigError, match="does not match the checkpoint"):
        evaluate(wide, pretrained)


def test_unknown_protocol_exits_with_one_line(shapes_data_dir, tmp_path):
    r = _run("evaluate.py", str(tmp_path), shapes_data_dir, "--config.eval.protocols=linear,svm")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert errors == ["config error: eval.protocols: unknown protocol 'svm'; allowed: linear, "
                      "fewshot, knn, sensitivity, probe"]


def test_no_checkpoint_and_unprepared_datasets(shapes_data_dir, tmp_path):
    from augself_jax.evaluation.run import evaluate

    with pytest.raises(ConfigError, match="no checkpoint in"):
        evaluate(_config(shapes_data_dir), str(tmp_path))
    with pytest.raises(ConfigError, match="cifar10.*not prepared.*tfds build cifar10"):
        evaluate(_config(str(tmp_path / "empty"), datasets="cifar10"), str(tmp_path))
    with pytest.raises(ConfigError, match="mit67.*manual download"):
        evaluate(_config(str(tmp_path / "empty"), datasets="mit67"), str(tmp_path))

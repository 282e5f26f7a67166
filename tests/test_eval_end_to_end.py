"""End to end, as the README documents it: one tiny `python main.py` run (shared, see
conftest.tiny_run), then `python evaluate.py` with `--step N`, `--save_features` and
`--compare` against a different run, from a copy of the checkout with relative workdirs.
The numbers are checked against computations made here; the error cases exit with one line."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import TINY_RUN_CONFIG, reporting_imports, run_command
from sklearn.neighbors import KNeighborsClassifier
from test_methods_support import FAST
from test_train_support import load_config

from augself_jax.data.eval_datasets import LINEAR
from augself_jax.errors import ConfigError
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.common import split_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = TINY_RUN_CONFIG
# The built-in dataset's label tasks, from the evaluation datasets' registry.
TASKS = {LINEAR["shapes"].task_name(k) for k in LINEAR["shapes"].label_keys}
# Evaluation at tiny sizes: every protocol runs, each on a few hundred images.
QUICK_EVAL = ["--config.eval.max_examples=300", "--config.eval.linear.l2_num=3",
              "--config.eval.fewshot.episodes=10", "--config.eval.fewshot.shots=1",
              "--config.eval.sensitivity.num_images=32", "--config.eval.batch_size=64",
              "--config.eval.mutual_info.steps=50"]


def _tiny_config(data_dir):
    """The config the tiny run trained (conftest.TINY_RUN_FLAGS), for restoring it here."""
    c = load_config("moco_augself", "shapes")
    c.batch_size = 16
    c.method.queue_size = 24
    c.data.data_dir = data_dir
    return c


def _images(data_dir, split, n):
    """The first n images of a split, read with TFDS directly (at the dataset's own size:
    evaluation's resize and centre crop are the identity there)."""
    from augself_jax.data import registry as datasets

    info = datasets.get("shapes")
    ds = tfds.builder("augself_shapes", data_dir=data_dir).as_data_source(split)
    rows = [ds[i] for i in range(n)]
    return np.stack([r["image"] for r in rows]), np.array([r[info.label_key] for r in rows])


def _features_fn(workdir, data_dir, step):
    """Features of uint8 images by the checkpoint's backbone, normalised here with NumPy."""
    from flax import nnx

    from augself_jax import checkpoints
    from augself_jax.data import registry as datasets

    info = datasets.get("shapes")
    backbone, got_step = checkpoints.restore_backbone(workdir, _tiny_config(data_dir), step)
    assert got_step == step
    graphdef, weights = nnx.split(backbone)
    apply = jax.jit(lambda w, x: nnx.merge(graphdef, w)(x), compiler_options=FAST)

    def features(images):
        x = (images / 255.0 - np.asarray(info.mean)) / np.asarray(info.std)
        return np.asarray(apply(weights, x.astype(np.float32)))

    return features


def test_pretraining_prints_progress_and_a_true_knn_number(tiny_run, shapes_data_dir):
    checkout, workdir, r = tiny_run
    run_dir = os.path.join(checkout, workdir)
    assert "step 1/2 " in r.stdout and "step 2/2 " in r.stdout
    assert "done: 2 steps" in r.stdout
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["1", "2"]
    with open(os.path.join(run_dir, "config.json")) as f:
        resolved = json.load(f)
    assert resolved["total_steps"] == 2 and resolved["knn_every"] == 2
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run_dir))

    # The monitor ran on the state of the last step, which is checkpoint 2: 1-NN with cosine
    # similarity of the first 200 train images (memory) and 200 test images (queries).
    (printed,) = re.findall(r"step 2/2 kNN \(1-NN cosine\) top-1: ([0-9.]+)% \(monitor: "
                            r"200 train / 200 test images\)", r.stdout)
    features = _features_fn(run_dir, shapes_data_dir, 2)
    train_x, train_y = _images(shapes_data_dir, "train", 200)
    test_x, test_y = _images(shapes_data_dir, "test", 200)
    sk = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(features(train_x), train_y)
    expected = 100 * float(np.mean(sk.predict(features(test_x)) == test_y))
    # In percent with 2 decimals; a floating-point tie may flip one query.
    assert abs(float(printed) - expected) <= 100 / 200 + 0.01, (printed, expected)


@pytest.fixture(scope="module")
def evaluated(tiny_run, shapes_data_dir):
    """Two evaluations of copies of the tiny run, run side by side: `step1` with --step 1,
    every protocol and --save_features; `step2` with --step best (the monitor ran once, at
    step 2, so the best checkpoint is step 2's), kNN only (no L-BFGS to compile: the
    cheapest different run to compare against)."""
    checkout, workdir, _ = tiny_run
    for name in ("step1", "step2"):
        shutil.copytree(os.path.join(checkout, workdir), os.path.join(checkout, "runs", name))
    common = [f"--config={CONFIG}", f"--config.data.data_dir={shapes_data_dir}", *QUICK_EVAL]
    procs = {
        "step1": ["--workdir=runs/step1", "--step=1", "--save_features",
                  "--config.eval.retrieval.ks=1,5,10,20", "--config.eval.retrieval.grid_seed=3",
                  "--config.eval.mutual_info.hidden=32", "--config.eval.mutual_info.ema=0.1",
                  "--config.eval.mutual_info.batch_size=64",
                  "--config.eval.mutual_info.learning_rate=0.003",
                  "--config.eval.spectrum.rank_min=3", "--config.eval.spectrum.rank_max=9"],
        "step2": ["--workdir=runs/step2", "--step=best", "--config.eval.protocols=knn"],
    }
    procs = {name: subprocess.Popen([sys.executable, *reporting_imports(["evaluate.py",
                                                                        *common, *args])],
                                    cwd=checkout, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in procs.items()}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        out[name] = stdout
    return checkout, out


def _results(checkout, name):
    with open(os.path.join(checkout, "runs", name, "eval", "results.json")) as f:
        return json.load(f)


def test_evaluate_step_n_runs_every_protocol(evaluated):
    checkout, out = evaluated
    records = _results(checkout, "step1")
    protocols = set(split_list(_tiny_config(None).eval.protocols))  # the preset's default
    assert {x["protocol"] for x in records} == protocols
    rows = {(x["dataset"], x["protocol"], x["metric"]) for x in records}
    assert {("shapes", "localization", "mean_iou"), ("shapes", "localization", "iou50"),
            ("shapes", "mutual_info", "mi_nats"), ("shapes", "spectrum", "alpha")} <= rows
    assert {(t, "retrieval", m) for t in TASKS for m in ("p@1", "p@5", "p@10", "map")} <= rows
    # The analyses' overrides given on the command line reached them.
    assert {(t, "retrieval", "p@20") for t in TASKS} <= rows
    (mi,) = [x for x in records if x["protocol"] == "mutual_info"]
    assert (mi["steps"], mi["hidden"], mi["ema"], mi["batch_size"], mi["learning_rate"]) == (
        50, 32, 0.1, 64, 0.003)
    alpha = next(x for x in records if x["metric"] == "alpha")
    assert (alpha["rank_min"], alpha["rank_max"]) == (3, 9)
    queries = np.sort(np.random.default_rng(3).choice(300, 8, replace=False))  # grid_seed 3
    assert (f"retrieval_shapes.png (test queries {', '.join(map(str, queries))})"
            in out["step1"])
    assert {x["dataset"] for x in records if x["protocol"] == "linear"} == TASKS
    assert {x["dataset"] for x in records if x["protocol"] == "fewshot"} == TASKS
    metrics = {x["metric"] for x in records}
    assert {"hue_err_deg", "position_r2", "size_r2", "color_hist_r2", "top1_k1",
            "top1_k20", "cos_flip@output", "cos_unrelated@output"} <= metrics
    hashes = {x["config_hash"] for x in records}
    assert len(hashes) == 1 and len(hashes.pop()) == 12
    for x in records:
        assert x["step"] == 1, x  # --step 1, not the latest (2)
        assert np.isfinite(x["value"]), x
        if x["protocol"] in ("linear", "knn"):
            assert 0 <= x["value"] <= 100
            assert x["n_train"] > 0 and x["n_val"] > 0 and x["n_test"] > 0
            assert x["n_train"] + x["n_val"] == 300 and x["n_test"] == 300
        if x["protocol"] == "linear":
            assert x["l2"] > 0 and x["val_seed"] == 0
    # The printed table and the files the README lists.
    assert "| shapes/hue | linear | top1 |" in out["step1"]
    eval_dir = os.path.join(checkout, "runs", "step1", "eval", "step_1")  # per checkpoint
    with open(os.path.join(eval_dir, "results.md")) as f:
        assert "| shapes/hue | linear | top1 |" in f.read()
    assert out["step1"].count("| shapes/hue | linear | top1 |") == 1  # printed once
    for figure in ("sensitivity", "retrieval", "spectrum"):
        assert os.path.getsize(os.path.join(eval_dir, f"{figure}_shapes.png")) > 0
    with open(os.path.join(checkout, "runs", "step1", "eval_config.json")) as f:
        eval_config = json.load(f)
    # The eval section as given; the rest is the training's (batch 16, not the preset's 128).
    assert eval_config["eval"]["max_examples"] == 300 and eval_config["batch_size"] == 16


def test_save_features_are_the_step_n_backbone_features(evaluated, shapes_data_dir):
    checkout, _ = evaluated
    records = _results(checkout, "step1")
    sizes = next(x for x in records if x["dataset"] == "shapes/hue" and x["protocol"] == "linear")
    # One file for the dataset: each split's features once, every task's labels beside them.
    step_dir = os.path.join(checkout, "runs", "step1", "eval", "step_1")
    assert [f for f in os.listdir(step_dir) if os.path.isdir(os.path.join(step_dir, f))] == [
        "shapes"]
    feats = np.load(os.path.join(step_dir, "shapes", "features.npz"))
    keys = sorted(t.split("/")[1] for t in TASKS)
    assert set(feats.files) == {f"{split}_{k}" for split in ("train", "val", "test")
                                for k in ["x", *(f"y_{key}" for key in keys)]}
    for split, n in (("train", sizes["n_train"]), ("val", sizes["n_val"]),
                     ("test", sizes["n_test"])):
        assert feats[f"{split}_x"].shape == (n, 64), split  # ResNet-18, width 8
        for key in keys:
            assert feats[f"{split}_y_{key}"].shape == (n,)
    # The saved test features are those of checkpoint 1's backbone (not the latest, 2).
    test_x, test_y = _images(shapes_data_dir, "test", 16)
    np.testing.assert_array_equal(feats["test_y_shape"][:16], test_y)
    run_dir = os.path.join(checkout, "runs", "step1")
    want = _features_fn(run_dir, shapes_data_dir, 1)(test_x)
    np.testing.assert_allclose(feats["test_x"][:16], want, rtol=1e-4, atol=1e-5)
    latest = _features_fn(run_dir, shapes_data_dir, 2)(test_x)
    assert np.abs(latest - want).max() > 1e-3  # the two steps' features are told apart


def test_step_best_evaluates_the_best_monitor_checkpoint(evaluated):
    checkout, _ = evaluated
    best_dir = os.path.join(checkout, "runs", "step2", "best_checkpoint")
    assert os.listdir(best_dir) == ["2"]  # the one monitor run, kept beside the last K
    records = _results(checkout, "step2")
    assert records and {x["step"] for x in records} == {2}


def test_evaluate_imports_the_writers_and_flax_without_scikit_learn_and_ipython(evaluated):
    """Keras, which TensorBoard's hparams API loads with the writers, would import
    scikit-learn (app.import_metric_writers), and Flax, which the config file imports,
    IPython (app._FLAX_ASKS); nothing else in a kNN evaluation imports either."""
    _, out = evaluated
    for line in ("tensorflow imported: True", "sklearn imported: False",
                 "IPython imported: False"):
        assert line in out["step2"], out["step2"][-500:]


def test_compare_prints_b_minus_a_against_a_different_run(evaluated):
    checkout, _ = evaluated
    a = {(x["dataset"], x["protocol"], x["metric"]): x["value"]
         for x in _results(checkout, "step1")}
    b = {(x["dataset"], x["protocol"], x["metric"]): x["value"]
         for x in _results(checkout, "step2")}
    r = run_command(["evaluate.py", f"--config={CONFIG}", "--workdir=runs/step1",
                     "--compare=runs/step2"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == "| dataset | protocol | metric | step1 | step2 | delta |"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[tuple(cells[:3])] = cells[3:]
    assert set(rows) == set(a) & set(b) and len(rows) == 4 * 2  # kNN k = 1 and 20, per task
    moved = 0
    for key, (va, vb, delta) in rows.items():
        assert float(va) == pytest.approx(a[key], abs=0.005)
        assert float(vb) == pytest.approx(b[key], abs=0.005)
        d = b[key] - a[key]
        assert float(delta.split()[0]) == pytest.approx(d, abs=0.006), (key, delta)
        assert delta.endswith("↑") == (d > 1e-9), (key, delta)  # higher accuracy is better
        moved += abs(d) > 1e-9
    assert moved > 0  # the runs differ, so the deltas say something
    # The side-by-side only reads two results files: it imports no TensorFlow (whose import
    # was most of its time).
    r = run_command(reporting_imports(["evaluate.py", "--workdir=runs/step1",
                                       "--compare=runs/step2"]), cwd=checkout)
    assert "tensorflow imported: False" in r.stdout, r.stdout[-500:] + r.stderr[-1500:]


def test_unknown_protocol_exits_with_one_line(shapes_data_dir, tmp_path):
    r = subprocess.run([sys.executable, "evaluate.py", f"--config={CONFIG}",
                        f"--workdir={tmp_path}", f"--config.data.data_dir={shapes_data_dir}",
                        "--config.eval.protocols=linear,svm"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert errors == ["config error: eval.protocols: 'svm' is unknown; allowed: "
                      f"{', '.join(protocols.names())}"]


def test_wrong_width_no_checkpoint_and_unprepared_datasets(tiny_run, shapes_data_dir,
                                                           tmp_path):
    from augself_jax.evaluation.run import evaluate

    checkout, workdir, _ = tiny_run
    wide = _tiny_config(shapes_data_dir)
    wide.model.width = 16
    with pytest.raises(ConfigError, match="does not match the checkpoint"):
        evaluate(wide, os.path.join(checkout, workdir))
    with pytest.raises(ConfigError, match="no checkpoint in"):
        evaluate(_tiny_config(shapes_data_dir), str(tmp_path))
    empty = _tiny_config(str(tmp_path / "empty"))
    empty.eval.datasets = "cifar10"
    with pytest.raises(ConfigError, match="cifar10.*not prepared.*tfds build cifar10"):
        evaluate(empty, str(tmp_path))
    empty.eval.datasets = "mit67"
    with pytest.raises(ConfigError, match="mit67.*manual download"):
        evaluate(empty, str(tmp_path))

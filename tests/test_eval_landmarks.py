"""The `landmarks` protocol: ridge from frozen features to CelebA's landmarks, R² and the
landmark distance against NumPy, on TFDS mock data through the evaluation input, and the
command line's refusal without a landmark dataset."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_command
from flax import nnx
from test_eval_datasets_more import _celeba_mock

from augself_jax.data import eval_datasets as eds
from augself_jax.data.eval_input import eval_batches
from augself_jax.errors import ConfigError
from augself_jax.evaluation import common, landmarks
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.features import FeatureExtractor, eval_mesh
from configs.common import base_config


def _np_r2(y, pred):
    """R² of each output column, averaged (sklearn's uniform_average), in NumPy."""
    res = ((y - pred) ** 2).sum(0)
    tot = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - res / tot))


def _split(rng, n, w, noise):
    x = rng.normal(size=(n, 6))
    return {"features": x, "landmarks": x @ w + 0.5 + noise * rng.normal(size=(n, 10))}


def test_r2_and_error_match_numpy_least_squares():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 10)) * 0.1
    train, val, test = (_split(rng, n, w, 0.05) for n in (2000, 500, 1000))
    out = landmarks.regress(train, val, test)
    # The independent fit: least squares with an intercept on train + val.
    x = np.concatenate([train["features"], val["features"]])
    y = np.concatenate([train["landmarks"], val["landmarks"]])
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    pred = np.c_[test["features"], np.ones(len(test["features"]))] @ coef
    assert out["r2"] == pytest.approx(_np_r2(test["landmarks"], pred), abs=2e-3)
    dist = np.linalg.norm((pred - test["landmarks"]).reshape(-1, 5, 2), axis=-1).mean()
    assert out["error"] == pytest.approx(dist, rel=0.02)
    # The truth: signal variance over total variance, per coordinate.
    signal = (w ** 2).sum(0)
    assert out["r2"] == pytest.approx(np.mean(signal / (signal + 0.05 ** 2)), abs=0.02)


def test_features_unrelated_to_landmarks_score_near_zero():
    rng = np.random.default_rng(1)
    train, val, test = ({"features": rng.normal(size=(n, 6)),
                         "landmarks": rng.uniform(size=(n, 10))} for n in (2000, 500, 1000))
    assert abs(landmarks.regress(train, val, test)["r2"]) < 0.02


def test_landmark_error_by_hand():
    y = np.array([[0.0, 0.0, 1.0, 1.0]])
    pred = np.array([[0.3, 0.4, 1.0, 2.0]])  # distances 0.5 and 1.0
    assert landmarks.landmark_error(y, pred) == pytest.approx(0.75)


def test_protocol_skips_datasets_without_landmarks_and_needs_one():
    rng = np.random.default_rng(0)
    plain = common.Features("cifar10", ("label",), {
        s: {"features": rng.normal(size=(20, 4)), "label": rng.integers(0, 3, 20)}
        for s in ("train", "val", "test")})
    assert landmarks.LandmarksEvaluator().run(plain) == []
    config = base_config("shapes")
    config.eval.protocols = "landmarks"
    with pytest.raises(ConfigError, match=r"^eval.datasets: the landmarks protocol needs a "
                                          r"dataset with landmarks; allowed: add celeba"):
        protocols.validate(config)
    config.eval.datasets = "shapes,celeba"
    protocols.validate(config)


class _Pooled(nnx.Module):
    """A frozen 'backbone' whose features are the image averaged over 4 x 4 cells."""

    def __call__(self, x):
        b, h, w, c = x.shape
        return x.reshape(b, 4, h // 4, 4, w // 4, c).mean((2, 4)).reshape(b, -1)


def test_landmarks_on_mock_celeba_through_the_evaluation_input():
    d = eds.get_linear_dataset("celeba")
    extractor = FeatureExtractor(eval_mesh(), (0.5,) * 3, (0.25,) * 3)
    splits = {}
    with _celeba_mock(24):
        builder = tfds.builder(d.tfds_name)
        for name, split in (("train", d.trainval_split), ("val", d.val_split),
                            ("test", d.test_split)):
            batches, _ = eval_batches(builder, split, image_size=16, batch_size=8 * 2,
                                      keys=(), label_key=None, point_keys=d.point_keys)
            splits[name] = extractor(_Pooled(), batches)
    assert splits["train"]["features"].shape == (24, 48)
    assert splits["train"]["landmarks"].shape == (24, 10)
    features = common.Features("celeba", (), splits)
    results = landmarks.LandmarksEvaluator().run(features)
    assert [r.metric for r in results] == ["landmarks_r2", "landmarks_err"]
    assert all(np.isfinite(r.value) for r in results) and results[1].value > 0
    # The label protocols have nothing to count on a dataset without labels, and say so
    # by reporting nothing rather than failing.
    context = common.Context(mesh=eval_mesh())
    for name in ("linear", "knn", "retrieval"):
        evaluator = protocols.get(name).from_config(base_config("shapes"), context)
        assert evaluator.run(features) == [], name
    assert jax.device_count() == 8  # the features were sharded over the 8 CPU devices


def test_command_line_refuses_landmarks_without_celeba(tiny_run, shapes_data_dir):
    checkout, workdir, _ = tiny_run
    before = _listing(os.path.join(checkout, workdir))
    r = run_command(["evaluate.py", f"--workdir={workdir}",
                     f"--config.data.data_dir={shapes_data_dir}",
                     "--config.eval.protocols=landmarks"], cwd=checkout)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert errors == ["config error: eval.datasets: the landmarks protocol needs a dataset "
                      "with landmarks; allowed: add celeba (got shapes)"]
    assert _listing(os.path.join(checkout, workdir)) == before  # nothing written


def _listing(directory):
    return {os.path.join(root, f): os.path.getmtime(os.path.join(root, f))
            for root, _, files in os.walk(directory) for f in files}

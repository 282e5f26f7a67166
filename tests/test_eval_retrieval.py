"""The `retrieval` protocol: precision@k and mAP per label against a brute-force computation
(scikit-learn's cosine neighbours and average precision, one query at a time), the figure
written to the eval folder and to the writer, and its config field checked."""

import numpy as np
import PIL.Image
import pytest
from sklearn.metrics import average_precision_score
from sklearn.neighbors import NearestNeighbors
from test_eval_protocols import _config

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.retrieval import RetrievalEvaluator, retrieval_metrics, thumbnails


def _data(seed=0, n_train=300, n_test=90, dim=12):
    """Features with two label tasks: `a` clusters the features, `b` is noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    split = {}
    for name, n in (("train", n_train), ("test", n_test)):
        a = rng.integers(0, 4, n)
        split[name] = {"features": centres[a] + rng.normal(size=(n, dim)) * 1.2, "a": a,
                       "b": rng.integers(0, 3, n)}
    return split


def _brute(train_x, train_y, test_x, test_y, ks):
    """Each query alone: its k cosine nearest neighbours (scikit-learn), the precision of
    their labels, and average precision of the whole ranking (scikit-learn, similarity as
    the score)."""
    nn = NearestNeighbors(n_neighbors=max(ks), metric="cosine").fit(train_x)
    _, idx = nn.kneighbors(test_x)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit(test_x) @ unit(train_x).T
    out = {f"p@{k}": 100 * np.mean([np.mean(train_y[idx[i, :k]] == test_y[i])
                                     for i in range(len(test_x))]) for k in ks}
    aps = [average_precision_score(train_y == test_y[i], sims[i]) for i in range(len(test_x))
           if (train_y == test_y[i]).any()]
    out["map"] = 100 * np.mean(aps)
    return out


def test_metrics_match_brute_force():
    s = _data()
    labels = {k: (s["train"][k], s["test"][k]) for k in ("a", "b")}
    got = retrieval_metrics(s["train"]["features"], s["test"]["features"], labels, (1, 5, 10))
    for key in ("a", "b"):
        expected = _brute(s["train"]["features"], s["train"][key], s["test"]["features"],
                          s["test"][key], (1, 5, 10))
        assert set(got[key]) == set(expected)
        for metric, value in expected.items():
            assert got[key][metric] == pytest.approx(value, abs=1e-6), (key, metric)
    # The clustered label is retrieved far above chance, the noise label at about chance.
    assert got["a"]["p@10"] > 60 and got["a"]["map"] > 50
    assert abs(got["b"]["map"] - 100 / 3) < 6


def test_a_query_whose_label_no_train_image_has_is_left_out_of_the_map():
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    test_x = np.array([[1.0, 0.1], [0.0, 1.0]])
    # Query 0's label 0: the ranking is train 0, 2, 1 -> relevant at ranks 1 and 3:
    # AP = (1/1 + 2/3) / 2. Query 1's label 7 is nowhere in train: p@1 = 0, no AP.
    got = retrieval_metrics(train_x, test_x, {"y": (np.array([0, 0, 1]), np.array([0, 7]))},
                            (1, 3))["y"]
    assert got["p@1"] == pytest.approx(50.0) and got["p@3"] == pytest.approx(100 / 3)
    assert got["map"] == pytest.approx(100 * (1 + 2 / 3) / 2)


class _Writer:
    def __init__(self):
        self.images = {}

    def write_images(self, step, images):
        self.images.update({k: (step, v) for k, v in images.items()})


def test_protocol_rows_grid_file_and_tensorboard_image(tmp_path):
    s = _data(n_train=200, n_test=40)
    rng = np.random.default_rng(1)
    for split in s.values():  # 64 px images: the kept thumbnails are their 2 x 2 block means
        images = rng.integers(0, 256, (len(split["a"]), 64, 64, 3), dtype=np.uint8)
        split.update(RetrievalEvaluator().image_statistics(images))
        assert split["thumbnail"].shape == (len(split["a"]), 32, 32, 3)
        np.testing.assert_array_equal(
            split["thumbnail"][:, 3, 5],
            np.round(images[:, 6:8, 10:12].astype(float).mean(axis=(1, 2))).astype(np.uint8))
    features = common.Features("shapes", ("a", "b"), s,
                               task_names={"a": "shapes/a", "b": "shapes/b"})
    writer, logged = _Writer(), []
    context = common.Context(eval_dir=str(tmp_path / "eval"), step=7, writer=writer,
                             log=logged.append)
    results = RetrievalEvaluator(context, ks=(1, 5, 10)).run(features)
    rows = {(r.task, r.metric): r.value for r in results}
    assert set(rows) == {(t, m) for t in ("shapes/a", "shapes/b")
                         for m in ("p@1", "p@5", "p@10", "map")}
    expected = _brute(s["train"]["features"], s["train"]["a"], s["test"]["features"],
                      s["test"]["a"], (1, 5, 10))
    assert rows[("shapes/a", "p@10")] == pytest.approx(expected["p@10"], abs=1e-6)
    png = tmp_path / "eval" / "retrieval_shapes.png"
    image = np.asarray(PIL.Image.open(png).convert("RGB"))
    assert image.shape[0] > 600 and image.shape[1] > 700  # 8 rows of 9 labelled cells
    step, logged_image = writer.images["eval/retrieval_shapes"]
    assert step == 7 and logged_image.shape == (1, *image.shape)
    queries = np.sort(np.random.default_rng(0).choice(40, 8, replace=False))
    assert logged == [f"shapes: retrieval grid {png} (test queries "
                      f"{', '.join(map(str, queries))})"]


def test_thumbnails_of_sizes_that_do_not_divide():
    images = np.full((2, 50, 50, 3), 200, np.uint8)
    out = thumbnails(images)
    assert out.shape == (2, 32, 32, 3) and (out == 200).all()


def test_ks_field_checked():
    with pytest.raises(ConfigError, match="^eval.retrieval.ks: 'x' is not a positive integer"):
        protocols.validate(_config(protocols="retrieval", **{"retrieval.ks": "1,x"}))
    with pytest.raises(ConfigError, match="^eval.retrieval.ks: empty"):
        protocols.validate(_config(protocols="retrieval", **{"retrieval.ks": ""}))
    built = protocols.build(_config(protocols="retrieval", **{"retrieval.ks": "2,3"}),
                         common.Context())
    assert built[0].ks == (2, 3)

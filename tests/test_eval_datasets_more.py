"""The CASSLE reference's extra linear datasets: Stanford Dogs, Flowers 5-shot and 10-shot
(k images per class, the same penalty sweep) and ImageNet-100 (the pretraining classes,
relabelled 0..99); CelebA's landmarks carried into the evaluation crop's frame. Each on TFDS
mock data or a hand-made split."""

from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_eval_datasets import _Records

from augself_jax.data import eval_datasets as eds
from augself_jax.data.eval_input import eval_batches
from augself_jax.data.registry import imagenet100_classes
from augself_jax.evaluation import linear
from augself_jax.evaluation.run import EvaluationRun
from configs.common import base_config


def test_per_class_subset_takes_k_of_every_class_seeded():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 12)
    idx = eds.per_class_subset(labels, 5, seed=0)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [5, 3, 5]  # a class of 3 keeps all 3
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    np.testing.assert_array_equal(idx, eds.per_class_subset(labels, 5, seed=0))
    assert not np.array_equal(idx, eds.per_class_subset(labels, 5, seed=1))


def test_few_shot_splits_draw_train_and_refit_as_the_reference():
    rng = np.random.default_rng(0)
    train = {"features": rng.normal(size=(40, 3)), "label": np.repeat(np.arange(4), 10),
             "origin": np.zeros(40)}
    val = {"features": rng.normal(size=(40, 3)), "label": np.repeat(np.arange(4), 10),
           "origin": np.ones(40)}
    sweep, refit = eds.few_shot_splits(train, val, "label", 5, seed=3)
    assert np.bincount(sweep["label"]).tolist() == [5] * 4
    assert np.all(sweep["origin"] == 0)  # the sweep trains on the train split only
    assert np.bincount(refit["label"]).tolist() == [5] * 4
    assert 0 < refit["origin"].sum() < 20  # the refit draws from train + val
    for split, source in ((sweep, train), (refit, None)):
        pool = source or {k: np.concatenate([train[k], val[k]]) for k in train}
        for row, y in zip(split["features"], split["label"], strict=True):
            hit = np.flatnonzero(np.all(pool["features"] == row, axis=1))
            assert len(hit) == 1 and pool["label"][hit[0]] == y  # rows kept whole


def test_linear_eval_refits_on_the_refit_set_when_given():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(size=(60, 8))
    train, val, test = (x[:30], y[:30]), (x[30:45], y[30:45]), (x[45:], y[45:])
    grid = (1e-4, 1e-2)
    plain = linear.linear_eval(train, val, test, 3, l2_grid=grid, max_iter=200)
    # A refit set whose labels are shifted by one class: the final classifier follows it.
    shifted = linear.linear_eval(train, val, test, 3, l2_grid=grid, max_iter=200,
                                 refit=(x[:45], (y[:45] + 1) % 3))
    assert plain.test > 90 and shifted.test < 10
    assert shifted.val == plain.val  # the sweep itself is unchanged


def test_registry_entries_follow_the_references():
    dogs = eds.get_linear_dataset("dogs")
    assert (dogs.tfds_name, dogs.num_train, dogs.num_val, dogs.num_classes) == (
        "stanford_dogs", 10800, 1200, 120)
    for k in (5, 10):
        d = eds.get_linear_dataset(f"flowers_{k}shot")
        assert d.shots == k and d.val_split == "validation" and d.num_train == 102 * k
        assert d.metric == "class_avg"
    inet = eds.get_linear_dataset("imagenet100")
    assert inet.class_names == imagenet100_classes() and len(inet.class_names) == 100
    assert inet.num_classes == 100


def test_imagenet100_keeps_and_relabels_the_pretraining_classes():
    from augself_jax.data import registry as datasets
    from augself_jax.data.source import _label_map

    d = eds.get_linear_dataset("imagenet100")
    with tfds.testing.mock_data(num_examples=4):
        builder = tfds.builder("imagenet2012")
    keep, relabel = eds.class_subset(builder, d)
    names = builder.info.features["label"].names
    assert keep[0] == "label" and [names[i] for i in keep[1]] == list(d.class_names)
    # The same labels pretraining gives these classes (its own map, data/source.py).
    np.testing.assert_array_equal(relabel, _label_map(builder, datasets.get("imagenet100")))
    assert sorted(relabel[relabel >= 0].tolist()) == list(range(100))


def _fake_run(d, splits_by_name, builder):
    """An EvaluationRun whose feature extraction returns `splits_by_name[split]` (the real
    split logic of linear_features around it)."""
    ev = EvaluationRun.__new__(EvaluationRun)
    ev.config = base_config("shapes")
    ev.builders = {d.tfds_name: builder}
    ev.evaluators, ev.log = [], lambda *a: None
    ev._extract = lambda b, split, keep_images=0, **kw: (
        {k: v.copy() for k, v in splits_by_name[split].items()}, None)
    return ev


def test_flowers_5shot_features_are_k_per_class_with_a_refit_split():
    d = eds.get_linear_dataset("flowers_5shot")
    rng = np.random.default_rng(0)

    def split(n_per_class):
        y = np.repeat(np.arange(102), n_per_class)
        return {"features": rng.normal(size=(len(y), 4)), "label": y}

    builder = mock.MagicMock()
    ev = _fake_run(d, {"train": split(10), "validation": split(10), "test": split(2)}, builder)
    f = ev.linear_features(d)
    assert np.bincount(f.splits["train"]["label"]).tolist() == [5] * 102
    assert np.bincount(f.splits["refit"]["label"]).tolist() == [5] * 102
    assert len(f.splits["val"]["label"]) == 1020  # the whole validation split
    assert f.info["n_train"] == 510 and f.info["shots"] == 5


def test_imagenet100_features_are_relabelled():
    d = eds.get_linear_dataset("imagenet100")
    with tfds.testing.mock_data(num_examples=4):
        builder = tfds.builder("imagenet2012")
    keep, _ = eds.class_subset(builder, d)
    tfds_labels = np.array(keep[1] * 2)  # each subset class twice, in the subset's order
    rows = {"features": np.zeros((200, 4)), "label": tfds_labels}
    ev = _fake_run(d, {"train": rows, "validation": rows}, builder)
    f = ev.linear_features(d)
    for name in ("train", "val", "test"):
        assert f.splits[name]["label"].max() < 100
    np.testing.assert_array_equal(f.splits["test"]["label"], np.tile(np.arange(100), 2))


def _celeba_mock(num_examples):
    """celeb_a's mock examples with the landmarks kept (serialized as TFDS stores them)."""
    from tensorflow_datasets.testing.mocking import RandomFakeGenerator

    def as_data_source(self, split, **kw):
        f = tfds.features
        features = f.FeaturesDict({k: self.info.features[k] for k in ("image", "landmarks")})
        fake = RandomFakeGenerator(features, num_examples)
        return _Records(features.serialize_example(fake[i]) for i in range(num_examples))

    return tfds.testing.mock_data(num_examples=num_examples,
                                  policy=tfds.testing.MockPolicy.USE_CODE,
                                  as_data_source_fn=as_data_source)


def test_celeba_landmarks_are_read_in_the_crop_frame():
    d = eds.get_linear_dataset("celeba")
    assert d.label_keys == () and d.point_keys == ("landmarks",)
    size = 32
    with _celeba_mock(6):
        builder = tfds.builder(d.tfds_name)
        source = builder.as_data_source(d.test_split)
        batches, _ = eval_batches(builder, d.test_split, image_size=size, batch_size=8,
                                  keys=(), label_key=None, point_keys=d.point_keys)
        batch = next(batches)
    features = builder.info.features
    assert batch["mask"].tolist() == [True] * 6 + [False] * 2
    names = list(features["landmarks"].keys())
    for i in range(6):
        raw = features.deserialize_example_np(source[i])
        h, w = raw["image"].shape[:2]  # 218 x 178: the short side is the width
        short = min(h, w)
        for j, name in enumerate(names):
            v = float(raw["landmarks"][name])
            # The reference's (CASSLE's) formula: offset by half the cut, over the short side.
            full = w if name.endswith("_x") else h
            want = (v - (full - short) / 2) / short
            assert abs(batch["landmarks"][i, j] - want) < 1.0 / size, (name, i)


@pytest.mark.parametrize("name", ["dogs", "flowers_5shot", "flowers_10shot", "imagenet100"])
def test_new_datasets_hold_their_label_feature(name):
    d = eds.get_linear_dataset(name)
    with tfds.testing.mock_data(num_examples=4):
        builder = tfds.builder(d.tfds_name)
    assert isinstance(builder.info.features[d.label_keys[0]], tfds.features.ClassLabel)
    assert builder.info.features[d.label_keys[0]].num_classes >= d.num_classes

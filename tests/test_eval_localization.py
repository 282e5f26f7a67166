"""The `localization` protocol: IoU by hand on boxes with known overlaps, the ridge regressor
on features that do and do not hold the box, and CUB-200's TFDS boxes carried into the
evaluation crop's frame (tfds.testing.mock_data)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from augself_jax.data import eval_datasets as eds
from augself_jax.data import shapes
from augself_jax.data.eval_input import box_in_crop, eval_batches
from augself_jax.evaluation import common
from augself_jax.evaluation.localization import LocalizationEvaluator, box_iou


def test_iou_by_hand():
    a = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2], [0.2, 0.2, 0.6, 0.4],
                  [0.5, 0.5, 0.4, 0.9]], float)
    b = np.array([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [1, 1, 2, 2], [0, 0, 1, 1], [0.4, 0.3, 0.8, 0.5],
                  [0.0, 0.0, 1.0, 1.0]], float)
    # identical; half overlapping (0.5 / 1.5); touching corners; contained (1 / 4);
    # 0.2 x 0.1 overlap of two 0.4 x 0.2 boxes (0.02 / 0.14); an inverted box is empty.
    np.testing.assert_allclose(box_iou(a, b), [1, 1 / 3, 0, 0.25, 0.02 / 0.14, 0], atol=1e-12)
    np.testing.assert_allclose(box_iou(b, a), box_iou(a, b))  # symmetric


def _features(boxes_fn, n, seed):
    """A built-in-dataset split: the shape keys behind each box, and features."""
    labels = shapes.sample_labels(n, seed)
    split = {k: labels[k] for k in ("shape", "center_x", "center_y", "size_value")}
    split["features"] = boxes_fn(shapes.bounding_box(labels), np.random.default_rng(seed))
    return split


def _run(boxes_fn, n=600):
    splits = {s: _features(boxes_fn, n, seed) for seed, s in enumerate(("train", "val", "test"))}
    f = common.Features("shapes", ("shape",), splits, info={"n_train": n})
    return {r.metric: r for r in LocalizationEvaluator().run(f)}, splits["test"]


def test_features_that_hold_the_box_localise_it():
    # The box in 4 of 20 dimensions (the rest noise), linearly mixed: ridge recovers it.
    mix = np.random.default_rng(9).normal(size=(20, 20))

    def fn(box, rng):
        return np.concatenate([box, rng.normal(size=(len(box), 16))], 1) @ mix

    results, _ = _run(fn)
    assert results["mean_iou"].value > 99.0 and results["iou50"].value == 100.0
    assert results["mean_iou"].task == "shapes" and results["mean_iou"].unit == "%"
    assert results["mean_iou"].extra["n_train"] == 600


def test_features_without_the_box_score_the_mean_box():
    # Pure noise: the best the regressor can do is about the mean box; its IoU with each test
    # box, computed here with the box_iou checked above, bounds the protocol's number.
    results, test = _run(lambda box, rng: rng.normal(size=(len(box), 20)))
    boxes = shapes.bounding_box(test)
    mean_box = np.broadcast_to(boxes.mean(0), boxes.shape)
    baseline = box_iou(mean_box, boxes)
    assert results["mean_iou"].value == pytest.approx(100 * baseline.mean(), abs=3.0)
    assert results["iou50"].value == pytest.approx(100 * np.mean(baseline >= 0.5), abs=6.0)


def test_datasets_without_boxes_are_skipped():
    split = {"features": np.zeros((4, 2)), "label": np.zeros(4, int)}
    logged = []
    ev = LocalizationEvaluator(common.Context(log=logged.append))
    f = common.Features("cifar10", ("label",), {"train": split, "val": split, "test": split})
    assert ev.run(f) == [] and logged == ["cifar10: no object boxes, localization skipped"]


def test_box_in_crop_by_hand():
    # 100 x 200 (h x w) to 50: resized to 50 x 100, the crop starts 25 columns in.
    box = tf.constant([0.2, 0.5, 0.8, 0.9])  # TFDS order: ymin, xmin, ymax, xmax
    out = box_in_crop(box, tf.constant(100), tf.constant(200), 50).numpy()
    np.testing.assert_allclose(out, [0.2, 0.5, 0.8, 1.0], atol=1e-6)  # xmax 1.3 clipped
    out = box_in_crop(tf.constant([0.1, 0.0, 0.6, 0.25]), tf.constant(300), tf.constant(100),
                      50).numpy()  # 150 x 50, 50 rows cut above: y' = (150 y - 50) / 50
    np.testing.assert_allclose(out, [0.0, 0.0, 0.8, 0.25], atol=1e-6)


class _Records(list):
    def __getitems__(self, keys):
        return [self[k] for k in keys]


def test_cub200_boxes_reach_the_features_in_the_crop_frame():
    """Mock caltech_birds2011 examples with 60 x 90 images and known boxes, through the
    evaluation input at 30 px (resized to 30 x 45, the crop starts 8 columns in)."""
    n = 12
    rng = np.random.default_rng(0)
    lo = rng.uniform(0.0, 0.5, (n, 2))
    raw = np.concatenate([lo, lo + rng.uniform(0.1, 0.5, (n, 2))], 1).astype(np.float32)

    def as_data_source(self, split, **kw):
        f = self.info.features
        return _Records(f.serialize_example({
            "image": np.full((60, 90, 3), 100, np.uint8), "image/filename": f"{i}.jpg",
            "label": i % 3, "label_name": "bird", "bbox": tfds.features.BBox(*raw[i]),
            "segmentation_mask": np.zeros((60, 90, 1), np.uint8)}) for i in range(n))

    d = eds.LINEAR["cub200"]
    with tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE,
                                as_data_source_fn=as_data_source):
        builder = tfds.builder(d.tfds_name)
        keys = tuple(k for k in ("label", *eds.BOX_KEYS) if k in builder.info.features)
        assert keys == ("label", "bbox")
        batches, _ = eval_batches(builder, "test", image_size=30, batch_size=8, keys=keys)
        batches = list(batches)
    mask = np.concatenate([b["mask"] for b in batches])
    got = eds.object_boxes({"bbox": np.concatenate([b["bbox"] for b in batches])[mask]})
    ymin, xmin, ymax, xmax = raw.T.astype(np.float64)
    expected = np.stack([(xmin * 45 - 8) / 30, ymin, (xmax * 45 - 8) / 30, ymax], 1)
    np.testing.assert_allclose(got, np.clip(expected, 0, 1), atol=1e-5)

"""The built-in dataset: exact, balanced labels; hue the only colour signal; registry stats."""

import colorsys

import numpy as np
import tensorflow_datasets as tfds

from augself_jax.data import registry, shapes


def _load(data_dir, split):
    b = tfds.builder("augself_shapes", data_dir=data_dir, try_gcs=False)
    return tfds.as_numpy(b.as_dataset(split=split, batch_size=-1))


def test_splits_sizes_and_balanced_exact_labels(shapes_data_dir):
    b = tfds.builder("augself_shapes", data_dir=shapes_data_dir, try_gcs=False)
    assert b.info.splits["train"].num_examples >= 20000
    assert b.info.splits["test"].num_examples >= 5000
    for split in ("train", "test"):
        d = _load(shapes_data_dir, split)
        n = len(d["shape"])
        assert d["image"].shape == (n, 32, 32, 3) and d["image"].dtype == np.uint8
        for key, k in (("shape", 4), ("hue", 8), ("position", 9), ("size", 3)):
            counts = np.bincount(d[key], minlength=k)
            assert len(counts) == k and counts.max() - counts.min() <= 1, key
        # Labels are exactly the bins of the stored continuous values.
        np.testing.assert_array_equal(d["hue"], np.floor(d["hue_angle"] / 45.0))
        pos = 3 * np.floor(d["center_y"] * 3) + np.floor(d["center_x"] * 3)
        np.testing.assert_array_equal(d["position"], pos)
        size_bin = np.searchsorted(shapes.SIZE_BINS, d["size_value"], side="right") - 1
        np.testing.assert_array_equal(d["size"], size_bin)


def test_hue_label_is_the_shape_colour_and_only_that(shapes_data_dir):
    d = _load(shapes_data_dir, "test")
    n = 2000
    cy = np.floor(d["center_y"][:n] * 32).astype(int)
    cx = np.floor(d["center_x"][:n] * 32).astype(int)
    centre = d["image"][np.arange(n), cy, cx] / 255.0  # every shape covers its centre
    hue = np.array([colorsys.rgb_to_hsv(*c)[0] for c in centre]) * 360.0
    diff = np.abs((hue - d["hue_angle"][:n] + 180.0) % 360.0 - 180.0)
    assert np.percentile(diff, 99) < 4.0  # uint8 rounding only
    # The background (the corners when the shape is elsewhere) carries no hue information:
    # its mean colour is the same for every hue label.
    far = (d["position"] == 8)  # shape in the bottom-right cell: top-left corner is background
    corner = d["image"][far, :4, :4].reshape(far.sum(), -1, 3).mean(1) / 255.0
    means = np.stack([corner[d["hue"][far] == h].mean(0) for h in range(8)])
    assert np.abs(means - corner.mean(0)).max() < 0.04


def test_generation_is_deterministic():
    a = shapes.render(shapes.sample_labels(64, 3), 32, 4)
    b = shapes.render(shapes.sample_labels(64, 3), 32, 4)
    np.testing.assert_array_equal(a, b)


def test_registry_statistics_match_the_data(shapes_data_dir):
    info = registry.get_dataset_info("shapes")
    images = _load(shapes_data_dir, "train")["image"][:5000] / 255.0
    np.testing.assert_allclose(images.mean((0, 1, 2)), info.mean, atol=0.01)
    np.testing.assert_allclose(images.std((0, 1, 2)), info.std, atol=0.01)
    assert info.num_classes == 4 and info.label_key == "shape"


def test_registry_entries():
    stl = registry.get_dataset_info("stl10")
    assert stl.train_split == "train+unlabeled" and stl.probe_train_split == "train"
    inet = registry.get_dataset_info("imagenet100")
    assert inet.tfds_name == "imagenet2012" and len(inet.class_subset) == 100
    assert len(set(inet.class_subset)) == 100
    assert all(w.startswith("n") and len(w) == 9 for w in inet.class_subset)
    for name in ("cifar10", "cifar100"):
        assert registry.get_dataset_info(name).image_size == 32

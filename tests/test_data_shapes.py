"""The built-in dataset: exact, balanced labels; hue the only colour signal; shapes that
survive the reference crop, lie inside the image and are all that two views share;
registry stats."""

import colorsys

import numpy as np
import tensorflow_datasets as tfds

from augself_jax.data import registry, shapes


def _load(data_dir, split):
    """Every example of a split, decoded by TFDS itself."""
    b = tfds.builder("augself_shapes", data_dir=data_dir, try_gcs=False)
    ds = b.as_data_source(split)
    rows = ds.__getitems__(list(range(len(ds))))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


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
        # position: the 3x3 cell of the centre within the range it can take at that size
        # (the shape's reach, radius + margin, from each border).
        reach = d["size_value"].astype(np.float64) + shapes.MARGIN
        row, col = (np.floor(3 * (d[c] - reach) / (1 - 2 * reach)) for c in ("center_y",
                                                                              "center_x"))
        np.testing.assert_array_equal(d["position"], 3 * row + col)
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
    # Every pixel of the shape has exactly the label's colour (fixed saturation and value):
    # the shape's hue is its only colour property.
    labels = {k: d[k][:n] for k in ("shape", "center_x", "center_y", "size_value")}
    mask = shapes.shape_mask(labels, 32)
    for i in range(0, n, 97):
        pixels = d["image"][i][mask[i]]
        assert (pixels == pixels[0]).all()


def _crop_sampler(rng, n):
    """n boxes (x, y, w, h), fractions of the side, of torchvision's RandomResizedCrop with
    the reference's scale (0.2, 1) and ratio (3/4, 4/3): ten tries, then the whole image."""
    boxes = np.tile([0.0, 0.0, 1.0, 1.0], (n, 1))
    for i in range(n):
        for _ in range(10):
            area = rng.uniform(0.2, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = np.sqrt(area * ratio), np.sqrt(area / ratio)
            if w <= 1 and h <= 1:
                boxes[i] = (rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h)
                break
    return boxes


def _fraction_in_crop(mask, boxes):
    """The fraction of each shape's pixels that fall inside its crop box."""
    coords = (np.arange(mask.shape[1]) + 0.5) / mask.shape[1]
    in_x = (coords >= boxes[:, :1]) & (coords < boxes[:, :1] + boxes[:, 2:3])
    in_y = (coords >= boxes[:, 1:2]) & (coords < boxes[:, 1:2] + boxes[:, 3:4])
    kept = (mask & in_y[:, :, None] & in_x[:, None, :]).sum((1, 2))
    return kept / mask.sum((1, 2))


def test_the_shape_survives_the_reference_crop_and_is_what_two_views_share():
    labels = shapes.sample_labels(3000, seed=5)
    mask = shapes.shape_mask(labels, 32)
    rng = np.random.default_rng(0)
    view1 = _fraction_in_crop(mask, _crop_sampler(rng, len(mask)))
    view2 = _fraction_in_crop(mask, _crop_sampler(rng, len(mask)))
    # Most views hold at least half of the shape (about 88%; version 1's small shapes
    # with centres anywhere: well under half) ...
    assert np.mean(view1 >= 0.5) > 0.8
    # ... and most pairs of views of one image both do: the shape is the shared content.
    assert np.mean((view1 >= 0.5) & (view2 >= 0.5)) > 0.7


def test_shapes_lie_inside_the_image():
    labels = shapes.sample_labels(4000, seed=6)
    # Every shape (circle, square, triangle, plus) lies within its radius of its centre
    # along each axis ...
    for size in (32, 96):
        coords = (np.arange(size) + 0.5) / size
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        mask = shapes.shape_mask(labels, size)
        reach = np.maximum(np.abs(xx[None] - labels["center_x"][:, None, None]),
                           np.abs(yy[None] - labels["center_y"][:, None, None]))
        radius = np.broadcast_to(labels["size_value"][:, None, None], mask.shape)
        assert (reach[mask] <= radius[mask] + 1e-6).all()
        # ... and no shape touches the image border.
        edges = (mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1])
        assert not any(e.any() for e in edges)
    # The whole disc of radius `size_value` fits, with the margin to spare.
    for c in ("center_x", "center_y"):
        assert (labels[c] - labels["size_value"] >= shapes.MARGIN - 1e-6).all()
        assert (labels[c] + labels["size_value"] <= 1 - shapes.MARGIN + 1e-6).all()


def test_the_background_carries_no_per_image_cue():
    labels = shapes.sample_labels(2000, seed=7)
    images = shapes.render(labels, 32, seed=8).astype(np.float64) / 255.0
    background = ~shapes.shape_mask(labels, 32)
    pixels = images[background]
    # Gray: no colour at all outside the shape.
    assert (pixels[:, 0] == pixels[:, 1]).all() and (pixels[:, 1] == pixels[:, 2]).all()
    # Every image's background has the same level: the spread of the per-image means is
    # what i.i.d. pixel noise alone gives (std / sqrt(pixels)), so no image is told apart
    # by its background once it is cropped.
    gray = images[..., 0]
    counts = background.sum((1, 2))
    means = (gray * background).sum((1, 2)) / counts
    expected = np.sqrt(np.mean(1.0 / counts)) * pixels[:, 0].std()
    assert means.std() < 1.5 * expected
    assert abs(means.mean() - shapes.BACKGROUND_GRAY) < 0.01


def test_generation_is_deterministic():
    a = shapes.render(shapes.sample_labels(64, 3), 32, 4)
    b = shapes.render(shapes.sample_labels(64, 3), 32, 4)
    np.testing.assert_array_equal(a, b)


def test_registry_statistics_match_the_data(shapes_data_dir):
    info = registry.get("shapes")
    images = _load(shapes_data_dir, "train")["image"][:5000] / 255.0
    np.testing.assert_allclose(images.mean((0, 1, 2)), info.mean, atol=0.01)
    np.testing.assert_allclose(images.std((0, 1, 2)), info.std, atol=0.01)
    assert info.num_classes == 4 and info.label_key == "shape"


def test_narrow_hue_version_puts_every_class_within_the_reference_jitter_span():
    # `32px_hue72`: the 8 hue classes split [288, 360) degrees in 9-degree bins, inside
    # the 72 degrees that the reference's hue jitter (+-0.1 turn) spans.
    labels = shapes.sample_labels(4000, seed=2, hue_start=288.0, hue_span=72.0)
    np.testing.assert_array_equal(labels["hue"], np.floor((labels["hue_angle"] - 288.0) / 9.0))
    assert labels["hue_angle"].min() >= 288.0 and labels["hue_angle"].max() < 360.0
    assert np.bincount(labels["hue"]).tolist() == [500] * 8
    # The same draws as the full circle apart from the hue: the other labels are unchanged.
    full = shapes.sample_labels(4000, seed=2)
    for key in ("shape", "hue", "position", "size", "center_x", "center_y", "size_value"):
        np.testing.assert_array_equal(labels[key], full[key])
    # The registry's statistics are those of the rendered images.
    images = shapes.render(labels, 32, 7) / 255.0
    info = registry.get("shapes_hue72")
    assert info.tfds_name == "augself_shapes/32px_hue72"
    np.testing.assert_allclose(images.mean((0, 1, 2)), info.mean, atol=0.01)
    np.testing.assert_allclose(images.std((0, 1, 2)), info.std, atol=0.01)


def test_registry_entries():
    stl = registry.get("stl10")
    assert stl.train_split == "train+unlabeled" and stl.probe_train_split == "train"
    inet = registry.get("imagenet100")
    assert inet.tfds_name == "imagenet2012" and len(inet.class_subset) == 100
    assert len(set(inet.class_subset)) == 100
    assert all(w.startswith("n") and len(w) == 9 for w in inet.class_subset)
    for name in ("cifar10", "cifar100"):
        assert registry.get(name).image_size == 32


def test_bounding_box_by_hand():
    labels = {"shape": np.array([0, 1, 2, 3]), "center_x": np.full(4, 0.5),
              "center_y": np.full(4, 0.4), "size_value": np.full(4, 0.25)}
    np.testing.assert_allclose(shapes.bounding_box(labels), [
        [0.25, 0.15, 0.75, 0.65],  # circle: r every way
        [0.2875, 0.1875, 0.7125, 0.6125],  # square: half-side 0.85 r
        [0.26, 0.15, 0.74, 0.55],  # triangle: apex r up, base 0.6 r down, 0.96 r wide
        [0.25, 0.15, 0.75, 0.65],  # plus: arms of length r
    ], atol=1e-6)


def test_bounding_box_is_the_extent_of_the_rendered_pixels():
    """At 128 px, for every kind: each pixel the shape colours has its centre inside the
    box, and the outermost coloured pixels reach each edge to within 2 pixels (a pixel's
    centre can miss the triangle's apex by up to 1.8 pixels; the other edges by 1)."""
    size, n = 128, 64
    labels = shapes.sample_labels(n, seed=5)
    images = shapes.render(labels, size, seed=6)
    box = shapes.bounding_box(labels)
    assert set(labels["shape"]) == {0, 1, 2, 3}
    covered = images.max(axis=-1) > 128  # the shape's value is 1.0, the background's ~0.12
    centres = (np.arange(size) + 0.5) / size
    for i in range(n):
        rows, cols = np.nonzero(covered[i])
        x, y = centres[cols], centres[rows]
        x_min, y_min, x_max, y_max = box[i]
        eps = 1e-6
        assert x.min() >= x_min - eps and x.max() <= x_max + eps, i
        assert y.min() >= y_min - eps and y.max() <= y_max + eps, i
        gaps = np.array([x.min() - x_min, y.min() - y_min, x_max - x.max(), y_max - y.max()])
        assert (gaps <= 2.0 / size).all(), (i, labels["shape"][i], gaps * size)

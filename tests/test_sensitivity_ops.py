"""The sensitivity analysis applies the training ops: one augmentation at a time, always on,
the others neutral, each view equal to a NumPy formula at its recorded parameters."""

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from test_data_photometric import NP_OPS, np_blur, np_gray, np_solarize

from augself_jax import augs
from augself_jax.augs import color
from augself_jax.data import augment
from augself_jax.evaluation import sensitivity
from configs.common import base_config

N, SIZE, KERNEL = 12, 12, 5
IDENTITY = {f.key: np.asarray(f.identity, f.dtype).reshape(f.shape)
            for f in augs.record_fields()}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)


def _aug():
    aug = base_config("shapes").aug
    aug.blur_kernel = KERNEL
    aug.color_strength = 2.0
    return aug


def _only_own_keys_vary(name, records):
    own = {f.key for f in augs.get(name).record}
    for key, value in records.items():
        if key in own:
            continue
        want = IDENTITY[key]  # color_mean_shift too: 0 when the jitter is off
        np.testing.assert_array_equal(value, np.broadcast_to(want, value.shape), err_msg=key)


@pytest.mark.parametrize("name", ["flip", "color", "gray", "blur", "solarize", "rotation"])
def test_each_view_is_the_numpy_op_at_its_recorded_parameters(images, name):
    out, rec = sensitivity.augmented(images, _aug(), name, seed=3)
    _only_own_keys_vary(name, rec)
    x = images / 255.0
    for i in range(N):
        if name == "flip":
            assert rec["flip"][i] == 1.0
            want = x[i, :, ::-1]
        elif name == "rotation":
            want = np.rot90(x[i], int(rec["rotation"][i]))
        elif name == "color":
            assert rec["color_applied"][i] == 1.0
            want = x[i]
            for op in rec["color_order"][i]:
                want = NP_OPS[op](want, float(rec["color"][i][op]))
        elif name == "gray":
            assert rec["gray"][i] == 1.0
            want = np_gray(x[i])  # the training luma 0.299 (not 0.2989)
        elif name == "blur":
            assert 0.1 <= rec["blur"][i] <= 2.0
            want = np_blur(x[i], float(rec["blur"][i]), KERNEL)
        else:
            assert 0.0 <= rec["solarize"][i] < 1.0
            want = np_solarize(x[i], float(rec["solarize"][i]))
        np.testing.assert_allclose(out[i], want, atol=1e-4, err_msg=f"{name} image {i}")
    if name == "rotation":
        assert np.any(rec["rotation"] > 0)  # k = 0 is a legal draw; not every one


def test_color_factors_are_drawn_from_the_training_ranges(images):
    aug = _aug()
    _, rec = sensitivity.augmented(np.repeat(images, 20, 0), aug, "color", seed=1)
    low, high = color.jitter_bounds(aug)  # strength 2: brightness [0.2, 1.8], hue +-0.2
    f = rec["color"]
    assert np.all(f >= np.array(low) - 1e-6) and np.all(f <= np.array(high) + 1e-6)
    assert f[:, 0].min() < 0.4 and f[:, 0].max() > 1.6 and np.abs(f[:, 3]).max() > 0.15
    assert len({tuple(o) for o in rec["color_order"]}) > 6  # per-image random orders


def test_crop_is_the_training_crop_at_the_training_draw(images):
    aug = _aug()
    pixels, rec = sensitivity.controlled_views(images, aug, "crop", seed=4)
    _only_own_keys_vary("crop", rec)
    settings = sensitivity.controlled_config(aug, "crop")
    assert tuple(settings.crop_scale) == tuple(aug.crop_scale)  # the pretraining strength
    areas = []
    for i in range(N):
        u = tf.random.stateless_uniform([1, augment.NUM_UNIFORMS],
                                        augment.view_seed(4, 0, i, 1), dtype=tf.float64)
        drawn = augment.sample_params(u, SIZE, SIZE, settings)
        np.testing.assert_array_equal(rec["crop"][i], drawn["crop"].numpy()[0])
        top, left, h, w = np.round(rec["crop"][i] * SIZE).astype(np.int32)
        assert 0.2 * SIZE * SIZE - 2 * SIZE <= h * w <= SIZE * SIZE  # area scale 0.2 to 1
        areas.append(h * w)
        # The view, by NumPy slicing and PIL's antialiased bilinear resize (torchvision's
        # RandomResizedCrop on a PIL image), not by the op under test; PIL rounds each
        # pass to uint8, so one level apart.
        want = np.asarray(PIL.Image.fromarray(images[i, top:top + h, left:left + w]).resize(
            (SIZE, SIZE), PIL.Image.BILINEAR))
        np.testing.assert_allclose(pixels[i].astype(int), want.astype(int), atol=1,
                                   err_msg=f"image {i}")
    assert min(areas) < 0.6 * SIZE * SIZE  # real crops, not the whole image


def test_neutral_chain_is_the_identity(images):
    """With every augmentation neutral (the crop's full box resized to its own size), the
    chain returns the image: the clean image is the right comparison."""
    aug = _aug()
    for entry in augs.entries().values():
        aug.update(entry.neutral_overrides())
    u = tf.random.stateless_uniform([1, augment.NUM_UNIFORMS], [0, 1], dtype=tf.float64)
    pixels, _ = augment.views(tf.constant(images[0]), u, aug, SIZE)
    np.testing.assert_array_equal(pixels[0].numpy(), images[0])

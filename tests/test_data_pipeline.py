"""The two-view pipeline: truthful records, distributions, determinism, exact resume, shards,
errors, global batches."""

import io
import itertools

import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import fresh_interpreter_json

from augself_jax.augs import crop, records
from augself_jax.data import augment, global_batch, pipeline, shapes, source, validate
from augself_jax.errors import ConfigError
from configs.common import base_config

# The record's keys are whatever the augmentation registry declares (docs/METHOD.md
# section 1 documents the built-in ones; test_augs_registry checks the two agree).
METHOD_KEYS = set(records.record_spec())


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="png")
    return buffer.getvalue()


def _source(images: np.ndarray, offset: int = 0) -> source.ExampleSource:
    n = len(images)
    return source.ExampleSource(images=np.array([_png(i) for i in images], dtype=object),
                                labels=(np.arange(n) % 4).astype(np.int32),
                                indices=np.arange(offset, offset + n, dtype=np.int64))


def _aug(**overrides):
    aug = base_config("shapes").aug
    aug.update(overrides)
    return aug


def _batches(src, aug, *, b, spe, start=0, count=1, size=16, seed=0, process_index=0):
    ds = pipeline.pretrain_dataset(src, seed=seed, aug=aug, image_size=size, local_batch=b,
                                   steps_per_epoch=spe, start_step=start,
                                   process_index=process_index)
    return [pipeline.unpack_batch(b) for b in itertools.islice(ds.as_numpy_iterator(), count)]


def _tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


# ---------------------------------------------------------------- crop sampling


def _torchvision_box(u, height, width, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision RandomResizedCrop.get_params, written out, driven by the same uniforms."""
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for attempt in range(10):
        ua, ur, ut, ul = u[4 * attempt:4 * attempt + 4]
        target_area = area * (scale[0] + ua * (scale[1] - scale[0]))
        aspect = np.exp(log_ratio[0] + ur * (log_ratio[1] - log_ratio[0]))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(ut * (height - h + 1)), int(ul * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("height,width", [(64, 64), (375, 500), (10, 100), (100, 10)])
def test_crop_box_follows_torchvision(height, width):
    u = np.random.default_rng(height + width).uniform(size=(200, 40))
    got = crop.crop_box(tf.constant(u), height, width, (0.2, 1.0), (3 / 4, 4 / 3)).numpy()
    want = np.array([_torchvision_box(row, height, width) for row in u])
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- distributions


def _within(rate, p, n, sigmas=5.0):
    return abs(rate - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1e-9


def test_parameter_distributions():
    n = 20000
    aug = _aug(solarize_prob=0.5, rotation_prob=0.5)
    u = tf.random.stateless_uniform([n, augment.NUM_UNIFORMS], seed=[1, 2], dtype=tf.float64)
    p = {k: v.numpy() for k, v in augment.sample_params(u, 96, 96, aug).items()}
    assert METHOD_KEYS <= set(p)
    top, left, h, w = p["crop"].T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= 1 + 1e-6) and np.all(left + w <= 1 + 1e-6)
    area = h * w
    assert area.min() >= 0.2 - 0.03 and area.max() <= 1.0
    assert np.all((w / h >= 3 / 4 - 0.05) & (w / h <= 4 / 3 + 0.05))
    assert _within(p["flip"].mean(), 0.5, n)
    on = p["color_applied"] > 0
    assert _within(on.mean(), 0.8, n)
    bcs = p["color"][on, :3]
    assert bcs.min() >= 0.6 and bcs.max() <= 1.4
    np.testing.assert_allclose(np.mean(bcs < 0.8, axis=0), 0.25, atol=0.02)  # uniform
    hue = p["color"][on, 3]
    assert hue.min() >= -0.1 and hue.max() <= 0.1 and abs(hue.mean()) < 0.005
    np.testing.assert_array_equal(p["color"][~on], np.tile([1, 1, 1, 0], ((~on).sum(), 1)))
    np.testing.assert_array_equal(p["color_order"][~on], np.tile(np.arange(4), ((~on).sum(), 1)))
    # Order: a uniform permutation of the four ops (chi-square over the 24 orders).
    orders = p["color_order"][on]
    assert np.all(np.sort(orders, axis=1) == np.arange(4))
    counts = np.unique(orders @ np.array([64, 16, 4, 1]), return_counts=True)[1]
    assert len(counts) == 24
    expected = on.sum() / 24
    assert np.sum((counts - expected) ** 2 / expected) < 55.0  # df 23, p ~ 0.0002
    assert _within(p["gray"].mean(), 0.2, n)
    blurred = p["blur"] > 0
    assert _within(blurred.mean(), 0.5, n)
    assert p["blur"][blurred].min() >= 0.1 and p["blur"][blurred].max() <= 2.0
    solar = p["solarize"] < 1
    assert _within(solar.mean(), 0.5, n) and p["solarize"][solar].min() >= 0
    assert np.all(p["solarize"][~solar] == 1)
    # Rotation: applied with p 0.5, then k uniform in {0, 1, 2, 3}.
    k_counts = np.bincount(p["rotation"], minlength=4) / n
    np.testing.assert_allclose(k_counts, [0.625, 0.125, 0.125, 0.125], atol=0.015)


def test_color_strength_scales_ranges_and_gray_probability():
    n = 20000
    aug = _aug(color_strength=2.0)
    u = tf.random.stateless_uniform([n, augment.NUM_UNIFORMS], seed=[3, 4], dtype=tf.float64)
    p = {k: v.numpy() for k, v in augment.sample_params(u, 32, 32, aug).items()}
    on = p["color_applied"] > 0
    assert p["color"][on, 0].min() < 0.25 and p["color"][on, 0].max() > 1.75
    assert p["color"][on, 3].min() < -0.19 and p["color"][on, 3].max() > 0.19
    assert _within(p["gray"].mean(), 0.4, n)


def test_large_color_strength_is_clamped_as_kornia():
    n = 20000
    aug = _aug(color_strength=3.0, hue=0.2, gray_prob=0.2)  # 0.4 x 3 = 1.2, hue 0.6
    u = tf.random.stateless_uniform([n, augment.NUM_UNIFORMS], seed=[7, 8], dtype=tf.float64)
    p = {k: v.numpy() for k, v in augment.sample_params(u, 32, 32, aug).items()}
    on = p["color_applied"] > 0
    b, c, s, h = p["color"][on].T
    assert b.min() >= 0.0 and b.max() <= 2.0 and b.max() > 1.98  # brightness in [0, 2]
    assert c.min() >= 0.0 and c.max() > 2.15 and s.max() > 2.15  # only the lower bound
    np.testing.assert_allclose(np.mean(b < 1.0), 0.5, atol=0.02)  # uniform on [0, 2]
    assert h.min() >= -0.5 and h.max() <= 0.5 and h.max() > 0.49  # hue in [-0.5, 0.5]


def test_record_packs_into_one_vector_and_back():
    aug = _aug(solarize_prob=0.5, rotation_prob=0.5)
    u = tf.random.stateless_uniform([64, augment.NUM_UNIFORMS], seed=[9, 9], dtype=tf.float64)
    params = augment.sample_params(u, 40, 30, aug)
    packed = augment.pack(params).numpy()
    assert packed.shape == (64, augment.PACKED_SIZE) and packed.dtype == np.float32
    back = augment.unpack(packed)
    assert set(back) == METHOD_KEYS
    for key in METHOD_KEYS:
        want = params[key].numpy()
        assert back[key].dtype == want.dtype, key
        np.testing.assert_array_equal(back[key], want, err_msg=key)


def test_batched_device_draws_equal_the_per_view_sampler():
    """The device ops' parameters are drawn once per batch; each record must equal the
    per-view sampler's at that view's own seed, bit for bit."""
    labels = shapes.sample_labels(16, seed=3)
    src = _source(shapes.render(labels, 20, seed=4), offset=50)
    aug = _aug(solarize_prob=0.5, rotation_prob=0.5)
    (batch,) = _batches(src, aug, b=16, spe=1, size=12, seed=7)
    for v in (1, 2):
        u = tf.stack([tf.random.stateless_uniform(
            [augment.NUM_UNIFORMS], augment.view_seed(7, 0, int(i), v), dtype=tf.float64)
            for i in batch["index"]])
        want = augment.sample_params(u, 20, 20, aug)
        for key in METHOD_KEYS:
            np.testing.assert_array_equal(batch[f"params{v}"][key], want[key].numpy(),
                                          err_msg=f"view {v} {key}")
    assert np.any(batch["params1"]["color_applied"] == 0)  # both branches exercised
    assert np.any(batch["params1"]["color_applied"] == 1)


def test_disabled_ops_record_their_identity():
    aug = _aug(flip_prob=0.0, color_prob=0.0, gray_prob=0.0, blur_prob=0.0)
    u = tf.random.stateless_uniform([500, augment.NUM_UNIFORMS], seed=[5, 6], dtype=tf.float64)
    p = {k: v.numpy() for k, v in augment.sample_params(u, 32, 32, aug).items()}
    assert not p["flip"].any() and not p["color_applied"].any() and not p["gray"].any()
    assert not p["blur"].any() and np.all(p["solarize"] == 1) and not p["rotation"].any()


# ---------------------------------------------------------------- truthfulness


def test_views_are_reproduced_from_their_records():
    labels = shapes.sample_labels(16, seed=7)
    images = shapes.render(labels, 40, seed=8)
    src = _source(images)
    (batch,) = _batches(src, _aug(rotation_prob=0.5, flip_prob=0.5), b=16, spe=1, size=24)
    rotations = flips = 0
    for v in (1, 2):
        rec = batch[f"params{v}"]
        for i, idx in enumerate(batch["index"]):
            image = images[idx]
            box = np.round(rec["crop"][i] * [40, 40, 40, 40]).astype(np.int32)
            redo = augment.apply_geometric(
                tf.constant(image), {"crop_px": tf.constant(box), "flip": rec["flip"][i],
                                     "rotation": rec["rotation"][i]}, 24).numpy()
            np.testing.assert_array_equal(redo, batch[f"view{v}"][i])
            rotations += rec["rotation"][i] > 0
            flips += rec["flip"][i] > 0
    assert rotations > 0 and flips > 0  # both ops really exercised


def test_crop_box_is_where_the_pixels_came_from():
    # Each source pixel encodes its own coordinates: R = 4 * row, G = 4 * column.
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    coords = np.stack([4 * rows, 4 * cols, np.zeros_like(rows)], -1).astype(np.uint8)
    src = _source(np.repeat(coords[None], 32, axis=0))
    (batch,) = _batches(src, _aug(rotation_prob=0.5), b=32, spe=1, size=16)
    for v in (1, 2):
        rec = batch[f"params{v}"]
        for i in range(32):
            view = np.rot90(batch[f"view{v}"][i].astype(np.float64), -rec["rotation"][i])
            if rec["flip"][i]:
                view = view[:, ::-1]
            top, left, h, w = np.round(rec["crop"][i] * 64)
            for channel, start, extent, axis in ((0, top, h, 0), (1, left, w, 1)):
                values = view[..., channel]
                assert values.min() >= 4 * start - 0.5
                assert values.max() <= 4 * (start + extent - 1) + 0.5
                assert abs(values.mean() - 4 * (start + (extent - 1) / 2)) < 1.5
                profile = values.mean(axis=1 - axis)
                assert np.all(np.diff(profile) >= -0.5)  # increasing: orientation is right


# ---------------------------------------------------------------- determinism, resume


def _small_source():
    labels = shapes.sample_labels(40, seed=9)
    return _source(shapes.render(labels, 16, seed=10), offset=100)


def test_determinism_epochs_and_exact_continuation():
    src, aug = _small_source(), _aug()
    run1 = _batches(src, aug, b=8, spe=5, count=12, size=8)
    run2 = _batches(src, aug, b=8, spe=5, count=12, size=8)
    assert _tree_equal(run1, run2)
    # Each epoch visits every example of the shard once, in a new order with new views.
    epoch0 = np.concatenate([b["index"] for b in run1[:5]])
    epoch1 = np.concatenate([b["index"] for b in run1[5:10]])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(100, 140))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(100, 140))
    assert not np.array_equal(epoch0, epoch1)
    # Restarting mid-epoch (step 7) reproduces the uninterrupted stream, across the epoch end.
    resumed = _batches(src, aug, b=8, spe=5, start=7, count=5, size=8)
    assert _tree_equal(resumed, run1[7:12])
    # Another seed: other views.
    other = _batches(src, aug, b=8, spe=5, count=1, size=8, seed=1)
    assert not _tree_equal(other[0], run1[0])


def test_make_pretrain_iterator(shapes_data_dir):
    config = base_config("shapes")
    config.data.data_dir = shapes_data_dir
    config.batch_size = 16
    it = pipeline.make_pretrain_iterator(config, process_index=0, process_count=1)
    batches = [next(it) for _ in range(3)]
    assert it.step == 3
    b = batches[0]
    assert set(b) == {"view1", "view2", "params1", "params2", "label", "index"}
    assert set(b["params1"]) == METHOD_KEYS
    assert b["view1"].shape == (16, 32, 32, 3) and b["view1"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int64
    for key, (shape, dtype) in records.record_spec().items():
        for v in (1, 2):
            assert b[f"params{v}"][key].shape == (16, *shape), key
            assert b[f"params{v}"][key].dtype == dtype, key
    # Labels are the dataset's `shape` labels of the recorded indices.
    stored = tfds.builder("augself_shapes", data_dir=shapes_data_dir).as_data_source("train")
    np.testing.assert_array_equal(b["label"], [stored[int(i)]["shape"] for i in b["index"]])
    resumed = pipeline.make_pretrain_iterator(config, start_step=2, process_index=0,
                                              process_count=1)
    assert _tree_equal(next(resumed), batches[2])
    assert pipeline.steps_per_epoch(config, process_index=0, process_count=1) == 20000 // 16


def _read_all(src) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in src.lookup(tf.range(len(src), dtype=tf.int64)).items()}


def test_shards_are_disjoint_and_complete(shapes_data_dir):
    full = _read_all(source.load_source("shapes", shapes_data_dir, "train", 0, 1))
    shards = [_read_all(source.load_source("shapes", shapes_data_dir, "train", p, 3))
              for p in range(3)]
    indices = np.concatenate([s["index"] for s in shards])
    assert len(set(indices.tolist())) == len(indices) == 3 * (20000 // 3)
    np.testing.assert_array_equal(np.sort(indices), np.arange(3 * (20000 // 3)))
    for s in shards:
        np.testing.assert_array_equal(s["label"], full["label"][s["index"]])
        assert s["image"][5] == full["image"][s["index"][5]]
    # Simulated hosts: each reads only its shard; batches of global_batch / process_count.
    config = base_config("shapes")
    config.data.data_dir = shapes_data_dir
    config.batch_size = 24
    seen = []
    for p in range(3):
        batch = next(pipeline.make_pretrain_iterator(config, process_index=p, process_count=3))
        assert batch["view1"].shape[0] == 8
        assert set(batch["index"].tolist()) <= set(shards[p]["index"].tolist())
        seen.append(batch["index"])
    assert len(set(np.concatenate(seen).tolist())) == 24


# ---------------------------------------------------------------- errors


def _config(**data):
    config = base_config("shapes")
    config.batch_size = 16
    config.data.update(data)
    return config


def _error(config):
    with pytest.raises(ConfigError) as err:
        validate.validate_data_config(config)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_validate_accepts_the_default(tmp_path):
    validate.validate_data_config(_config(data_dir=str(tmp_path)))


def test_validate_errors(tmp_path):
    assert "data.dataset" in _error(_config(dataset="mnist"))
    assert "data.train_split" in _error(_config(train_split="validation"))
    msg = _error(base_config("stl10"))
    assert "not prepared" in msg and "tfds build stl10" in msg
    for field in ("flip_prob", "color_prob", "gray_prob", "blur_prob", "solarize_prob",
                  "rotation_prob"):
        config = _config()
        config.aug[field] = 1.5
        assert f"aug.{field}" in _error(config)
    config = _config()
    config.aug.blur_kernel = 4
    assert "aug.blur_kernel" in _error(config)
    config = _config()
    config.aug.sharpen_prob = 0.5  # no registered augmentation reads it
    assert "aug.sharpen_prob: unknown field" in _error(config)


def test_unprepared_dataset_is_a_config_error_in_the_pipeline(tmp_path):
    config = base_config("cifar10")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="tfds build cifar10"):
        pipeline.steps_per_epoch(config, process_index=0, process_count=1)


# ---------------------------------------------------------------- global batch


def test_make_global_batch_shards_over_data_axis():
    mesh = jax.make_mesh((8,), ("data",), devices=jax.devices()[:8])
    host = {"view1": np.arange(16 * 2 * 2 * 3, dtype=np.uint8).reshape(16, 2, 2, 3),
            "params1": {"crop": np.ones((16, 4), np.float32)},
            "index": np.arange(16, dtype=np.int64)}
    out = global_batch.make_global_batch(host, mesh)
    assert out["view1"].shape == (16, 2, 2, 3)
    assert out["view1"].sharding.spec[0] == "data"
    assert len(out["index"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(out["index"]), np.arange(16))
    np.testing.assert_array_equal(np.asarray(out["view1"]), host["view1"])


AUTOGRAPH_PROGRAM = """
import itertools, json, sys
import numpy as np
import tensorflow_datasets as tfds
from augself_jax.data import eval_input, pipeline, source
from augself_jax.evaluation import sensitivity
from configs.common import base_config

config = base_config("shapes")
config.aug.update(solarize_prob=0.5, rotation_prob=0.5)  # every augmentation on
src = source.load_source("shapes", sys.argv[1], "train", 0, 1)
ds = pipeline.pretrain_dataset(src, seed=0, aug=config.aug, image_size=32, local_batch=8,
                               steps_per_epoch=len(src) // 8)
views = next(ds.as_numpy_iterator())["view1"]
builder = tfds.builder("augself_shapes", data_dir=sys.argv[1])
batches, _ = eval_input.eval_batches(builder, "test", image_size=32, batch_size=8,
                                     keys=("shape",), label_key="shape",
                                     max_examples=8)
images = next(iter(batches))["image"]
pixels, _ = sensitivity.controlled_views(images, config.aug, "color", seed=0, strength=1.0)
print(json.dumps({"shapes": [list(views.shape), list(images.shape), list(pixels.shape)],
                  "converted": [m for m in sys.modules if "autograph_generated" in m]}))
"""


def test_tf_data_functions_are_traced_as_written(shapes_data_dir):
    """No tf.data map function goes through AutoGraph's rewrite (1.5 s per pipeline, each
    process): the pretraining pipeline, the evaluation input and the sensitivity views,
    built and read in a fresh interpreter, leave no module AutoGraph generated."""
    seen = fresh_interpreter_json(AUTOGRAPH_PROGRAM, shapes_data_dir)
    assert seen == {"shapes": [[8, 32, 32, 3]] * 3, "converted": []}

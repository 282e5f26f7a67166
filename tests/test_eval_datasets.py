"""The evaluation dataset registry: split sizes and seeds for every dataset (TFDS mock data),
the eval preprocessing, and the manual-download builders."""

import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from augself_jax.data import eval_datasets as eds
from augself_jax.data import source
from augself_jax.data.eval_input import eval_batches, resize_center_crop
from augself_jax.errors import ConfigError


@pytest.mark.parametrize("name", sorted(eds.LINEAR))
def test_validation_split_sizes_and_seeds(name):
    d = eds.LINEAR[name]
    assert d.num_train > 0 and d.num_val > 0 and d.num_test > 0
    if d.val_split:  # an official validation split, distinct from the others: nothing drawn
        assert d.val_split not in (d.trainval_split, d.test_split)
        assert d.trainval_split != d.test_split
        return
    n = d.num_train + d.num_val
    tr, va = eds.validation_split(n, d, seed=0)
    assert (len(tr), len(va)) == (d.num_train, d.num_val)  # the reference sizes exactly
    assert len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == n
    tr2, va2 = eds.validation_split(n, d, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = eds.validation_split(n, d, seed=1)
    assert not np.array_equal(va, va3)


class _Records(list):
    """Serialized examples read by position, as TFDS's ArrayRecord data source reads them."""

    def __getitems__(self, keys):
        return [self[k] for k in keys]


def _serialized_mock(num_examples):
    """tfds.testing.mock_data's fake examples, serialized as ArrayRecord stores them (the
    mock's own data source returns decoded examples, which evaluation never reads)."""
    from tensorflow_datasets.testing.mocking import RandomFakeGenerator

    def as_data_source(self, split, **kw):
        # The top-level images, labels and scalars that evaluation reads: the mock's random
        # boxes and nested sequences cannot be serialized (min > max), and are never read.
        f = tfds.features
        features = f.FeaturesDict({
            k: v for k, v in self.info.features.items()
            if not isinstance(v, f.BBoxFeature | f.Sequence | f.FeaturesDict)})
        fake = RandomFakeGenerator(features, num_examples)
        return _Records(features.serialize_example(fake[i]) for i in range(num_examples))

    return tfds.testing.mock_data(num_examples=num_examples,
                                  policy=tfds.testing.MockPolicy.USE_CODE,
                                  as_data_source_fn=as_data_source)


def _fake_builder(columns: dict[str, np.ndarray], image_shape=(4, 4, 3)):
    """A builder whose one split holds these examples: `image` plus integer labels."""
    f = tfds.features
    features = f.FeaturesDict({k: f.Image(shape=image_shape) if k == "image"
                               else f.Scalar(np.int64) for k in columns})
    n = len(next(iter(columns.values())))
    stored = _Records(features.serialize_example({k: v[i] for k, v in columns.items()})
                      for i in range(n))
    builder = mock.MagicMock()
    builder.info.features = features
    builder.as_data_source = lambda split, **kw: stored
    return builder


def _count(builder, split, d, **kw):
    batches, num_batches = eval_batches(builder, split, image_size=8, batch_size=16,
                                        keys=d.label_keys,
                                        label_key=d.label_keys[0] if d.label_keys else None,
                                        **kw)
    batches = list(batches)
    assert len(batches) == num_batches
    for b in batches:
        assert b["image"].shape == (16, 8, 8, 3) and b["image"].dtype == np.uint8
        assert b["mask"].shape == (16,)
    return int(sum(b["mask"].sum() for b in batches))


@pytest.mark.parametrize("name", sorted(eds.LINEAR))
def test_every_linear_dataset_loads_with_mock_data(name):
    d = eds.LINEAR[name]
    from augself_jax.data import shapes  # noqa: F401

    with _serialized_mock(40):
        builder = tfds.builder(d.tfds_name)
        drop = tuple(builder.info.features[d.label_keys[0]].str2int(n)
                     for n in d.drop_label_names)
        test_n = _count(builder, d.test_split, d, drop_labels=drop)
        train_n = _count(builder, d.trainval_split, d)
        if d.val_split:
            assert _count(builder, d.val_split, d) == 40
        else:
            tr, va = eds.validation_split(train_n, d, seed=d.val_seed)
            assert len(va) == 40 * d.num_val // (d.num_train + d.num_val)
            assert len(tr) + len(va) == 40
        assert train_n == 40 and 0 < test_n <= 40
        for key in d.label_keys:
            assert key in builder.info.features


@pytest.mark.parametrize("name", sorted(eds.FEWSHOT))
def test_every_fewshot_dataset_loads_with_mock_data(name):
    d = eds.FEWSHOT[name]
    from augself_jax.data import shapes  # noqa: F401

    with _serialized_mock(30):
        builder = tfds.builder(d.tfds_name)
        batches, _ = eval_batches(builder, d.split, image_size=8, batch_size=16,
                                  keys=d.label_keys, keep=d.keep, label_key=d.label_keys[0])
        batches = list(batches)
        n = sum(int(b["mask"].sum()) for b in batches)
        expected = 30  # mock data yields num_examples for a joined split too
        if d.keep:  # FC100: only the test superclasses survive
            kept = np.concatenate([b["mask"] for b in batches])
            assert 0 < n <= expected and kept.dtype == bool
        else:
            assert n == expected


def test_fc100_filter_keeps_exactly_the_test_superclasses():
    builder = _fake_builder({"image": np.zeros((60, 4, 4, 3), np.uint8),
                             "label": np.arange(60) % 100,
                             "coarse_label": np.arange(20).repeat(3)})
    d = eds.FEWSHOT["fc100"]
    batches, _ = eval_batches(builder, "train", image_size=4, batch_size=8,
                              keys=("label", "coarse_label"), keep=d.keep)
    kept = np.concatenate([b["coarse_label"][b["mask"]] for b in batches])
    assert sorted(set(kept.tolist())) == list(eds.FC100_TEST_SUPERCLASSES)
    assert len(kept) == 3 * len(eds.FC100_TEST_SUPERCLASSES)


def test_resize_center_crop_matches_pil_bicubic():
    import PIL.Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
    got = resize_center_crop(tf.constant(img), 20).numpy()
    ref = np.asarray(PIL.Image.fromarray(img).resize((30, 20), PIL.Image.BICUBIC))[:, 5:25]
    assert got.shape == (20, 20, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).mean() < 3.0  # kernels differ slightly
    same = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(resize_center_crop(tf.constant(same), 32).numpy(), same)


def test_padded_last_batch_and_masks():
    builder = _fake_builder({"image": np.full((21, 4, 4, 3), 7, np.uint8),
                             "label": np.arange(21)})
    batches, num = eval_batches(builder, "train", image_size=4, batch_size=8,
                                keys=("label",), drop_labels=(3,))
    batches = list(batches)
    assert num == 3 and len(batches) == 3
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, [i for i in range(21) if i != 3])
    assert (np.concatenate([b["image"][b["mask"]] for b in batches]) == 7).all()


def test_processes_read_disjoint_ranges_that_cover_the_split():
    builder = _fake_builder({"image": np.zeros((23, 4, 4, 3), np.uint8),
                             "label": np.arange(23)})
    seen, counts = [], set()
    for p in range(3):  # 23 examples over 3 processes: 8, 8, 7; batches of 4 -> 2 each
        batches, num = eval_batches(builder, "train", image_size=4, batch_size=4,
                                    keys=("label",), process_index=p, process_count=3)
        batches = list(batches)
        counts.add((num, len(batches)))
        seen.append(np.concatenate([b["label"][b["mask"]] for b in batches]))
    assert counts == {(2, 2)}  # every process runs the same number of steps
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(23))
    first, _ = eval_batches(builder, "train", image_size=4, batch_size=4, keys=("label",),
                            max_examples=6)
    np.testing.assert_array_equal(
        np.concatenate([b["label"][b["mask"]] for b in first]), np.arange(6))


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.datasets: 'imagenet1k' is unknown"):
        eds.get_linear_dataset("imagenet1k")


def _write_jpeg(path):
    import PIL.Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(np.full((6, 9, 3), 100, np.uint8)).save(path)


def test_mit67_builder_over_a_manual_download(tmp_path):
    manual = tmp_path / "manual"
    names = {"train": ["bar/a.jpg", "kitchen/b.jpg", "kitchen/c.jpg"], "test": ["bar/d.jpg"]}
    for split, files in names.items():
        for f in files:
            _write_jpeg(str(manual / "Images" / f))
        (manual / f"{split.capitalize()}Images.txt").write_text("\n".join(files) + "\n")
    builder = source.prepared_builder("mit67", data_dir=str(tmp_path / "data"),
                                      field="eval.datasets", manual=True,
                                      manual_dir=str(manual))
    stored = builder.as_data_source("train")  # stored as ArrayRecord, read by TFDS itself
    labels = [int(stored[i]["label"]) for i in range(len(stored))]
    assert sorted(labels) == [0, 1, 1]  # bar, kitchen, kitchen
    assert builder.info.splits["test"].num_examples == 1


def test_aircraft_builder_missing_files_prints_instructions(tmp_path):
    builder = eds.FgvcAircraft(data_dir=str(tmp_path / "data"))
    (tmp_path / "manual").mkdir()
    with pytest.raises(Exception, match="fgvc-aircraft-2013b"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))

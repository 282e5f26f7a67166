"""Random-access data: the source reads exactly the examples TFDS stores, the built-in dataset
is prepared as ArrayRecord (any count), a TFRecord-only copy is refused in one line naming
the fix, and the data path's memory does not grow with the dataset (slow)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from augself_jax.data import augment, shapes, source
from augself_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(name: str, data_dir, file_format: str | None, num_train: int = 37):
    """A prepared built-in dataset of num_train 8 px training examples."""
    config = shapes.ShapesConfig(name=name, image_size=8, num_train=num_train, num_test=5)
    b = tfds.builder("augself_shapes", config=config, data_dir=str(data_dir),
                     file_format=file_format)
    b.download_and_prepare()
    return b


def test_builder_config_sets_the_example_count(tmp_path):
    b = _tiny("n13", tmp_path, source.FILE_FORMAT, num_train=13)
    assert b.info.splits["train"].num_examples == 13
    assert len(source.records(b, "train")) == 13 and len(source.records(b, "test")) == 5
    assert b.info.available_file_formats() == {tfds.core.FileFormat.ARRAY_RECORD}
    # The benchmark's large size is a named configuration of the same builder.
    large = shapes.AugselfShapes(config="64px_200k", data_dir=str(tmp_path))
    assert (large.builder_config.image_size, large.builder_config.num_train) == (64, 200_000)


def test_source_reads_the_examples_the_former_tfrecord_path_read(tmp_path):
    # The same builder prepared twice: TFRecord (what the former path streamed, in order)
    # and ArrayRecord (what the source reads by position).
    old = _tiny("t", tmp_path / "tfrecord", None)
    new = _tiny("t", tmp_path / "array_record", source.FILE_FORMAT)
    rows = list(old.as_dataset(split="train", shuffle_files=False,
                               decoders={"image": tfds.decode.SkipDecoding()})
                .as_numpy_iterator())
    src = source.TfdsSource(new, "train", "shape", 0, 37)
    positions = np.array([36, 0, 5, 5, 17], np.int64)  # any order, repeats allowed
    ex = {k: v.numpy() for k, v in src.lookup(tf.constant(positions)).items()}
    assert list(ex["image"]) == [rows[p]["image"] for p in positions]
    np.testing.assert_array_equal(ex["label"], [rows[p]["shape"] for p in positions])
    np.testing.assert_array_equal(ex["index"], positions)
    # The pixels are TFDS's own decoding of the stored example.
    stored = new.as_data_source("train")
    for p, encoded in zip(positions, ex["image"], strict=True):
        np.testing.assert_array_equal(augment.decode(encoded).numpy(), stored[int(p)]["image"])


def test_a_shard_reads_its_range_and_maps_indices_back(tmp_path):
    b = _tiny("t", tmp_path, source.FILE_FORMAT)
    whole = source.TfdsSource(b, "train+test", "shape", 0, 42)  # joined splits: 37 + 5
    shard = source.TfdsSource(b, "train+test", "shape", 30, 40)  # crosses into 'test'
    assert len(shard) == 10
    got = shard.lookup(tf.range(10, dtype=tf.int64))
    want = whole.lookup(tf.range(30, 40, dtype=tf.int64))
    for k in ("image", "label", "index"):
        np.testing.assert_array_equal(got[k].numpy(), want[k].numpy())
    np.testing.assert_array_equal(shard.positions_of(np.array([31, 39])), [1, 9])


def test_class_subset_keeps_and_relabels_only_its_classes(tmp_path):
    b = _tiny("t", tmp_path, source.FILE_FORMAT)
    label_map = np.array([-1, 0, -1, 1], np.int32)  # keep square -> 0, plus -> 1
    src = source.TfdsSource(b, "train", "shape", 0, 37, label_map)
    everything = source.TfdsSource(b, "train", "shape", 0, 37)
    labels = everything.lookup(tf.range(37, dtype=tf.int64))["label"].numpy()
    kept = np.flatnonzero((labels == 1) | (labels == 3))
    assert len(src) == len(kept)
    ex = src.lookup(tf.range(len(src), dtype=tf.int64))
    np.testing.assert_array_equal(ex["index"].numpy(), kept)
    np.testing.assert_array_equal(ex["label"].numpy(), label_map[labels[kept]])
    np.testing.assert_array_equal(src.positions_of(kept), np.arange(len(kept)))


def test_tfrecord_only_copy_is_one_line_naming_the_fix(tmp_path):
    b = _tiny("t", tmp_path, None)  # TFDS's default format: TFRecord
    with pytest.raises(ConfigError) as e:
        source.check_random_access(b, name="shapes")
    message = str(e.value)
    assert "\n" not in message and message.startswith("data.dataset: 'shapes'")
    assert "tfrecord" in message and str(b.data_dir) in message
    assert f"--data_dir={tmp_path} --file_format=array_record" in message
    assert "download_and_prepare(file_format='array_record')" in message


def test_unprepared_dataset_is_one_line_naming_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        source.prepared_builder("cifar10", data_dir=str(tmp_path), field="eval.datasets",
                                name="cifar10")
    message = str(e.value)
    assert "\n" not in message and message.startswith("eval.datasets:")
    assert f"tfds build cifar10 --data_dir={tmp_path} --file_format=array_record" in message


@pytest.mark.slow
def test_data_path_memory_is_flat_in_the_dataset_size(tmp_path):
    """2,000 against 20,000 64 px examples, each in a fresh process: the in-memory reading
    grows by about the encoded bytes (the measure sees growth), the data path does not."""
    out = tmp_path / "results.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_memory.py"),
                    "--sizes=2000,20000", "--steps=10", "--rounds=1",
                    f"--data_dir={tmp_path}", f"--json={out}"], check=True, cwd=ROOT,
                   capture_output=True)
    rss = {(r["size"], r["mode"]): r["peak_rss_mib"]
           for r in json.loads(out.read_text())["results"]}
    b = shapes.AugselfShapes(config="64px", data_dir=str(tmp_path))
    encoded_mib = b.info.splits["train"].num_bytes / 2**20 * 18 / 20  # the 18,000 more
    assert rss[(20000, "memory")] - rss[(2000, "memory")] > 0.5 * encoded_mib
    assert rss[(20000, "disk")] <= 1.10 * rss[(2000, "disk")]

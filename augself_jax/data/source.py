"""Reading a TFDS split into memory for random access: this process's shard, images kept
encoded (PNG/JPEG bytes), with each example's global index and label.

Random access is what makes the stream exact: the batch of step k is a gather of a
stateless per-epoch permutation, so a restart needs no reading to skip ahead.
"""

import dataclasses
import functools

import numpy as np

from augself_jax.data import registry
from augself_jax.errors import ConfigError

BUILTIN = "augself_shapes"


@dataclasses.dataclass(frozen=True)
class ExampleSource:
    """A host shard in memory: encoded images, labels, global example indices."""

    images: np.ndarray  # object [n] of encoded bytes
    labels: np.ndarray  # int32 [n]
    indices: np.ndarray  # int64 [n], position in the (unfiltered) split

    def __len__(self) -> int:
        return len(self.labels)


def builder(info: registry.DatasetInfo, data_dir: str | None):
    """The TFDS builder; the built-in dataset is generated on first use, any other dataset
    must already be prepared (ConfigError saying how, otherwise)."""
    import tensorflow_datasets as tfds

    if info.tfds_name.startswith(BUILTIN):
        from augself_jax.data import shapes  # noqa: F401  (registers the builder)
    b = tfds.builder(info.tfds_name, data_dir=data_dir, try_gcs=False)
    if not b.is_prepared():
        if info.tfds_name.startswith(BUILTIN):
            b.download_and_prepare()
        else:
            raise ConfigError(not_prepared_message(info, data_dir))
    return b


def not_prepared_message(info: registry.DatasetInfo, data_dir: str | None) -> str:
    where = data_dir or "~/tensorflow_datasets"
    name = info.tfds_name.split("/")[0]
    manual = (" (put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
              f"{where}/downloads/manual first)" if name == "imagenet2012" else "")
    return (f"data.dataset: TFDS dataset '{info.tfds_name}' for '{info.name}' is not prepared "
            f"in {where}; prepare it with `tfds build {name} --data_dir={where}`{manual} "
            "or point data.data_dir at a prepared copy")


def split_parts(b, split: str) -> list[tuple[str, int]]:
    """'train+unlabeled' -> [('train', n_train), ('unlabeled', n_unlabeled)]."""
    parts = []
    for name in split.split("+"):
        if name not in b.info.splits:
            raise ConfigError(f"data split: unknown '{name}' for {b.info.name}; allowed: "
                              f"{', '.join(b.info.splits.keys())}")
        parts.append((name, b.info.splits[name].num_examples))
    return parts


def shard_range(total: int, process_index: int, process_count: int) -> tuple[int, int]:
    """Even, disjoint per-process ranges of the global index space (remainder dropped)."""
    n = total // process_count
    return process_index * n, (process_index + 1) * n


def _range_to_split(parts: list[tuple[str, int]], start: int, stop: int) -> str:
    """Global [start, stop) over the concatenated parts -> a TFDS split string."""
    pieces, offset = [], 0
    for name, n in parts:
        a, b = max(start, offset), min(stop, offset + n)
        if a < b:
            pieces.append(f"{name}[{a - offset}:{b - offset}]")
        offset += n
    return "+".join(pieces)


@functools.lru_cache(maxsize=4)
def load_source(dataset: str, data_dir: str | None, split: str, process_index: int,
                process_count: int) -> ExampleSource:
    """This process's shard of `split` (registry name `dataset`), in order."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    info = registry.get_dataset_info(dataset)
    b = builder(info, data_dir)
    parts = split_parts(b, split)
    start, stop = shard_range(sum(n for _, n in parts), process_index, process_count)
    ds = b.as_dataset(split=_range_to_split(parts, start, stop), shuffle_files=False,
                      decoders={"image": tfds.decode.SkipDecoding()},
                      read_config=tfds.ReadConfig(interleave_cycle_length=1))
    ds = ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex[info.label_key], tf.int32)})
    images, labels = [], []
    for batch in ds.batch(4096).as_numpy_iterator():
        images.extend(batch["image"])
        labels.append(batch["label"])
    labels = np.concatenate(labels) if labels else np.zeros([0], np.int32)
    indices = np.arange(start, start + len(labels), dtype=np.int64)
    images = np.asarray(images, dtype=object)
    if info.class_subset:
        names = b.info.features[info.label_key].names
        remap = np.full(len(names), -1, np.int32)
        for new, wnid in enumerate(info.class_subset):
            remap[names.index(wnid)] = new
        labels = remap[labels]
        keep = labels >= 0
        images, labels, indices = images[keep], labels[keep], indices[keep]
    return ExampleSource(images=images, labels=labels, indices=indices)


def num_examples(dataset: str, data_dir: str | None, split: str) -> int:
    """Examples in `split` from the TFDS metadata (before any class filtering)."""
    info = registry.get_dataset_info(dataset)
    return sum(n for _, n in split_parts(builder(info, data_dir), split))

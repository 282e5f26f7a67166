"""Random-access reading of TFDS datasets stored as ArrayRecord.

One function, `prepared_builder`, makes a TFDS builder ready for reading (the built-in dataset
is generated on first use; a manual-download dataset is built from its files; anything else
must be prepared already) and checks that it is stored as ArrayRecord, the TFDS format with
random access. Pretraining and evaluation then read exactly the examples they need through
`records` (serialized examples, read by position): host memory does not grow with the
dataset, start-up reads nothing, and the batch of step k is a gather of a stateless
per-epoch permutation, so a restart needs no reading to skip ahead.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from augself_jax.data import registry
from augself_jax.errors import ConfigError

if TYPE_CHECKING:  # imported where used: importing this module stays cheap
    import tensorflow as tf
    import tensorflow_datasets as tfds

BUILTIN = "augself_shapes"
FILE_FORMAT = "array_record"  # the random-access format every dataset must be stored in
_SCAN_CHUNK = 4096  # records parsed at once when a class subset is scanned


def _where(data_dir: str | None) -> str:
    """Where TFDS looks for `data_dir`: itself, else TFDS_DATA_DIR, else TFDS's default (the
    advice must name the folder TFDS searched, or following it changes nothing)."""
    if data_dir:
        return str(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"


def _build_command(tfds_name: str, data_dir: str | None) -> str:
    where = _where(data_dir)
    return (f"`tfds build {tfds_name.split('/')[0]} --data_dir={where} "
            f"--file_format={FILE_FORMAT}` (or `tfds.builder('{tfds_name}', "
            f"data_dir='{where}').download_and_prepare(file_format='{FILE_FORMAT}')`)")


def not_prepared_message(tfds_name: str, data_dir: str | None, *, name: str,
                         field: str = "data.dataset") -> str:
    manual = (" (put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
              f"{_where(data_dir)}/downloads/manual first)"
              if tfds_name.startswith("imagenet2012") else "")
    return (f"{field}: TFDS dataset '{tfds_name}' for '{name}' is not prepared in "
            f"{_where(data_dir)}; prepare it with {_build_command(tfds_name, data_dir)}"
            f"{manual} or point the data_dir at a prepared copy")


def check_random_access(b: tfds.core.DatasetBuilder, *, field: str = "data.dataset",
                        name: str | None = None) -> None:
    """ConfigError (one line, with the command that fixes it) unless the prepared builder `b`
    is stored in a random-access format."""
    from tensorflow_datasets.core import file_adapters

    formats = b.info.available_file_formats()
    if formats & set(file_adapters.FileFormat.with_random_access()):
        return
    stored = ", ".join(sorted(f.value for f in formats)) or "an unknown format"
    tfds_name = b.info.full_name.rsplit("/", 1)[0]  # "name/config", no version
    raise ConfigError(
        f"{field}: '{name or tfds_name}' is prepared in {b.data_dir} as {stored} only; "
        f"random access needs {FILE_FORMAT}: rebuild it into another data_dir (or after "
        f"deleting {b.data_dir}) with {_build_command(tfds_name, str(b.data_dir_root))}")


def prepared_builder(tfds_name: str, *, data_dir: str | None, field: str = "data.dataset",
                     name: str | None = None, manual: bool = False,
                     manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `tfds_name`, prepared as ArrayRecord.

    The built-in dataset is generated here (no download); a manual-download dataset is built
    from `manual_dir`; anything else must already be prepared in `data_dir` (TFDS's default
    when None). Every failure is one ConfigError line naming `field` and the fix.
    """
    import tensorflow_datasets as tfds

    builtin = tfds_name.startswith(BUILTIN)
    if builtin:
        from augself_jax.data import shapes  # noqa: F401  (registers the builder)
    b = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
    label = name or tfds_name
    if not b.is_prepared():
        if not (builtin or manual):
            raise ConfigError(not_prepared_message(tfds_name, data_dir, name=label,
                                                   field=field))
        if manual and not manual_dir:
            raise ConfigError(f"{field}: dataset {label} is not prepared in {b.data_dir} and "
                              "needs a manual download; "
                              + " ".join(b.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        # A fresh builder object: the file format can only be chosen before TFDS fixes it.
        b = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False, file_format=FILE_FORMAT)
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        b.download_and_prepare(download_config=config)
    check_random_access(b, field=field, name=label)
    return b


def builder(info: registry.DatasetInfo, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared builder of a registry dataset (pretraining, the kNN monitor)."""
    return prepared_builder(info.tfds_name, data_dir=data_dir, name=info.name)


def records(b: tfds.core.DatasetBuilder, split: str) -> Sequence[bytes]:
    """The serialized examples of `split` of a prepared builder, read by position (a TFDS
    split string: 'train', 'train+unlabeled', 'test[:100]'), never held in memory."""
    import tensorflow_datasets as tfds

    return b.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def read(source: Sequence[bytes], positions: np.ndarray) -> np.ndarray:
    """object [n] of the serialized examples at `positions` (parallel reads)."""
    positions = [int(p) for p in np.asarray(positions).reshape(-1)]
    if not positions:
        return np.zeros([0], object)
    return np.asarray(source.__getitems__(positions), dtype=object)


def parse(b: tfds.core.DatasetBuilder, serialized: tf.Tensor, keys: Sequence[str]
          ) -> dict[str, tf.Tensor]:
    """tf.io.parse_example of the top-level features `keys` of a batch of serialized
    examples; images stay encoded (decode them with the feature's decode_example)."""
    import tensorflow as tf

    features = b.info.features
    spec, nested = {}, {}
    for k in keys:
        info = features[k].get_serialized_info()
        # A dict of scalars (celeb_a's `landmarks`) is stored flat as `k/<name>`.
        parts = info if isinstance(info, dict) else {None: info}
        nested[k] = [n for n in parts if n is not None]
        for n, tensor in parts.items():
            spec[k if n is None else f"{k}/{n}"] = tf.io.FixedLenFeature(tensor.shape,
                                                                          tensor.tf_dtype)
    flat = tf.io.parse_example(serialized, spec)
    return {k: {n: flat[f"{k}/{n}"] for n in names} if names else flat[k]
            for k, names in nested.items()}


def split_parts(b: tfds.core.DatasetBuilder, split: str) -> list[tuple[str, int]]:
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


def _lookup_arrays(fn, positions, dtypes):
    import tensorflow as tf

    outs = tf.numpy_function(fn, [positions], list(dtypes), stateful=False)
    for t in outs:
        t.set_shape(positions.shape)
    return outs


# A source is what the pretraining stream reads: a host's examples by position 0..len-1.
# `lookup(positions)` maps an int64 tf.Tensor [b] to {'image': encoded string [b],
# 'label': int32 [b], 'index': int64 [b] (the example's position in the whole split)};
# `positions_of(index)` inverts the last.


@dataclasses.dataclass(frozen=True)
class ExampleSource:
    """Examples already in memory (encoded images, labels, global indices): for images made
    on the spot (tests, benchmarks). Datasets are read from disk with `TfdsSource`."""

    images: np.ndarray  # object [n] of encoded bytes
    labels: np.ndarray  # int32 [n]
    indices: np.ndarray  # int64 [n], position in the (unfiltered) split

    def __len__(self) -> int:
        return len(self.labels)

    def lookup(self, positions: tf.Tensor) -> dict[str, tf.Tensor]:
        import tensorflow as tf

        images, labels, indices = _lookup_arrays(
            lambda i: (self.images[i], self.labels[i], self.indices[i]), positions,
            (tf.string, tf.int32, tf.int64))
        return {"image": images, "label": labels, "index": indices}

    def positions_of(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.indices, indices)


class TfdsSource:
    """A host's shard of a TFDS split, read by position from ArrayRecord.

    Memory is the file readers plus, for a class subset only, the kept positions (8 bytes an
    example); nothing else grows with the dataset.
    """

    def __init__(self, b: tfds.core.DatasetBuilder, split: str, label_key: str, start: int,
                 stop: int, label_map: np.ndarray | None = None):
        self.builder, self.label_key, self.start = b, label_key, start
        parts = split_parts(b, split)
        self._records = records(b, _range_to_split(parts, start, stop)) if stop > start else []
        self._label_map = label_map
        self._kept = None  # positions in the shard that survive the class subset
        if label_map is not None:
            labels = self._scan_labels()
            self._kept = np.flatnonzero(label_map[labels] >= 0).astype(np.int64)

    def __len__(self) -> int:
        return len(self._records) if self._kept is None else len(self._kept)

    def _scan_labels(self) -> np.ndarray:
        """Every label of the shard (a class subset must know which examples it keeps)."""
        labels = [np.zeros([0], np.int64)]
        for begin in range(0, len(self._records), _SCAN_CHUNK):
            chunk = read(self._records, np.arange(begin, min(len(self._records),
                                                             begin + _SCAN_CHUNK)))
            labels.append(parse(self.builder, chunk, [self.label_key])[self.label_key].numpy())
        return np.concatenate(labels)

    def shard_positions(self, positions: np.ndarray) -> np.ndarray:
        """Positions 0..len-1 of this source -> positions in the shard's records."""
        positions = np.asarray(positions, np.int64)
        return positions if self._kept is None else self._kept[positions]

    def positions_of(self, indices: np.ndarray) -> np.ndarray:
        shard = np.asarray(indices, np.int64) - self.start
        return shard if self._kept is None else np.searchsorted(self._kept, shard)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The serialized examples at `positions` of this source."""
        return read(self._records, self.shard_positions(positions))

    def lookup(self, positions: tf.Tensor) -> dict[str, tf.Tensor]:
        import tensorflow as tf

        serialized, indices = _lookup_arrays(
            lambda i: (self.read(i), self.start + self.shard_positions(i)), positions,
            (tf.string, tf.int64))
        ex = parse(self.builder, serialized, ["image", self.label_key])
        labels = tf.cast(ex[self.label_key], tf.int32)
        if self._label_map is not None:
            labels = tf.gather(tf.constant(self._label_map), labels)
        return {"image": ex["image"], "label": labels, "index": indices}


Source = TfdsSource | ExampleSource


def _label_map(b, info: registry.DatasetInfo) -> np.ndarray | None:
    """int32 [num TFDS classes]: the subset's new label of each class, -1 for the others."""
    if not info.class_subset:
        return None
    names = b.info.features[info.label_key].names
    remap = np.full(len(names), -1, np.int32)
    for new, wnid in enumerate(info.class_subset):
        remap[names.index(wnid)] = new
    return remap


@functools.lru_cache(maxsize=4)
def load_source(dataset: str, data_dir: str | None, split: str, process_index: int,
                process_count: int) -> TfdsSource:
    """This process's shard of `split` (registry name `dataset`), in order."""
    info = registry.get(dataset)
    b = builder(info, data_dir)
    start, stop = shard_range(sum(n for _, n in split_parts(b, split)), process_index,
                              process_count)
    return TfdsSource(b, split, info.label_key, start, stop, _label_map(b, info))


def num_examples(dataset: str, data_dir: str | None, split: str) -> int:
    """Examples in `split` from the TFDS metadata (before any class filtering)."""
    info = registry.get(dataset)
    return sum(n for _, n in split_parts(builder(info, data_dir), split))

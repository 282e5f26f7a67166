"""The two-view pretraining stream: per-host shard, exact and resumable.

The position in the stream IS the global step: the batch of step k is a pure function of
(config, k, process_index, process_count). Step k of epoch e = k // steps_per_epoch takes
positions [j*b, (j+1)*b) (j = k mod steps_per_epoch) of a stateless per-epoch permutation
of this process's shard (tf.random.experimental.index_shuffle), so restarting at any step
needs no reading to skip ahead. Views and parameters come from `augment.two_views`.
"""

from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from augself_jax.data import augment, registry, source
from augself_jax.data.global_batch import check_batch_divides
from augself_jax.errors import ConfigError

_NEVER = 2**62  # the stream is infinite; the trainer decides when to stop


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return process_index, process_count


def train_split(config: ml_collections.ConfigDict) -> str:
    info = registry.get(config.data.dataset)
    return config.data.get("train_split") or info.train_split


def local_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
    check_batch_divides("batch_size", int(config.batch_size), process_count=process_count)
    return config.batch_size // process_count


def load_pretrain_source(config: ml_collections.ConfigDict, process_index: int,
                         process_count: int) -> source.TfdsSource:
    return source.load_source(config.data.dataset, config.data.data_dir, train_split(config),
                              process_index, process_count)


def _agree_min(value: int) -> int:
    """The minimum over all processes of a real multi-process run (identity otherwise)."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.int64(value))))


def steps_per_epoch(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                    process_count: int | None = None) -> int:
    """Full local batches in one pass over a process's shard (remainder dropped)."""
    process_index, process_count = _processes(process_index, process_count)
    b = local_batch_size(config, process_count)
    info = registry.get(config.data.dataset)
    if info.class_subset:  # only reading the labels tells how many examples remain
        n = len(load_pretrain_source(config, process_index, process_count))
        n = _agree_min(n)
    else:  # metadata suffices: every shard holds total // process_count examples
        n = source.num_examples(config.data.dataset, config.data.data_dir,
                                train_split(config)) // process_count
    if n < b:
        raise ConfigError(f"batch_size: {config.batch_size} is larger than the "
                          f"{n * process_count} pretraining examples of '{info.name}'")
    return n // b


def pretrain_dataset(src: source.Source, *, seed: int, aug: ml_collections.ConfigDict,
                     image_size: int, local_batch: int, steps_per_epoch: int,
                     start_step: int = 0, process_index: int = 0, record: bool = True,
                     num_parallel_calls: int = -1, prefetch: int = 2) -> tf.data.Dataset:
    """The tf.data stream over a shard read by position (see the module docstring). With
    `record`, each batch carries both views' records packed as 'params' float32
    [b, 2, augment.PACKED_SIZE]; `unpack_batch` (done by PretrainIterator) restores
    'params1' and 'params2'."""
    b, spe, n = local_batch, steps_per_epoch, len(src)

    def fetch(step):
        epoch = step // spe
        positions = (step % spe) * b + tf.range(b, dtype=tf.int64)
        perm_seed = tf.stack([tf.constant(seed, tf.int64), tf.constant(0xDA7A, tf.int64)])
        for data in (epoch, process_index):
            perm_seed = tf.random.experimental.stateless_fold_in(perm_seed,
                                                                 tf.cast(data, tf.int64))
        local = tf.random.experimental.index_shuffle(positions, perm_seed, n - 1)
        ex = src.lookup(local)  # reads exactly these examples (random access)
        return {"image": ex["image"], "label": ex["label"], "index": ex["index"],
                "epoch": tf.fill([b], epoch)}

    def make_views(ex):
        out = augment.two_views(augment.decode(ex["image"]), seed, ex["epoch"], ex["index"],
                                aug, image_size, record=record)
        return {**out, "label": ex["label"], "index": ex["index"]}

    as_written = augment.traced_as_written
    ds = tf.data.Dataset.range(start_step, _NEVER).map(as_written(fetch)).unbatch()
    ds = ds.map(as_written(make_views), num_parallel_calls=num_parallel_calls,
                deterministic=True)
    ds = ds.batch(b, drop_remainder=True)
    if record:
        ds = ds.map(as_written(lambda batch: {**batch, "params": augment.draw_device_params(
            batch["params"], aug)}))
    ds = ds.prefetch(prefetch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def unpack_batch(batch: dict) -> dict:
    """A batch from `pretrain_dataset` with its packed 'params' [b, 2, K] -> 'params1',
    'params2' records (numpy slices: microseconds per batch)."""
    batch = dict(batch)
    if "params" in batch:
        packed = batch.pop("params")
        batch["params1"] = augment.unpack(packed[:, 0])
        batch["params2"] = augment.unpack(packed[:, 1])
    return batch


class PretrainIterator(Iterator[dict]):
    """Host-local numpy batches; `step` is the global step of the NEXT batch (the data
    position a checkpoint stores)."""

    def __init__(self, dataset: tf.data.Dataset, start_step: int):
        self._it = dataset.as_numpy_iterator()
        self.step = start_step

    def __next__(self) -> dict:
        batch = unpack_batch(next(self._it))
        self.step += 1
        return batch


def make_pretrain_iterator(config: ml_collections.ConfigDict, *, start_step: int = 0,
                           process_index: int | None = None,
                           process_count: int | None = None) -> PretrainIterator:
    """Batches of config.batch_size // process_count two-view examples from step start_step:
    {'view1', 'view2': uint8 [b, S, S, 3], 'params1', 'params2': records,
     'label': int32 [b], 'index': int64 [b]}."""
    process_index, process_count = _processes(process_index, process_count)
    src = load_pretrain_source(config, process_index, process_count)
    ds = pretrain_dataset(
        src, seed=config.seed, aug=config.aug, image_size=config.data.image_size,
        local_batch=local_batch_size(config, process_count),
        steps_per_epoch=steps_per_epoch(config, process_index=process_index,
                                        process_count=process_count),
        start_step=start_step, process_index=process_index,
        num_parallel_calls=config.data.num_parallel_calls, prefetch=config.data.prefetch)
    return PretrainIterator(ds, start_step)

"""The kNN monitor during pretraining: 1-NN with cosine similarity, the labelled train split
as memory and the test split as queries (EVALUATION.md, as the reference)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from augself_jax.train import mesh as mesh_lib
from augself_jax.train.state import Setup, TrainState


def load_split(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Up to config.knn_max_examples images of `split` (normalised float32 [N,S,S,3], shorter
    side resized bicubic to the pretraining size then centre-cropped) and their labels."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from augself_jax.data.registry import get_dataset_info

    info = get_dataset_info(config.data.dataset)
    size = int(config.data.image_size)
    train_split = getattr(info, "labeled_train_split", "") or info.train_split
    split_name = train_split if split == "train" else info.test_split
    ds = tfds.load(info.tfds_name, split=split_name, data_dir=config.data.data_dir,
                   shuffle_files=False, try_gcs=False)
    if config.knn_max_examples > 0:
        ds = ds.take(int(config.knn_max_examples))

    def preprocess(example):
        image = tf.cast(example["image"], tf.float32) / 255.0
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        resized = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, tf.maximum(resized, size), method="bicubic")
        image = tf.image.resize_with_crop_or_pad(image, size, size)
        image = (tf.clip_by_value(image, 0.0, 1.0) - info.mean) / info.std
        return image, example[info.label_key]

    images, labels = [], []
    for x, y in ds.map(preprocess).batch(512).as_numpy_iterator():
        images.append(x.astype(np.float32))
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def make_feature_fn(setup: Setup) -> Callable[[TrainState, jax.Array], jax.Array]:
    """jit(features)(state, images): pooled backbone features, batch norm in inference mode."""
    def features(state: TrainState, images: jax.Array) -> jax.Array:
        backbone = nnx.merge(setup.graphdef, state.params, state.rest).backbone
        backbone.eval()
        return backbone(images).astype(jnp.float32)

    return jax.jit(features, out_shardings=mesh_lib.replicated(setup.mesh))


def extract(feature_fn: Callable, state: TrainState, images: np.ndarray,
            mesh: jax.sharding.Mesh, batch_size: int = 512) -> np.ndarray:
    """Features of host images (identical on every process), batch padded to the mesh."""
    data_size = mesh.shape["data"]
    batch_size = max(data_size, batch_size - batch_size % data_size)
    sharding = mesh_lib.data_sharded(mesh)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
        padded[:len(chunk)] = chunk
        array = jax.make_array_from_callback(padded.shape, sharding, lambda idx, p=padded: p[idx])
        out.append(np.asarray(feature_fn(state, array))[:len(chunk)])
    return np.concatenate(out)


def nearest_neighbor_accuracy(memory: np.ndarray, memory_labels: np.ndarray,
                              queries: np.ndarray, query_labels: np.ndarray) -> float:
    """Top-1 accuracy of the label of each query's most cosine-similar memory example."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    memory, queries = unit(memory), unit(queries)
    correct = 0
    for start in range(0, len(queries), 1024):
        nearest = np.argmax(queries[start:start + 1024] @ memory.T, axis=1)
        correct += int(np.sum(memory_labels[nearest] == query_labels[start:start + 1024]))
    return correct / len(queries)


class KnnMonitor:
    """Loads the two splits once; `__call__(state)` is the current 1-NN accuracy."""

    def __init__(self, config: ml_collections.ConfigDict, setup: Setup):
        self._mesh = setup.mesh
        self._feature_fn = make_feature_fn(setup)
        self._memory, self._memory_labels = load_split(config, "train")
        self._queries, self._query_labels = load_split(config, "test")

    def __call__(self, state: TrainState) -> float:
        memory = extract(self._feature_fn, state, self._memory, self._mesh)
        queries = extract(self._feature_fn, state, self._queries, self._mesh)
        return nearest_neighbor_accuracy(memory, self._memory_labels, queries,
                                         self._query_labels)

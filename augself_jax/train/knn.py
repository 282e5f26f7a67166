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
    """The first config.knn_max_examples (0: all) images of the labelled train split or the
    test split, uint8 [N,S,S,3] preprocessed as in evaluation, and their labels."""
    from augself_jax.data import registry, source
    from augself_jax.data.eval_input import eval_batches

    info = registry.get_dataset_info(config.data.dataset)
    builder = source.builder(info, config.data.data_dir)
    split_name = (info.labeled_train_split or info.train_split) if split == "train" \
        else info.test_split
    keep = None
    if info.class_subset:  # ImageNet-100: the 100 classes of ImageNet
        feature = builder.info.features[info.label_key]
        keep = (info.label_key, tuple(int(feature.str2int(n)) for n in info.class_subset))
    batches, _ = eval_batches(builder, split_name, image_size=int(config.data.image_size),
                              batch_size=256, keys=(info.label_key,), keep=keep,
                              label_key=info.label_key, max_examples=int(config.knn_max_examples))
    images, labels = [], []
    for batch in batches:
        images.append(batch["image"][batch["mask"]])
        labels.append(batch[info.label_key][batch["mask"]].astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def make_feature_fn(config: ml_collections.ConfigDict,
                    setup: Setup) -> Callable[[TrainState, jax.Array], jax.Array]:
    """jit(features)(state, uint8 images): pooled backbone features, batch norm in inference
    mode, inputs normalised with the pretraining mean and std."""
    from augself_jax.data.photometric import normalize
    from augself_jax.data.registry import get_dataset_info

    info = get_dataset_info(config.data.dataset)

    def features(state: TrainState, images: jax.Array) -> jax.Array:
        backbone = nnx.merge(setup.graphdef, state.params, state.rest).backbone
        backbone.eval()
        x = normalize(images.astype(jnp.float32) / 255.0, info.mean, info.std)
        return backbone(x).astype(jnp.float32)

    return jax.jit(features, out_shardings=mesh_lib.replicated(setup.mesh))


def extract(feature_fn: Callable, state: TrainState, images: np.ndarray,
            mesh: jax.sharding.Mesh, batch_size: int = 256) -> np.ndarray:
    """Features of host images (the same on every process), fixed batch shape, padded."""
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


class KnnMonitor:
    """Loads the two splits once; `__call__(state)` is the current 1-NN accuracy."""

    def __init__(self, config: ml_collections.ConfigDict, setup: Setup):
        self._mesh = setup.mesh
        self._feature_fn = make_feature_fn(config, setup)
        self._memory, self._memory_labels = load_split(config, "train")
        self._queries, self._query_labels = load_split(config, "test")

    def __call__(self, state: TrainState) -> float:
        memory = extract(self._feature_fn, state, self._memory, self._mesh)
        queries = extract(self._feature_fn, state, self._queries, self._mesh)
        from augself_jax.evaluation.knn import knn_accuracy

        top1 = knn_accuracy(memory, self._memory_labels, queries, self._query_labels, ks=(1,))
        return top1[1] / 100.0

"""The kNN monitor during pretraining: 1-NN with cosine similarity, the labelled train split
as memory and the test split as queries (docs/EVALUATION.md section 4, as the reference), on
the first `knn_max_examples` images of each. The features and the accuracy come from the
evaluation's own FeatureExtractor and `knn` protocol, in percent as the evaluation reports
them; the number equals evaluate.py's `top1_k1` only when both use the same images (the
monitor's subset is usually smaller). TensorBoard: `monitor/knn_1nn_top1_pct`."""

import jax
import ml_collections
import numpy as np
from flax import nnx

from augself_jax.evaluation import common
from augself_jax.evaluation.features import FeatureExtractor
from augself_jax.evaluation.knn import KnnEvaluator
from augself_jax.train.state import Setup, TrainState

_BATCH = 256  # rows per global batch of the monitor, rounded to the mesh's data axis


def load_split(config: ml_collections.ConfigDict, split: str, global_batch: int
               ) -> list[dict[str, np.ndarray]]:
    """This process's host batches (uint8 images preprocessed as in evaluation, `label`,
    `mask`) of the first config.knn_max_examples (0: all) images of the labelled train
    split (`split='train'`) or the test split; kept in memory for every monitor call."""
    from augself_jax.data import registry, source
    from augself_jax.data.eval_input import eval_batches

    info = registry.get(config.data.dataset)
    builder = source.builder(info, config.data.data_dir)
    split_name = (info.labeled_train_split or info.train_split) if split == "train" \
        else info.test_split
    keep = None
    if info.class_subset:  # ImageNet-100: the 100 classes of ImageNet
        feature = builder.info.features[info.label_key]
        keep = (info.label_key, tuple(int(feature.str2int(n)) for n in info.class_subset))
    batches, _ = eval_batches(builder, split_name, image_size=int(config.data.image_size),
                              batch_size=global_batch // jax.process_count(),
                              keys=(info.label_key,), keep=keep, label_key=info.label_key,
                              process_index=jax.process_index(),
                              process_count=jax.process_count(),
                              max_examples=int(config.knn_max_examples))
    return [{"image": b["image"], "label": b[info.label_key], "mask": b["mask"]}
            for b in batches]


class KnnMonitor:
    """Loads the two splits once; `__call__(state)` is the current 1-NN top-1 accuracy in
    percent; `num_train` and `num_test` are the images it uses."""

    def __init__(self, config: ml_collections.ConfigDict, setup: Setup):
        from augself_jax.data import registry as datasets
        from augself_jax.data.global_batch import check_batch_divides

        info = datasets.get(config.data.dataset)
        data_axis = setup.mesh.shape["data"]
        global_batch = max(data_axis, _BATCH - _BATCH % data_axis)
        check_batch_divides("the kNN monitor's batch", global_batch, data_axis=data_axis,
                            process_count=jax.process_count())
        self._graphdef = setup.graphdef
        self._extractor = FeatureExtractor(setup.mesh, info.mean, info.std)
        self._knn = KnnEvaluator(ks=(1,))
        self._splits = {"train": load_split(config, "train", global_batch),
                        "test": load_split(config, "test", global_batch)}
        counts = np.array([sum(int(b["mask"].sum()) for b in self._splits[s])
                           for s in ("train", "test")])  # this process's real rows
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
        self.num_train, self.num_test = int(counts[0]), int(counts[1])

    def __call__(self, state: TrainState) -> float:
        backbone = nnx.merge(self._graphdef, state.params, state.rest).backbone
        backbone.eval()
        splits = {name: self._extractor(backbone, batches)
                  for name, batches in self._splits.items()}
        features = common.Features("monitor", ("label",), splits)
        (top1,) = self._knn.run(features)
        return float(top1.value)

"""k-nearest-neighbour accuracy on frozen features, cosine similarity.

k = 1 is the reference's monitor. For k > 1 the neighbours vote with weight exp(sim / T),
T = 0.07, as InstDisc / DINO's kNN evaluation (plain majority votes tie often at k = 20).
The `knn` protocol (eval.knn_k) and the trainer's monitor (k = 1, train/monitor.py) are the
same `KnnEvaluator`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.methods.core import l2_normalize

TEMPERATURE = 0.07


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _predict(memory, memory_labels, queries, *, ks, num_classes):
    sims = l2_normalize(queries) @ memory.T  # memory is already unit-norm
    top_sims, top_idx = jax.lax.top_k(sims, max(ks))
    top_labels = memory_labels[top_idx]
    preds = []
    for k in ks:
        votes = jax.nn.one_hot(top_labels[:, :k], num_classes) * jnp.exp(
            top_sims[:, :k, None] / TEMPERATURE)
        preds.append(jnp.argmax(votes.sum(axis=1), axis=-1))
    return jnp.stack(preds)


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, ks: Sequence[int] = (1, 20), num_classes: int | None = None,
                 chunk: int = 1024) -> dict[int, float]:
    """{k: top-1 accuracy in percent} of each query's k cosine-nearest training examples."""
    ks = tuple(int(k) for k in ks)
    num_classes = int(num_classes or max(train_y.max(), test_y.max()) + 1)
    memory = l2_normalize(jnp.asarray(train_x, jnp.float32))
    memory_labels = jnp.asarray(train_y, jnp.int32)
    ks = tuple(min(k, len(train_y)) for k in ks)
    test_x = np.asarray(test_x, np.float32)
    correct = np.zeros(len(ks))
    for start in range(0, len(test_x), chunk):
        q = test_x[start:start + chunk]
        pad = chunk - len(q) if len(test_x) > chunk else 0  # fixed shape after the first chunk
        qp = np.concatenate([q, np.zeros((pad, q.shape[1]), np.float32)])
        preds = np.asarray(_predict(memory, memory_labels, jnp.asarray(qp), ks=ks,
                                    num_classes=num_classes))[:, :len(q)]
        correct += (preds == test_y[start:start + len(q)][None]).sum(axis=1)
    return {k: float(100.0 * c / len(test_y)) for k, c in zip(ks, correct, strict=True)}


class KnnEvaluator(common.Evaluator):
    """Top-1 accuracy of the test split's queries against the train split's memory, for
    each k of `ks` and each label task."""

    name = "knn"

    def __init__(self, ks: Sequence[int] = (1, 20)):
        self.ks = tuple(int(k) for k in ks)

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        if not common.positive_ints("eval.knn_k", config.eval.knn_k):
            raise ConfigError("eval.knn_k: empty; allowed: positive integers, e.g. 1,20")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> KnnEvaluator:
        return cls(common.positive_ints("eval.knn_k", config.eval.knn_k))

    def run(self, features: common.Features) -> list[common.Result]:
        train, test = features.splits["train"], features.splits["test"]
        results = []
        for key in features.label_keys:
            accs = knn_accuracy(train["features"], train[key], test["features"], test[key],
                                ks=self.ks, num_classes=features.num_classes(key))
            results += [common.Result(features.task(key), f"top1_k{k}", acc,
                                      extra=dict(features.info))
                        for k, acc in accs.items()]
        return results


PROTOCOL = KnnEvaluator

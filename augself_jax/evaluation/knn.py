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


@functools.partial(jax.jit, static_argnames=("k",))
def _nearest(memory, queries, *, k):
    # A bare top_k: XLA's CPU backend runs it as its TopK kernel. When its outputs were
    # sliced at several k in the same program it sorted every similarity row instead, about
    # 60 times slower (23 of the quick start's 88 evaluation seconds).
    return jax.lax.top_k(l2_normalize(queries) @ memory.T, k)  # memory is already unit-norm


def nearest_neighbours(train_x: np.ndarray, test_x: np.ndarray, k: int, *,
                       chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, train indices), each [n_test, k]: every query's k nearest
    training examples, nearest first (a tie keeps the lower index)."""
    k = min(int(k), len(train_x))
    memory = l2_normalize(jnp.asarray(train_x, jnp.float32))
    test_x = np.asarray(test_x, np.float32)
    sims, indices = [], []
    for start in range(0, len(test_x), chunk):
        q = test_x[start:start + chunk]
        pad = chunk - len(q) if len(test_x) > chunk else 0  # fixed shape after the first chunk
        qp = np.concatenate([q, np.zeros((pad, q.shape[1]), np.float32)])
        s, i = _nearest(memory, jnp.asarray(qp), k=k)
        sims.append(np.asarray(s)[:len(q)])
        indices.append(np.asarray(i)[:len(q)])
    return np.concatenate(sims), np.concatenate(indices)


def vote(sims: np.ndarray, neighbour_labels: np.ndarray, k: int, num_classes: int
         ) -> np.ndarray:
    """Each query's class among its first k neighbours, each voting exp(sim / T)."""
    weights = np.exp(sims[:, :k].astype(np.float32) / np.float32(TEMPERATURE))
    votes = np.zeros((len(sims), num_classes), np.float32)
    np.add.at(votes, (np.arange(len(sims))[:, None], neighbour_labels[:, :k]), weights)
    return votes.argmax(axis=1)


def _accuracies(sims: np.ndarray, indices: np.ndarray, train_y: np.ndarray,
                test_y: np.ndarray, ks: Sequence[int], num_classes: int) -> dict[int, float]:
    neighbour_labels = np.asarray(train_y)[indices]
    return {k: float(100.0 * np.mean(vote(sims, neighbour_labels, min(k, indices.shape[1]),
                                          num_classes) == np.asarray(test_y)))
            for k in ks}


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, ks: Sequence[int] = (1, 20), num_classes: int | None = None,
                 chunk: int = 1024) -> dict[int, float]:
    """{k: top-1 accuracy in percent} of each query's k cosine-nearest training examples."""
    ks = tuple(int(k) for k in ks)
    num_classes = int(num_classes or max(train_y.max(), test_y.max()) + 1)
    sims, indices = nearest_neighbours(train_x, test_x, max(ks), chunk=chunk)
    return _accuracies(sims, indices, train_y, test_y, ks, num_classes)


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
        # The neighbours do not depend on the label: found once, counted for each task.
        sims, indices = nearest_neighbours(train["features"], test["features"], max(self.ks))
        results = []
        for key in features.label_keys:
            accs = _accuracies(sims, indices, train[key], test[key], self.ks,
                               features.num_classes(key))
            results += [common.Result(features.task(key), f"top1_k{k}", acc,
                                      extra=dict(features.info))
                        for k, acc in accs.items()]
        return results


PROTOCOL = KnnEvaluator

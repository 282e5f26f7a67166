"""k-nearest-neighbour accuracy on frozen features, cosine similarity.

k = 1 is the reference's monitor. For k > 1 the neighbours vote with weight exp(sim / T),
T = 0.07, as InstDisc / DINO's kNN evaluation (plain majority votes tie often at k = 20).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

TEMPERATURE = 0.07


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def _predict(memory, memory_labels, queries, *, ks, num_classes):
    sims = _unit(queries) @ memory.T  # memory is already unit-norm
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
    memory = _unit(jnp.asarray(train_x, jnp.float32))
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

"""Retrieval (AugSelf paper, its nearest-neighbour figures; CASSLE's query dumps): every test
image queries the train split by cosine similarity of the frozen features.

Numbers, per label of the dataset (on the built-in data: shape, hue, position, size, so a
user sees whether neighbours share the query's colour and place, not only its class):
precision@k (the share of the k nearest train images with the query's label) and mean
average precision over the whole ranking (queries whose label no train image has are left
out of the mean). Ties in similarity are broken by train index.

The figure: 8 test queries drawn by seed, each with its 8 nearest train images, written to
eval/retrieval_<dataset>.png and to TensorBoard. The images are kept as 32 x 32 thumbnails
beside the features (`image_statistics`), so the figure needs no second read of the data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common

THUMBNAIL = 32  # side of the kept images (pixels)
GRID_QUERIES = 8
GRID_NEIGHBOURS = 8
_CHUNK = 512  # queries ranked at once (memory: chunk x train size)


def thumbnails(images: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """uint8 [N, side, side, 3]: block means when the size divides, else PIL's resize."""
    n, h, w, c = images.shape
    if (h, w) == (side, side):
        return images.copy()
    if h % side == 0 and w % side == 0:
        blocks = images.reshape(n, side, h // side, side, w // side, c).astype(np.float32)
        return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
    import PIL.Image

    return np.stack([np.asarray(PIL.Image.fromarray(im).resize((side, side),
                                                               PIL.Image.BICUBIC))
                     for im in images])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rankings(train_x: np.ndarray, test_x: np.ndarray, chunk: int = _CHUNK):
    """Yields (start, [m, n_train] train indices by decreasing cosine similarity) for
    consecutive chunks of test queries."""
    memory = _unit(train_x)
    queries = _unit(test_x)
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ memory.T
        yield start, np.argsort(-sims, axis=1, kind="stable")


def retrieval_metrics(train_x: np.ndarray, test_x: np.ndarray,
                      labels: dict[str, tuple[np.ndarray, np.ndarray]],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """{label key: {'p@k': %, ..., 'map': %}}; `labels`: key -> (train labels, test labels)."""
    ks = tuple(int(k) for k in ks)
    sums = {key: {**{k: 0.0 for k in ks}, "ap": 0.0, "n_ap": 0} for key in labels}
    ranks = np.arange(1, len(train_x) + 1, dtype=np.float64)
    chunk = max(16, min(_CHUNK, 20_000_000 // max(len(train_x), 1)))  # ~0.2 GB of ranks
    for start, order in rankings(train_x, test_x, chunk):
        for key, (train_y, test_y) in labels.items():
            rel = train_y[order] == test_y[start:start + len(order), None]
            s = sums[key]
            for k in ks:
                s[k] += float(rel[:, :k].mean(axis=1).sum())
            hits = rel.sum(axis=1)
            precision_at_hits = np.cumsum(rel, axis=1) / ranks * rel
            valid = hits > 0
            s["ap"] += float((precision_at_hits.sum(axis=1)[valid] / hits[valid]).sum())
            s["n_ap"] += int(valid.sum())
    n = len(test_x)
    return {key: {**{f"p@{k}": 100.0 * s[k] / n for k in ks},
                  "map": 100.0 * s["ap"] / max(s["n_ap"], 1)} for key, s in sums.items()}


def grid_png(features: common.Features, queries: np.ndarray, neighbours: np.ndarray,
             sims: np.ndarray, title: str) -> bytes:
    """Rows: a query (left, blue frame) and its nearest train images, each titled with its
    cosine similarity and the labels it shares with the query (green frame: same first
    label, red: not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = features.splits["train"], features.splits["test"]
    keys, first = features.label_keys, features.label_keys[0]
    rows, cols = len(queries), neighbours.shape[1] + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.6))
    axes = np.asarray(axes).reshape(rows, cols)
    for r, q in enumerate(queries):
        ax = axes[r, 0]
        ax.imshow(test["thumbnail"][q], interpolation="nearest")
        ax.set_title("query\n" + ", ".join(f"{k} {int(test[k][q])}" for k in keys),
                     fontsize=5.5)
        _frame(ax, "tab:blue")
        for c, (j, sim) in enumerate(zip(neighbours[r], sims[r], strict=True), 1):
            ax = axes[r, c]
            ax.imshow(train["thumbnail"][j], interpolation="nearest")
            same = [k for k in keys if train[k][j] == test[k][q]]
            shared = ("same: " + ", ".join(same)) if same else "shares nothing"
            if keys == ("label",):
                shared = "same label" if same else "other label"
            ax.set_title(f"#{c}  cos {sim:.2f}\n{shared}", fontsize=5.5)
            _frame(ax, "tab:green" if first in same else "tab:red")
    fig.suptitle(f"{title}\nleft: test query (blue); right: its {cols - 1} nearest train "
                 f"images by cosine similarity, frame green if same {first}, red if not",
                 fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _frame(ax, color: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(color)
        spine.set_linewidth(2.5)


class RetrievalEvaluator(common.Evaluator):
    """`retrieval`: precision@k (eval.retrieval.ks) and mAP per label task, and the grid."""

    name = "retrieval"

    def __init__(self, context: common.Context | None = None, ks: Sequence[int] = (1, 5, 10),
                 grid_seed: int = 0):
        self.context = context or common.Context()
        self.ks, self.grid_seed = tuple(ks), int(grid_seed)

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        if not common.positive_ints("eval.retrieval.ks", config.eval.retrieval.ks):
            raise ConfigError("eval.retrieval.ks: empty; allowed: positive integers, e.g. "
                              "1,5,10")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> RetrievalEvaluator:
        r = config.eval.retrieval
        return cls(context, common.positive_ints("eval.retrieval.ks", r.ks), r.grid_seed)

    def image_statistics(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"thumbnail": thumbnails(images)}

    def run(self, features: common.Features) -> list[common.Result]:
        if not features.label_keys:  # nothing to count (celeba: landmarks only)
            return []
        train, test = features.splits["train"], features.splits["test"]
        labels = {k: (train[k], test[k]) for k in features.label_keys}
        metrics = retrieval_metrics(train["features"], test["features"], labels, self.ks)
        extra = {"n_train": len(train["features"]), "n_test": len(test["features"])}
        results = [common.Result(features.task(key), metric, value, extra=extra)
                   for key, values in metrics.items() for metric, value in values.items()]
        if "thumbnail" in test and jax.process_index() == 0:
            self._grid(features)
        return results

    def _grid(self, features: common.Features) -> None:
        train, test = features.splits["train"], features.splits["test"]
        rng = np.random.default_rng(self.grid_seed)
        queries = np.sort(rng.choice(len(test["features"]),
                                     min(GRID_QUERIES, len(test["features"])), replace=False))
        memory, q = _unit(train["features"]), _unit(test["features"][queries])
        sims = q @ memory.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :GRID_NEIGHBOURS]
        ctx = self.context
        png = grid_png(features, queries, order, np.take_along_axis(sims, order, 1),
                       f"retrieval on {features.name}, step {ctx.step}")
        path = common.publish_png(ctx, f"retrieval_{features.name}.png", png)
        if path:
            ctx.log(f"{features.name}: retrieval grid {path} (test queries "
                    f"{', '.join(str(int(i)) for i in queries)})")


PROTOCOL = RetrievalEvaluator

"""N-way K-shot episodes on frozen features (docs/EVALUATION.md section 3).

Per episode: a logistic regression with C = 1 (summed cross-entropy + ||theta||^2 / 2,
the bias penalised as liblinear in the reference does) on the support set's raw features,
accuracy on the queries. All episodes of a chunk are fitted at once (vmap over L-BFGS).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation.linear import init_params, lbfgs_minimize


@dataclasses.dataclass
class Episodes:
    support: np.ndarray  # [E, N*K] example indices, class-major
    query: np.ndarray  # [E, N*Q]
    classes: np.ndarray  # [E, N] dataset labels; episode label i is classes[:, i]
    n_way: int
    k_shot: int
    n_query: int


def sample_episodes(labels: np.ndarray, *, n_way: int, k_shot: int, n_query: int,
                    num_episodes: int, seed: int) -> Episodes:
    """Seeded episodes as the reference sampler: classes with <= K images are dropped; a class
    with fewer than K + Q images gives K distinct supports and queries drawn (with
    replacement) from its other images, never from the support."""
    labels = np.asarray(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    by_class = {c: idx for c, idx in by_class.items() if len(idx) > k_shot}
    usable = np.array(sorted(by_class))
    if len(usable) < n_way:
        raise ValueError(f"few-shot: {len(usable)} classes have more than {k_shot} images; "
                         f"a {n_way}-way episode needs {n_way}")
    rng = np.random.default_rng(seed)
    support = np.empty((num_episodes, n_way, k_shot), np.int64)
    query = np.empty((num_episodes, n_way, n_query), np.int64)
    classes = np.empty((num_episodes, n_way), usable.dtype)
    for e in range(num_episodes):
        classes[e] = rng.choice(usable, n_way, replace=False)
        for i, c in enumerate(classes[e]):
            idx = by_class[c]
            if len(idx) >= k_shot + n_query:
                pick = rng.choice(idx, k_shot + n_query, replace=False)
                support[e, i], query[e, i] = pick[:k_shot], pick[k_shot:]
            else:
                perm = rng.permutation(idx)
                support[e, i] = perm[:k_shot]
                query[e, i] = rng.choice(perm[k_shot:], n_query, replace=True)
    return Episodes(support.reshape(num_episodes, -1), query.reshape(num_episodes, -1),
                    classes, n_way, k_shot, n_query)


@functools.partial(jax.jit, static_argnames=("n_way", "k_shot", "n_query", "max_iter"))
def _episode_accuracies(xs, xq, l2, *, n_way, k_shot, n_query, max_iter):
    ys = jnp.repeat(jnp.arange(n_way), k_shot)
    yq = jnp.repeat(jnp.arange(n_way), n_query)
    weights = jnp.ones(n_way * k_shot, jnp.float32)

    def one(xs_e, xq_e):
        params, _, _ = lbfgs_minimize(init_params(xs_e.shape[1], n_way), xs_e, ys, weights, l2,
                                       max_iter=max_iter, tol=1e-6, penalize_bias=True)
        pred = jnp.argmax(xq_e @ params["w"] + params["b"], axis=-1)
        return jnp.mean(pred == yq)

    return jax.vmap(one)(xs, xq)


@dataclasses.dataclass
class FewShotResult:
    mean: float  # percent
    ci95: float  # 1.96 * std / sqrt(episodes), percent
    accuracies: np.ndarray  # per episode, in [0, 1]


def fewshot_eval(features: np.ndarray, labels: np.ndarray, *, n_way: int = 5, k_shot: int = 1,
                 n_query: int = 16, num_episodes: int = 2000, seed: int = 0, c: float = 1.0,
                 chunk: int = 250, max_iter: int = 1000,
                 on_chunk: Callable[[int], None] | None = None) -> FewShotResult:
    """Mean episode accuracy and its 95% interval. `on_chunk(episodes)` after each chunk of
    episodes is fitted (progress lines)."""
    ep = sample_episodes(labels, n_way=n_way, k_shot=k_shot, n_query=n_query,
                         num_episodes=num_episodes, seed=seed)
    features = np.asarray(features, np.float32)
    accs = []
    for start in range(0, num_episodes, chunk):
        s, q = ep.support[start:start + chunk], ep.query[start:start + chunk]
        pad = chunk - len(s)  # a fixed chunk shape: one compile for the whole run
        s = np.concatenate([s, np.repeat(s[:1], pad, 0)])
        q = np.concatenate([q, np.repeat(q[:1], pad, 0)])
        acc = _episode_accuracies(jnp.asarray(features[s]), jnp.asarray(features[q]),
                                  jnp.float32(1.0 / (2.0 * c)), n_way=n_way, k_shot=k_shot,
                                  n_query=n_query, max_iter=max_iter)
        accs.append(np.asarray(acc)[:chunk - pad])
        if on_chunk is not None:
            on_chunk(len(accs[-1]))
    accs = np.concatenate(accs)
    return FewShotResult(float(100 * accs.mean()),
                         float(100 * 1.96 * accs.std() / np.sqrt(len(accs))), accs)


class FewShotEvaluator(common.Evaluator):
    """N-way K-shot episodes from each few-shot dataset's pool, for every K of
    eval.fewshot.shots and every label task (ways capped at the task's class count)."""

    name = "fewshot"
    on = "fewshot"

    def __init__(self, *, ways: int = 5, shots: tuple[int, ...] = (1, 5), queries: int = 16,
                 episodes: int = 2000, c: float = 1.0, seed: int = 0,
                 log: Callable[[str], None] | None = None):
        self.ways, self.shots, self.queries = ways, tuple(shots), queries
        self.episodes, self.c, self.seed, self.log = episodes, c, seed, log

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        from augself_jax.data import eval_datasets

        for name in common.split_list(config.eval.fewshot_datasets):
            eval_datasets.get_fewshot_dataset(name)
        f = config.eval.fewshot
        if not common.positive_ints("eval.fewshot.shots", f.shots):
            raise ConfigError("eval.fewshot.shots: empty; allowed: positive integers, e.g. 1,5")
        if f.ways < 2 or f.queries < 1 or f.episodes < 1:
            raise ConfigError("eval.fewshot: ways >= 2, queries >= 1 and episodes >= 1 needed")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> FewShotEvaluator:
        f = config.eval.fewshot
        return cls(ways=int(f.ways), shots=tuple(common.positive_ints("eval.fewshot.shots",
                                                                      f.shots)),
                   queries=int(f.queries), episodes=int(f.episodes), c=float(f.c),
                   seed=int(config.seed), log=context.log)

    def run(self, features: common.Features) -> list[common.Result]:
        pool = features.splits["pool"]
        results = []
        progress = common.Progress(f"fewshot {features.name}",
                                   len(features.label_keys) * len(self.shots) * self.episodes,
                                   self.log, "episodes")
        for key in features.label_keys:
            labels = pool[key]
            ways = min(self.ways, len(np.unique(labels)))
            for k in self.shots:
                label = f"{features.task(key)} {ways}-way {k}-shot"
                res = fewshot_eval(pool["features"], labels, n_way=ways, k_shot=k,
                                   n_query=self.queries, num_episodes=self.episodes,
                                   seed=self.seed, c=self.c,
                                   on_chunk=lambda n, label=label: progress.add(n, label))
                results.append(common.Result(
                    features.task(key), f"{ways}way{k}shot", res.mean,
                    extra={"ci95": round(res.ci95, 4), "c": self.c, "episodes": self.episodes,
                           "queries": self.queries}))
        return results


PROTOCOL = FewShotEvaluator

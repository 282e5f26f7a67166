"""The linear probe of docs/EVALUATION.md section 2: multinomial logistic regression by L-BFGS.

Objective (summed, as the reference): sum_i CE(x_i W + b, y_i) + l2 * (||W||^2 + ||b||^2).
scikit-learn's `LogisticRegression(C=C)` minimises the same function scaled by 1/n with
l2 = 1 / (2 C) (and an unpenalised intercept: append a constant column to compare).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import optax.tree_utils as otu

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common

# The reference sweep: torch.logspace(-6, 5, steps=45), fitted in this order.
L2_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 5, 45))
METRICS = ("top1", "class_avg")

Params = dict[str, jax.Array]


def init_params(num_features: int, num_classes: int) -> Params:
    return {"w": jnp.zeros((num_features, num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-row cross-entropy, accurate when the prediction is confident.

    logsumexp(l) - l_y cancels catastrophically in float32 when CE is ~1e-6 (the
    near-separable end of the sweep); log1p of the other classes' odds does not.
    """
    d = logits - jnp.take_along_axis(logits, y[:, None], axis=1)  # l_j - l_y; 0 at j = y
    is_y = jax.nn.one_hot(y, logits.shape[1], dtype=bool)
    d = jnp.where(is_y, -jnp.inf, d)
    m = jnp.maximum(jnp.max(d, axis=1), 0.0)
    odds = jnp.sum(jnp.exp(d - m[:, None]), axis=1)
    return m + jnp.log1p(jnp.expm1(-m) + odds)


def logistic_objective(params: Params, x: jax.Array, y: jax.Array, weights: jax.Array,
                       l2: jax.Array | float, penalize_bias: bool = True) -> jax.Array:
    """Summed (weighted) cross-entropy plus l2 * squared norm; weights 0 mask padded rows."""
    logits = x @ params["w"] + params["b"]
    ce = cross_entropy(logits, y)
    penalty = jnp.sum(params["w"] ** 2)
    if penalize_bias:
        penalty = penalty + jnp.sum(params["b"] ** 2)
    return jnp.sum(weights * ce) + l2 * penalty


def lbfgs_minimize(params: Params, x: jax.Array, y: jax.Array, weights: jax.Array,
                    l2: jax.Array, *, max_iter: int | jax.Array, tol: float | jax.Array,
                    penalize_bias: bool,
                    memory_size: int = 10) -> tuple[Params, jax.Array, jax.Array]:
    """L-BFGS (optax, zoom line search = strong Wolfe) run to convergence.

    Stops when the largest gradient entry of the MEAN objective (sum / n, the scale
    scikit-learn's `tol` uses) is below `tol`, when a step no longer decreases the
    objective (float32 precision reached), or after `max_iter` iterations.
    Pure and traceable: vmap it for many small problems (few-shot episodes).
    """
    fun = lambda p: logistic_objective(p, x, y, weights, l2, penalize_bias)
    opt = optax.lbfgs(memory_size=memory_size,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))
    value_and_grad = optax.value_and_grad_from_state(fun)
    n = jnp.maximum(jnp.sum(weights), 1.0)

    def cond(carry):
        _, state, prev_value = carry
        count = otu.tree_get(state, "count")
        grad = otu.tree_get(state, "grad")
        value = otu.tree_get(state, "value")
        gmax = otu.tree_max(jax.tree.map(jnp.abs, grad)) / n
        stalled = (count > 1) & (value >= prev_value)
        return (count == 0) | ((count < max_iter) & (gmax > tol) & ~stalled)

    def body(carry):
        params, state, _ = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state, value

    state = opt.init(params)
    params, state, _ = jax.lax.while_loop(cond, body, (params, state, jnp.inf))
    return params, otu.tree_get(state, "count"), fun(params)


@functools.partial(jax.jit, static_argnames=("penalize_bias",))
def _fit_jit_traced(params, x, y, weights, l2, max_iter, tol, *, penalize_bias):
    return lbfgs_minimize(params, x, y, weights, l2, max_iter=max_iter, tol=tol,
                           penalize_bias=penalize_bias)


def _fit_jit(params, x, y, weights, l2, *, max_iter: int, tol: float, penalize_bias: bool):
    """One compiled L-BFGS fit per (shape, sharding): w, max_iter and tol are traced, so a
    short warm-up compiles what the sweep runs and no fit of the sweep compiles again."""
    return _fit_jit_traced(params, x, y, weights, l2, jnp.int32(max_iter), jnp.float32(tol),
                           penalize_bias=penalize_bias)


def _replicated_like(params: Params, x: jax.Array) -> Params:
    """`params` placed as a fit returns them (replicated over x's mesh; committed to x's
    device without one): a warm start from the previous fit and a cold start from
    `init_params` then hit the same compiled program (an uncommitted start was a cache
    miss of its own: one more compile per sweep)."""
    sharding = x.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return jax.device_put(params, sharding)


@dataclasses.dataclass
class FitResult:
    params: Params
    iterations: int
    objective: float


def fit_logistic(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray, num_classes: int,
                 l2: float, *, init: Params | None = None, weights: jax.Array | None = None,
                 max_iter: int = 5000, tol: float = 1e-6,
                 penalize_bias: bool = True) -> FitResult:
    """One L-BFGS fit of the summed objective; `init` warm-starts it."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    if weights is None:
        weights = jnp.ones(x.shape[:1], jnp.float32)
    params = init_params(x.shape[1], num_classes) if init is None else init
    params, its, obj = _fit_jit(params, x, y, weights, jnp.float32(l2), max_iter=max_iter,
                                tol=tol, penalize_bias=penalize_bias)
    return FitResult(params, int(its), float(obj))


def predict(params: Params, x: jax.Array | np.ndarray) -> np.ndarray:
    return np.asarray(_predict_jit(params, jnp.asarray(x, jnp.float32)))


@jax.jit
def _predict_jit(params, x):
    return jnp.argmax(x @ params["w"] + params["b"], axis=-1)


def accuracy(pred: np.ndarray, y: np.ndarray, metric: str = "top1") -> float:
    """Top-1, or the mean over the classes present in `y` of per-class accuracy (percent)."""
    pred, y = np.asarray(pred), np.asarray(y)
    if metric == "top1":
        return float(100.0 * np.mean(pred == y))
    if metric == "class_avg":
        return float(100.0 * np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))
    raise ValueError(f"metric: unknown '{metric}'; allowed: {', '.join(METRICS)}")


@dataclasses.dataclass
class LinearResult:
    test: float  # percent
    val: float  # best validation value, percent
    l2: float  # chosen regularisation w
    val_curve: list[tuple[float, float]]  # (w, validation value) over the sweep
    params: Params
    iterations: int  # of the refit
    sweep_iterations: int = 0  # L-BFGS iterations of every fit, the refit included


@dataclasses.dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands after one fit: `done` of `total` fits (the sweep's, then the
    refit), that fit's w, validation value (None for the refit) and iterations, the
    seconds since the sweep began and a naive estimate of those left (mean time per fit
    so far times the fits left; the first fits, from zero, take longest)."""

    done: int
    total: int
    l2: float
    value: float | None
    iterations: int
    elapsed_s: float
    eta_s: float


def progress_lines(log: Callable[[str], None], label: str,
                   lines: int = 10) -> Callable[[SweepProgress], None]:
    """A `linear_eval` progress callback that logs about `lines` lines per sweep: after the
    first fit, every total / lines fits, and after the refit."""
    def report(p: SweepProgress) -> None:
        every = max(1, math.ceil(p.total / lines))
        if p.done == 1 or p.done % every == 0 or p.done == p.total:
            what = "refit" if p.value is None else f"val {p.value:.2f}"
            log(f"linear {label}: fit {p.done}/{p.total} (w={p.l2:.2e}, {what}, "
                f"{p.iterations} iterations), {p.elapsed_s:.0f} s, ETA {p.eta_s:.0f} s")
    return report


def _pad_rows(x: np.ndarray, y: np.ndarray, multiple: int):
    """Pad to a multiple of the device count; weight 0 keeps padded rows out of the loss."""
    n = x.shape[0]
    pad = (-n) % multiple
    weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    return x, y, weights


def _place(x, y, mesh: jax.sharding.Mesh | None):
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if mesh is None:
        return jnp.asarray(x), jnp.asarray(y), jnp.ones(x.shape[0], jnp.float32)
    x, y, w = _pad_rows(x, y, mesh.shape["data"])
    # Auto axes: XLA places the all-reduce of the gradient's contraction over rows itself.
    auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                             axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
    rows = jax.sharding.NamedSharding(auto, jax.sharding.PartitionSpec("data"))
    return jax.device_put(x, rows), jax.device_put(y, rows), jax.device_put(w, rows)


def linear_eval(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray], num_classes: int, *,
                metric: str = "top1", l2_grid: Sequence[float] = L2_GRID,
                max_iter: int = 5000, tol: float = 1e-6,
                mesh: jax.sharding.Mesh | None = None,
                log: Callable[[str], None] | None = None,
                refit: tuple[np.ndarray, np.ndarray] | None = None,
                progress: Callable[[SweepProgress], None] | None = None) -> LinearResult:
    """The Kornblith et al. protocol: warm-started sweep, selection on val, refit on train+val
    (on `refit` instead when given: a few-shot dataset's k per class of train + val).

    With a mesh (axis 'data'), the feature rows are sharded over its devices. `progress`
    is called on the host after every fit (`progress_lines` logs a few of them).
    """
    accuracy(np.zeros(1), np.zeros(1), metric)  # validates the metric name before any fit
    xtr, ytr, wtr = _place(*train, mesh)
    params = _replicated_like(init_params(xtr.shape[1], num_classes), xtr)
    best = None
    curve = []
    total, start, sweep_iterations = len(l2_grid) + 1, time.perf_counter(), 0

    def report(l2: float, value: float | None, its: int) -> None:
        if progress:
            done = len(curve) + (value is None)
            elapsed = time.perf_counter() - start
            progress(SweepProgress(done, total, float(l2), value, its, elapsed,
                                   elapsed / done * (total - done)))

    for l2 in l2_grid:
        params, its, obj = _fit_jit(params, xtr, ytr, wtr, jnp.float32(l2), max_iter=max_iter,
                                    tol=tol, penalize_bias=True)
        value = accuracy(predict(params, val[0]), val[1], metric)
        curve.append((float(l2), value))
        sweep_iterations += int(its)
        report(l2, value, int(its))
        if log:
            log(f"  w={l2:.3e} val {metric}={value:.2f} ({int(its)} iterations)")
        if best is None or value > best[0]:  # strict: ties keep the smaller w, as the reference
            best = (value, float(l2), params)
    best_val, best_l2, params = best
    if refit is None:
        refit = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    xall, yall, wall = _place(*refit, mesh)
    params, its, _ = _fit_jit(params, xall, yall, wall, jnp.float32(best_l2), max_iter=max_iter,
                              tol=tol, penalize_bias=True)
    sweep_iterations += int(its)
    report(best_l2, None, int(its))
    test_value = accuracy(predict(params, test[0]), test[1], metric)
    return LinearResult(test_value, best_val, best_l2, curve, params, int(its),
                        sweep_iterations)


class LinearProbe(common.Evaluator):
    """The linear protocol on every label task of a dataset, its metric the dataset's."""

    name = "linear"

    def __init__(self, l2_grid: Sequence[float] = L2_GRID, max_iter: int = 5000,
                 tol: float = 1e-6, mesh: jax.sharding.Mesh | None = None,
                 log: Callable[[str], None] | None = None):
        self.l2_grid, self.max_iter, self.tol, self.mesh = tuple(l2_grid), max_iter, tol, mesh
        self.log = log  # progress lines of each sweep (None: silent)

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        c = config.eval.linear
        if not (0 < c.l2_min <= c.l2_max) or c.l2_num < 1:
            raise ConfigError("eval.linear: need 0 < l2_min <= l2_max and l2_num >= 1")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> LinearProbe:
        c = config.eval.linear
        grid = np.logspace(np.log10(c.l2_min), np.log10(c.l2_max), int(c.l2_num))
        return cls(tuple(float(v) for v in grid), int(c.max_iter), float(c.tol), context.mesh,
                   log=context.log)

    def run(self, features: common.Features) -> list[common.Result]:
        train, val, test = (features.splits[s] for s in ("train", "val", "test"))
        refit = features.splits.get("refit")  # few-shot datasets only
        results = []
        for key in features.label_keys:
            res = linear_eval((train["features"], train[key]), (val["features"], val[key]),
                              (test["features"], test[key]), features.num_classes(key),
                              metric=features.metric, l2_grid=self.l2_grid,
                              max_iter=self.max_iter, tol=self.tol, mesh=self.mesh,
                              refit=None if refit is None else (refit["features"], refit[key]),
                              progress=self.log and progress_lines(self.log,
                                                                   features.task(key)))
            results.append(common.Result(features.task(key), features.metric, res.test,
                                         extra={"l2": res.l2, "val_value": res.val,
                                                **features.info}))
        return results


PROTOCOL = LinearProbe

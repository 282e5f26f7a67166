"""The linear-evaluation sweep (45 warm-started fits + the refit) in JAX against scikit-learn.

  python benchmarks/bench_linear.py           # the issue size: 50000 x 2048, 100 classes
  python benchmarks/bench_linear.py --n=5000 --d=256 --classes=20   # a few minutes on 2 CPU cores

Both solve the same problem on the same synthetic features: the spec's objective (summed
cross-entropy + w * ||theta||^2, bias penalised: scikit-learn gets a constant column and
C = 1 / (2 w)), the same 45-value sweep with warm starts, selection on validation, refit on
train+val, the same gradient tolerance. Prints both times, the ratio and both accuracies.
At full size scikit-learn alone takes hours on a 2-core CPU: pass --skip_sklearn there to
time JAX alone (e.g. on one GPU).
"""

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from augself_jax.evaluation import linear  # noqa: E402
from augself_jax.evaluation.features import eval_mesh  # noqa: E402

_N = flags.DEFINE_integer("n", 50000, "Training examples (validation: n/10, test: n/5).")
_D = flags.DEFINE_integer("d", 2048, "Feature dimension.")
_CLASSES = flags.DEFINE_integer("classes", 100, "Number of classes.")
_NUM_L2 = flags.DEFINE_integer("num_l2", 45, "Values in the L2 sweep (45: the reference).")
_TOL = flags.DEFINE_float("tol", 1e-7, "Gradient tolerance of every fit (both solvers).")
_MAX_ITER = flags.DEFINE_integer("max_iter", 5000, "Iteration cap of every fit (both solvers).")
_SKIP_SKLEARN = flags.DEFINE_bool("skip_sklearn", False,
                                  "Time JAX alone (scikit-learn takes hours at full size).")


def make_features(n: int, d: int, classes: int, seed: int = 0):
    """Non-negative (post-ReLU-like) features with class structure and overlap."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)).astype(np.float32) * 0.35
    y = rng.integers(0, classes, n)
    x = np.maximum(centers[y] + rng.normal(size=(n, d)).astype(np.float32), 0.0)
    return x, y


def sklearn_sweep(tr, va, te, grid, tol, max_iter):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    ones = lambda x: np.concatenate([x, np.ones((len(x), 1), x.dtype)], 1)
    clf = LogisticRegression(fit_intercept=False, warm_start=True, tol=tol, max_iter=max_iter)
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for w in grid:
            clf.set_params(C=1.0 / (2.0 * w))
            clf.fit(ones(tr[0]), tr[1])
            acc = 100 * np.mean(clf.predict(ones(va[0])) == va[1])
            if best is None or acc > best[0]:
                best = (acc, w, clf.coef_.copy())
        clf.set_params(C=1.0 / (2.0 * best[1]))
        clf.coef_ = best[2]
        clf.fit(ones(np.concatenate([tr[0], va[0]])), np.concatenate([tr[1], va[1]]))
    return 100 * np.mean(clf.predict(ones(te[0])) == te[1]), best[1]


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS

    x, y = make_features(args.n + args.n // 10 + args.n // 5, args.d, args.classes)
    n_val = args.n // 10
    tr = (x[:args.n], y[:args.n])
    va = (x[args.n:args.n + n_val], y[args.n:args.n + n_val])
    te = (x[args.n + n_val:], y[args.n + n_val:])
    grid = tuple(np.logspace(-6, 5, args.num_l2))
    print(f"{args.n} x {args.d} features, {args.classes} classes, {len(grid)} fits + refit, "
          f"devices: {jax.device_count()} x {jax.devices()[0].platform}")

    # A one-value warm-up compiles both shapes (train, train+val): compile time is not the
    # protocol's cost and is reported separately.
    t0 = time.perf_counter()
    linear.linear_eval(tr, va, te, args.classes, l2_grid=(1e5,), tol=args.tol, max_iter=5,
                       mesh=eval_mesh())
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = linear.linear_eval(tr, va, te, args.classes, l2_grid=grid, tol=args.tol,
                             max_iter=args.max_iter, mesh=eval_mesh())
    jax_s = time.perf_counter() - t0
    print(f"jax    : {jax_s:8.1f} s (+ {compile_s:.1f} s compile)  test top-1 {res.test:.2f}  "
          f"w={res.l2:.3g}")
    if args.skip_sklearn:
        return
    t0 = time.perf_counter()
    sk_acc, sk_w = sklearn_sweep(tr, va, te, grid, args.tol, args.max_iter)
    sk_s = time.perf_counter() - t0
    print(f"sklearn: {sk_s:8.1f} s                    test top-1 {sk_acc:.2f}  w={sk_w:.3g}")
    print(f"speed-up (sklearn / jax): {sk_s / jax_s:.2f}x")


if __name__ == "__main__":
    app.run(main)

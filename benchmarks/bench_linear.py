"""The linear-evaluation sweep (45 warm-started fits + the refit) in JAX against scikit-learn.

  python benchmarks/bench_linear.py           # the issue size: 50000 x 2048, 100 classes
  python benchmarks/bench_linear.py --n=5000 --d=256 --classes=20   # a few minutes on 2 CPU cores

Both solve the same problem on the same synthetic features: the spec's objective (summed
cross-entropy + w * ||theta||^2, bias penalised: scikit-learn gets a constant column and
C = 1 / (2 w)), the same 45-value sweep with warm starts, selection on validation, refit on
train+val, the same gradient tolerance. Prints both times, the ratio and both accuracies,
and each solver's L-BFGS iterations and seconds per iteration (the profile: a sweep's time
is its iterations times the cost of one objective-and-gradient evaluation, two passes over
the features). --repeats=K runs K pairs, JAX and scikit-learn interleaved (the order
alternating), and prints the median and range of the ratio: on a shared machine the load
changes between runs, and a pair sees about the same load. At full size scikit-learn alone
takes hours on a 2-core CPU: pass --skip_sklearn there to time JAX alone (e.g. on one GPU).
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
_REPEATS = flags.DEFINE_integer("repeats", 1, "Paired runs (JAX, scikit-learn interleaved).")
_PROGRESS = flags.DEFINE_bool("progress", False, "Print the JAX sweep's progress lines.")


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
    best, iterations = None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for w in grid:
            clf.set_params(C=1.0 / (2.0 * w))
            clf.fit(ones(tr[0]), tr[1])
            iterations += int(np.max(clf.n_iter_))
            acc = 100 * np.mean(clf.predict(ones(va[0])) == va[1])
            if best is None or acc > best[0]:
                best = (acc, w, clf.coef_.copy())
        clf.set_params(C=1.0 / (2.0 * best[1]))
        clf.coef_ = best[2]
        clf.fit(ones(np.concatenate([tr[0], va[0]])), np.concatenate([tr[1], va[1]]))
        iterations += int(np.max(clf.n_iter_))
    return 100 * np.mean(clf.predict(ones(te[0])) == te[1]), best[1], iterations


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
    print(f"jax compile: {time.perf_counter() - t0:.1f} s")
    progress = linear.progress_lines(print, "bench") if args.progress else None

    def run_jax() -> str:
        t0 = time.perf_counter()
        res = linear.linear_eval(tr, va, te, args.classes, l2_grid=grid, tol=args.tol,
                                 max_iter=args.max_iter, mesh=eval_mesh(), progress=progress)
        times["jax"].append(time.perf_counter() - t0)
        its = res.sweep_iterations
        return (f"jax {times['jax'][-1]:6.1f} s ({its} iterations, "
                f"{1e3 * times['jax'][-1] / its:.1f} ms each) top-1 {res.test:.2f} w={res.l2:.3g}")

    def run_sklearn() -> str:
        t0 = time.perf_counter()
        acc, w, its = sklearn_sweep(tr, va, te, grid, args.tol, args.max_iter)
        times["sklearn"].append(time.perf_counter() - t0)
        return (f"sklearn {times['sklearn'][-1]:6.1f} s ({its} iterations, "
                f"{1e3 * times['sklearn'][-1] / its:.1f} ms each) top-1 {acc:.2f} w={w:.3g}")

    times: dict[str, list[float]] = {"jax": [], "sklearn": []}
    for r in range(args.repeats):
        if args.skip_sklearn:
            print(f"run {r + 1}: {run_jax()}", flush=True)
            continue
        # Alternate which goes first: a load that rises or falls within a pair favours
        # neither.
        order = (run_jax, run_sklearn) if r % 2 == 0 else (run_sklearn, run_jax)
        lines = [fn() for fn in order]
        ratio = times["sklearn"][-1] / times["jax"][-1]
        print(f"run {r + 1}: {' | '.join(lines)} | ratio {ratio:.2f}x", flush=True)
    if args.skip_sklearn:
        return
    ratios = np.array(times["sklearn"]) / np.array(times["jax"])
    print(f"speed-up (sklearn / jax) over {len(ratios)} paired runs: median "
          f"{np.median(ratios):.2f}x, range {ratios.min():.2f}-{ratios.max():.2f}x; "
          f"jax median {np.median(times['jax']):.1f} s, sklearn median "
          f"{np.median(times['sklearn']):.1f} s")


if __name__ == "__main__":
    app.run(main)

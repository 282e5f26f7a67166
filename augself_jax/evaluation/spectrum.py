"""The eigenvalue spectrum of the representation (CASSLE's analysis): the eigenvalues of the
test features' covariance, sorted, and the exponent alpha of the power law
lambda_k ~ k^-alpha fitted to them over ranks rank_min..rank_max (eval.spectrum).

The fit is least squares of log lambda_k on log k, each rank weighted by 1/k so that every
decade of ranks counts about equally (the fit of Stringer et al. 2019, also used by alpha-ReQ,
Agrawal et al. 2022). A small alpha means a flat spectrum (many directions used), a large
one a few dominant directions. Also reported: the effective rank, exp of the entropy of
the normalised eigenvalues (Roy & Vetterli 2007; RankMe, Garrido et al. 2023).
"""

from __future__ import annotations

import io

import jax
import ml_collections
import numpy as np

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common


def eigenvalues(features: np.ndarray) -> np.ndarray:
    """The covariance's eigenvalues [F], largest first, negatives from round-off set to 0."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    cov = x.T @ x / max(len(x) - 1, 1)
    return np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)


def nonzero_count(evals: np.ndarray) -> int:
    """Eigenvalues above round-off (1e-10 of the largest)."""
    return int(np.sum(evals > 1e-10 * max(float(evals[0]), 1e-300)))


def fit_range(evals: np.ndarray, rank_min: int, rank_max: int) -> tuple[int, int]:
    """The fitted ranks (1-based, inclusive): rank_max 0 means half the nonzero
    eigenvalues; never past the last nonzero one."""
    last = nonzero_count(evals)
    return rank_min, min(rank_max or last // 2, last)


def power_law(evals: np.ndarray, rank_min: int, rank_max: int) -> tuple[float, float]:
    """(alpha, log-intercept) of lambda_k = exp(b) k^-alpha over ranks rank_min..rank_max,
    least squares in log-log with weights 1/k."""
    k = np.arange(rank_min, rank_max + 1, dtype=np.float64)
    y = np.log(evals[rank_min - 1:rank_max])
    a = np.stack([-np.log(k), np.ones_like(k)], 1)
    w = 1.0 / k
    alpha, b = np.linalg.solve(a.T @ (a * w[:, None]), (a * w[:, None]).T @ y)
    return float(alpha), float(b)


def effective_rank(evals: np.ndarray) -> float:
    p = evals / evals.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def plot_png(evals: np.ndarray, ranks: tuple[int, int], alpha: float, b: float,
             title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = nonzero_count(evals)
    k = np.arange(1, last + 1)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.loglog(k, evals[:last], ".-", ms=3, lw=0.8, label="eigenvalues of the covariance")
    fk = np.arange(ranks[0], ranks[1] + 1)
    ax.loglog(fk, np.exp(b) * fk ** -alpha, "r--", lw=1.5,
              label=f"power law over ranks {ranks[0]}-{ranks[1]}: alpha = {alpha:.2f}")
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue (variance along the k-th PC)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


class SpectrumEvaluator(common.Evaluator):
    """`spectrum`: alpha and the effective rank of the test features, and the plot."""

    name = "spectrum"

    def __init__(self, context: common.Context | None = None, rank_min: int = 2,
                 rank_max: int = 0):
        self.context = context or common.Context()
        self.rank_min, self.rank_max = int(rank_min), int(rank_max)

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        s = config.eval.spectrum
        if int(s.rank_min) < 1 or (int(s.rank_max) and int(s.rank_max) <= int(s.rank_min)):
            raise ConfigError(f"eval.spectrum: need 1 <= rank_min < rank_max, or rank_max 0 "
                              f"(half the nonzero eigenvalues); got rank_min={s.rank_min}, "
                              f"rank_max={s.rank_max}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> SpectrumEvaluator:
        s = config.eval.spectrum
        return cls(context, s.rank_min, s.rank_max)

    def run(self, features: common.Features) -> list[common.Result]:
        ctx = self.context
        evals = eigenvalues(features.splits["test"]["features"])
        ranks = fit_range(evals, self.rank_min, self.rank_max)
        extra = {"n_test": len(features.splits["test"]["features"]), "dim": len(evals),
                 "nonzero_eigenvalues": nonzero_count(evals)}
        results = [common.Result(features.name, "effective_rank", effective_rank(evals),
                                 unit="", extra=extra)]
        if ranks[1] - ranks[0] < 1:
            ctx.log(f"{features.name}: {extra['nonzero_eigenvalues']} nonzero eigenvalues, "
                    f"too few to fit ranks {ranks[0]}-{ranks[1]}; no alpha")
            return results
        alpha, b = power_law(evals, *ranks)
        results.append(common.Result(features.name, "alpha", alpha, unit="",
                                     extra={**extra, "rank_min": ranks[0],
                                            "rank_max": ranks[1]}))
        if jax.process_index() == 0:
            png = plot_png(evals, ranks, alpha, b, f"spectrum of {features.name} test "
                           f"features, step {ctx.step}")
            path = common.publish_png(ctx, f"spectrum_{features.name}.png", png)
            if path:
                ctx.log(f"{features.name}: spectrum plot {path}")
        return results


PROTOCOL = SpectrumEvaluator

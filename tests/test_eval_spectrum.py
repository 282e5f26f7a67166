"""The `spectrum` protocol on synthetic features with a known spectrum: alpha of a power law
and the effective rank, the fitted range, the plot, and its config fields."""

import numpy as np
import PIL.Image
import pytest
from test_eval_protocols import _config

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.spectrum import SpectrumEvaluator, eigenvalues, fit_range


def _exact(spectrum, n=2000, seed=0):
    """Features whose sample covariance has exactly `spectrum` as eigenvalues: centred,
    orthogonalised Gaussian columns (Z^T Z = (n - 1) I), scaled, then rotated."""
    rng = np.random.default_rng(seed)
    dim = len(spectrum)
    z = rng.normal(size=(n, dim))
    q, _ = np.linalg.qr(z - z.mean(0))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (q * np.sqrt(n - 1) * np.sqrt(spectrum)) @ rotation.T + 3.0


def _run(x, rank_min=2, rank_max=0, **context):
    splits = {"test": {"features": x}}
    ev = SpectrumEvaluator(common.Context(**context), rank_min, rank_max)
    return {r.metric: r for r in ev.run(common.Features("shapes", ("shape",), splits))}


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_of_an_exact_power_law(alpha, tmp_path):
    spectrum = 5.0 * np.arange(1, 65, dtype=float) ** -alpha
    x = _exact(spectrum)
    np.testing.assert_allclose(eigenvalues(x), spectrum, rtol=1e-8)
    results = _run(x, eval_dir=str(tmp_path), step=3)
    assert results["alpha"].value == pytest.approx(alpha, abs=1e-6)
    assert results["alpha"].extra["rank_min"] == 2 and results["alpha"].extra["rank_max"] == 32
    p = spectrum / spectrum.sum()
    assert results["effective_rank"].value == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    image = PIL.Image.open(tmp_path / "spectrum_shapes.png")
    assert image.size[0] > 300 and image.size[1] > 200


def test_alpha_is_fitted_over_the_stated_ranks_only():
    # A power law with alpha 1 up to rank 20, flat after it: fitted on 2-20 it is 1, on
    # 2-64 it is smaller.
    k = np.arange(1, 65, dtype=float)
    spectrum = np.where(k <= 20, k ** -1.0, 20.0 ** -1.0)
    x = _exact(spectrum, seed=1)
    assert _run(x, 2, 20)["alpha"].value == pytest.approx(1.0, abs=1e-6)
    assert _run(x, 2, 64)["alpha"].value < 0.8


def test_sampled_gaussian_features_recover_alpha_approximately():
    # Plain samples (no orthogonalisation): the sample spectrum is noisy at high ranks;
    # fitted on ranks 2-16 of 64 with 20,000 samples it is within 0.05 of the truth.
    rng = np.random.default_rng(2)
    spectrum = np.arange(1, 65, dtype=float) ** -1.5
    x = rng.normal(size=(20000, 64)) * np.sqrt(spectrum)
    assert _run(x, 2, 16)["alpha"].value == pytest.approx(1.5, abs=0.05)


def test_rank_deficient_features_fit_only_the_nonzero_eigenvalues():
    spectrum = np.concatenate([np.arange(1, 11, dtype=float) ** -1.0, np.zeros(22)])
    x = _exact(np.maximum(spectrum, 0), seed=3)
    evals = eigenvalues(x)
    assert fit_range(evals, 2, 0) == (2, 5) and fit_range(evals, 2, 40) == (2, 10)
    assert _run(x, 2, 40)["alpha"].value == pytest.approx(1.0, abs=1e-6)
    logged = []
    results = _run(x[:, :1] * np.ones((1, 3)), log=logged.append)  # rank 1: nothing to fit
    assert set(results) == {"effective_rank"} and "no alpha" in logged[0]


@pytest.mark.parametrize("fields", [{"spectrum.rank_min": 0},
                                    {"spectrum.rank_min": 5, "spectrum.rank_max": 5}])
def test_rank_fields_checked(fields):
    with pytest.raises(ConfigError, match="^eval.spectrum: need 1 <= rank_min < rank_max"):
        protocols.validate(_config(protocols="spectrum", **fields))

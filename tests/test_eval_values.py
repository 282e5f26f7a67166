"""The numbers behind the README's results tables, on inputs with a known answer: the probes
(R², hue error), the colour histogram, sensitivity of an invariant representation, and the
delta table of `evaluate.py --compare`. Expected values come from NumPy formulas and
scikit-learn, never from the product's own helpers."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics import r2_score as sk_r2

from augself_jax.evaluation import probes, reports, sensitivity
from augself_jax.evaluation.features import eval_mesh


def _splits(features, sources, sizes=(600, 200, 1000)):
    out, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        out.append({"features": features[sl], **{k: v[sl] for k, v in sources.items()}})
        start += n
    return out


def _hue_sources(rng, n, d=8, linear=True):
    hue = rng.uniform(-180, 180, n)
    target = np.stack([np.cos(np.radians(hue)), np.sin(np.radians(hue))], 1)
    if linear:  # the features are a linear map of (cos, sin) of the hue, plus other dimensions
        x = np.concatenate([target, rng.normal(size=(n, d - 2))], 1) @ rng.normal(size=(d, d))
    else:  # the features are independent of the hue
        x = rng.normal(size=(n, d))
    return x, {"hue_angle": hue}


def test_hue_probe_exact_map_is_zero_degrees_and_noise_is_ninety():
    rng = np.random.default_rng(0)
    x, src = _hue_sources(rng, 1800)
    results = {r.metric: r.value for r in probes.probe("hue", *_splits(x, src))}
    assert results["hue_err_deg"] < 0.5 and results["hue_median_err_deg"] < 0.5, results
    x, src = _hue_sources(rng, 1800, linear=False)
    results = {r.metric: r.value for r in probes.probe("hue", *_splits(x, src))}
    # Uniform angular error on [0, 180] has mean 90.
    assert 80 < results["hue_err_deg"] < 100, results


@pytest.mark.parametrize("kind,keys", [("position", ("center_x", "center_y")),
                                       ("size", ("size_value",)),
                                       ("color_hist", ("color_hist",))])
def test_r2_probes_exact_map_is_100_and_noise_is_0(kind, keys):
    rng = np.random.default_rng(1)
    n, d = 1800, 10
    x = rng.normal(size=(n, d))
    width = 24 if kind == "color_hist" else len(keys)
    y = x @ rng.normal(size=(d, width)) + rng.normal(size=width)
    src = {k: (y if kind == "color_hist" else y[:, i]) for i, k in enumerate(keys)}
    (r,) = probes.probe(kind, *_splits(x, src))
    assert r.metric == "r2" and r.value > 99.9, r
    noise = rng.normal(size=(n, d))  # features unrelated to the targets
    (r,) = probes.probe(kind, *_splits(noise, src))
    assert -3.0 < r.value < 3.0, r


def test_probe_r2_matches_scikit_learn_at_the_chosen_penalty():
    """A partly predictable target: the probe's R² is scikit-learn's for the same ridge fit."""
    rng = np.random.default_rng(2)
    n, d = 1800, 6
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, 2)) + 2.0 * rng.normal(size=(n, 2))
    tr, va, te = _splits(x, {"center_x": y[:, 0], "center_y": y[:, 1]})
    (r,) = probes.probe("position", tr, va, te)
    # Refit on train+val with the chosen penalty, on standardised features (penalty in units
    # of the mean eigenvalue of Z'Z), as scikit-learn would.
    xtv = np.concatenate([tr["features"], va["features"]])
    ytv = np.concatenate([np.stack([tr["center_x"], tr["center_y"]], 1),
                          np.stack([va["center_x"], va["center_y"]], 1)])
    mu, sd = xtv.mean(0), xtv.std(0) + 1e-8
    z = (xtv - mu) / sd
    alpha = r.penalty * np.linalg.eigvalsh(z.T @ z).mean()
    sk = SkRidge(alpha=alpha).fit(z, ytv)
    yte = np.stack([te["center_x"], te["center_y"]], 1)
    expected = 100 * sk_r2(yte, sk.predict((te["features"] - mu) / sd))
    assert 40 < expected < 90  # the case is neither trivial nor hopeless
    assert r.value == pytest.approx(expected, abs=1e-6)


def test_r2_score_matches_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(50, 3))
    pred = y + rng.normal(scale=0.7, size=(50, 3))
    assert probes.r2_score(y, pred) == pytest.approx(sk_r2(y, pred), abs=1e-12)


def test_color_histogram_against_numpy_histogram():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 7, 9, 3)).astype(np.uint8)
    got = probes.color_histogram(images, bins=8)
    for i in range(5):
        for ch in range(3):
            h, _ = np.histogram(images[i, :, :, ch], bins=8, range=(0, 256))
            np.testing.assert_allclose(got[i, 8 * ch:8 * ch + 8], h / 63.0, rtol=1e-6)


class _MeanColour(nnx.Module):
    """Features = each image's mean colour: unchanged by a flip, changed by colour ops."""

    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2)) + 3.0  # shifted off zero: cosines are well defined


def _aug():
    return ml_collections.ConfigDict({
        "color_strength": 1.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
        "hue": 0.1, "blur_sigma": (0.1, 2.0), "blur_kernel": 3, "crop_scale": (0.2, 1.0),
        "crop_ratio": (0.75, 4 / 3)})


def test_sensitivity_of_invariant_features_is_one():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (20, 8, 8, 3)).astype(np.uint8)
    out = sensitivity.sensitivity(_MeanColour(), images, _aug(), (0.5, 0.5, 0.5),
                                  (0.25, 0.25, 0.25), mesh=eval_mesh(),
                                  augmentations=("flip", "color"), batch_size=8)
    assert list(out) == ["output"]
    assert out["output"]["flip"] == pytest.approx(1.0, abs=1e-6)  # identical features
    assert out["output"]["color"] < 1.0 - 1e-4
    # The unrelated level, by hand: mean cosine of image i with some other image's features.
    f = ((images / 255.0 - 0.5) / 0.25).mean((1, 2)) + 3.0
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    cos = f @ f.T
    off = cos[~np.eye(20, dtype=bool)]
    assert off.min() - 1e-6 <= out["output"]["unrelated"] <= off.max() + 1e-6
    assert out["output"]["unrelated"] < 1.0 - 1e-4


def test_sensitivity_flip_of_a_flip_equivariant_map_is_exact():
    """A linear map of the flipped pixels: the cosine is NumPy's, image by image."""
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (16, 4, 4, 3)).astype(np.uint8)
    w = rng.normal(size=(4 * 4 * 3, 5)).astype(np.float32)

    class Linear(nnx.Module):
        def __call__(self, x):
            return x.reshape(len(x), -1) @ jnp.asarray(w)

    out = sensitivity.sensitivity(Linear(), images, _aug(), (0.0,) * 3, (1.0,) * 3,
                                  mesh=eval_mesh(), augmentations=("flip",), batch_size=8)
    x = images / 255.0
    a, b = x.reshape(16, -1) @ w, x[:, :, ::-1].reshape(16, -1) @ w
    expected = np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    assert out["output"]["flip"] == pytest.approx(expected, abs=1e-5)
    assert expected < 0.99  # the flip really moves these features


def _rows(table):
    """{(dataset, protocol, metric): (a, b, delta, arrow)} from a markdown delta table."""
    rows = {}
    for line in [line for line in table.splitlines() if line.startswith("|")][2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        delta = cells[5]
        rows[tuple(cells[:3])] = (cells[3], cells[4], float(delta.split()[0]), delta.endswith("↑"))
    return rows


def test_compare_table_deltas_and_arrows():
    rec = lambda d, p, m, v, **kw: reports.record(d, p, m, v, **kw)
    a = [rec("shapes/shape", "linear", "top1", 50.0), rec("shapes", "probe", "hue_err_deg", 30.0,
                                                          unit="deg"),
         rec("shapes/hue", "linear", "top1", 70.0), rec("shapes", "probe", "hue_median_err_deg",
                                                        20.0, unit="deg"),
         rec("shapes/size", "knn", "top1_k1", 40.0), rec("only_a", "linear", "top1", 1.0)]
    b = [rec("shapes/shape", "linear", "top1", 55.25), rec("shapes", "probe", "hue_err_deg", 35.0,
                                                           unit="deg"),
         rec("shapes/hue", "linear", "top1", 67.0), rec("shapes", "probe", "hue_median_err_deg",
                                                        18.5, unit="deg"),
         rec("shapes/size", "knn", "top1_k1", 40.0), rec("only_b", "linear", "top1", 2.0)]
    rows = _rows(reports.compare_table(a, b, "runA", "runB"))
    assert set(rows) == {("shapes/shape", "linear", "top1"), ("shapes", "probe", "hue_err_deg"),
                         ("shapes/hue", "linear", "top1"),
                         ("shapes", "probe", "hue_median_err_deg"),
                         ("shapes/size", "knn", "top1_k1")}
    # delta = B - A; the arrow marks B better: higher accuracy, lower angular error.
    assert rows[("shapes/shape", "linear", "top1")] == ("50.00", "55.25", 5.25, True)
    assert rows[("shapes", "probe", "hue_err_deg")] == ("30.00°", "35.00°", 5.0, False)
    assert rows[("shapes/hue", "linear", "top1")] == ("70.00", "67.00", -3.0, False)
    assert rows[("shapes", "probe", "hue_median_err_deg")] == ("20.00°", "18.50°", -1.5, True)
    assert rows[("shapes/size", "knn", "top1_k1")] == ("40.00", "40.00", 0.0, False)
    table = reports.compare_table(a, b, "runA", "runB")
    assert table.splitlines()[0].startswith("delta = B - A, A = runA")  # the direction, first
    assert "| runA | runB | delta |" in table
    # Rows found in one run only are listed, not dropped without a word.
    assert "only in runA" in table and "only_a linear top1" in table
    assert "only in runB" in table and "only_b linear top1" in table


def test_markdown_table_rows():
    recs = [reports.record("shapes/hue", "linear", "top1", 71.23456, l2=10.0, step=7,
                           config_hash="abc"),
            reports.record("shapes", "fewshot", "5way1shot", 40.0, ci95=1.234),
            reports.record("shapes", "probe", "hue_err_deg", 24.5, unit="deg",
                           ridge_penalty=0.01)]
    lines = reports.markdown_table(recs).splitlines()
    assert lines[0] == "Checkpoint step 7, config abc"
    assert lines[4] == "| shapes/hue | linear | top1 | 71.23 | l2=10 |"
    assert lines[5] == "| shapes | fewshot | 5way1shot | 40.00 ± 1.23 |  |"
    assert lines[6] == "| shapes | probe | hue_err_deg | 24.50° | ridge_penalty=0.01 |"


def test_eval_mesh_spans_every_device():
    assert eval_mesh().size == jax.device_count()

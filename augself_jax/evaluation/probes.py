"""The augmentation-information probe: how well a linear map of the frozen features predicts
an image's own colour histogram and, on the built-in dataset, its exact hue angle, position
and size (ridge regression, penalty chosen on validation, refit on train+val, scored on test).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from augself_jax.evaluation import common

HIST_BINS = 8
RIDGE_GRID = tuple(float(v) for v in np.logspace(-6, 2, 17))  # times the mean eigenvalue


def color_histogram(images: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel histograms of uint8 images [N, H, W, 3], each summing to 1: [N, 3 * bins]."""
    idx = (images.astype(np.int64) * bins) // 256  # bin of every pixel value
    n, h, w, c = images.shape
    flat = idx.reshape(n, h * w, c) + bins * np.arange(c)  # channel-offset bins
    counts = np.zeros((n, c * bins), np.float32)
    np.add.at(counts, (np.repeat(np.arange(n), h * w * c), flat.reshape(n, -1).ravel()), 1.0)
    return counts / (h * w)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination averaged uniformly over outputs (constant outputs skipped)."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    keep = ss_tot > 1e-12
    return float(np.mean(1.0 - ss_res[keep] / ss_tot[keep]))


class Ridge:
    """Ridge regression on standardised features, solved for a whole penalty grid at once."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        self.y_mu = y.mean(0)
        z = (x - self.mu) / self.sd
        self.evals, self.evecs = np.linalg.eigh(z.T @ z)
        self.zty = self.evecs.T @ (z.T @ (np.asarray(y, np.float64) - self.y_mu))
        self.scale = max(float(self.evals.mean()), 1e-12)

    def predict(self, x: np.ndarray, penalty: float) -> np.ndarray:
        coef = self.evecs @ (self.zty / (self.evals + penalty * self.scale)[:, None])
        return ((np.asarray(x, np.float64) - self.mu) / self.sd) @ coef + self.y_mu


def _angle_error_deg(target_deg: np.ndarray, pred_cs: np.ndarray) -> np.ndarray:
    pred = np.degrees(np.arctan2(pred_cs[:, 1], pred_cs[:, 0]))
    return np.abs((pred - target_deg + 180.0) % 360.0 - 180.0)


def _targets(kind: str, values: dict[str, np.ndarray]) -> np.ndarray:
    if kind == "color_hist":
        return values["color_hist"]
    if kind == "hue":
        a = np.radians(values["hue_angle"])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if kind == "position":
        return np.stack([values["center_x"], values["center_y"]], 1)
    if kind == "size":
        return values["size_value"][:, None]
    raise ValueError(f"probe target: unknown '{kind}'")


@dataclasses.dataclass
class ProbeResult:
    target: str
    metric: str  # r2 (percent) or hue_err_deg / hue_median_err_deg (degrees)
    value: float
    penalty: float


def probe(kind: str, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
          test: dict[str, np.ndarray]) -> list[ProbeResult]:
    """Each dict holds `features` and the target's source arrays (color_hist, hue_angle, ...)."""
    ytr, yva, yte = (_targets(kind, d) for d in (train, val, test))
    model = Ridge(train["features"], ytr)

    def score(pred, y, source):  # higher is better
        if kind == "hue":
            return -float(np.mean(_angle_error_deg(source["hue_angle"], pred)))
        return r2_score(y, pred)

    scores = [score(model.predict(val["features"], p), yva, val) for p in RIDGE_GRID]
    penalty = RIDGE_GRID[int(np.argmax(scores))]
    model = Ridge(np.concatenate([train["features"], val["features"]]),
                  np.concatenate([ytr, yva]))
    pred = model.predict(test["features"], penalty)
    if kind == "hue":
        err = _angle_error_deg(test["hue_angle"], pred)
        return [ProbeResult(kind, "hue_err_deg", float(np.mean(err)), penalty),
                ProbeResult(kind, "hue_median_err_deg", float(np.median(err)), penalty)]
    return [ProbeResult(kind, "r2", 100.0 * r2_score(yte, pred), penalty)]


# (probe kind, the key it needs beside the features): the colour histogram is computed from
# every dataset's images; the others are the built-in dataset's recorded factors.
KINDS = (("color_hist", "color_hist"), ("hue", "hue_angle"), ("position", "center_x"),
         ("size", "size_value"))


class ProbeEvaluator(common.Evaluator):
    """Every probe a dataset's keys allow, reported per dataset (not per label task)."""

    name = "probe"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> ProbeEvaluator:
        return cls()

    def image_statistics(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"color_hist": color_histogram(images)}

    def run(self, features: common.Features) -> list[common.Result]:
        train, val, test = (features.splits[s] for s in ("train", "val", "test"))
        results = []
        for kind, needs in KINDS:
            if needs not in train:
                continue
            for r in probe(kind, train, val, test):
                degrees = r.metric.endswith("deg")
                results.append(common.Result(
                    features.name, r.metric if degrees else f"{kind}_{r.metric}", r.value,
                    unit="deg" if degrees else "%",
                    extra={"ridge_penalty": r.penalty, **features.info}))
        return results


PROTOCOL = ProbeEvaluator

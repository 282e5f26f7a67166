"""The `landmarks` protocol: how well a linear map of the frozen features predicts where an
image's facial landmarks are (the CASSLE reference's landmark regression).

CelebA (TFDS `celeb_a`, eval.datasets `celeba`) stores five landmarks (eyes, nose, mouth
corners) as pixel coordinates; evaluation reads them in the frame of the centre crop the
backbone sees (0 to 1 across it; data/eval_input.py `points_in_crop`). The regressor is the
probe's ridge (evaluation/probes.py): penalty chosen on validation, refit on train + val,
scored on test by R², the coefficient of determination of each of the 10 coordinates averaged
uniformly, and by the mean distance between predicted and true landmarks (percent of the
crop's side).

Differences from the reference: it fits a linear layer by gradient descent on an L1 loss and
scores R² of all coordinates pooled into one vector (a line fitted to prediction against
truth), which counts the spread between different landmarks' positions as explained; here
each coordinate's R² is its own. 300W and the Leeds Sports Pose dataset, the reference's other
landmark sets, are not in TFDS and are left out.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from augself_jax.data import eval_datasets as eds
from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation.probes import RIDGE_GRID, Ridge, r2_score

KEY = "landmarks"  # the point feature (eval_datasets.EvalDataset.point_keys) it regresses


def landmark_error(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean Euclidean distance between true and predicted points; rows hold (x, y) pairs."""
    diff = (pred - y).reshape(len(y), -1, 2)
    return float(np.mean(np.sqrt(np.sum(diff ** 2, axis=-1))))


def regress(train: dict[str, np.ndarray], val: dict[str, np.ndarray],
            test: dict[str, np.ndarray]) -> dict[str, float]:
    """{'r2', 'error', 'penalty'} of ridge from `features` to `landmarks` [N, 2P]."""
    model = Ridge(train["features"], train[KEY])
    scores = [r2_score(val[KEY], model.predict(val["features"], p)) for p in RIDGE_GRID]
    penalty = RIDGE_GRID[int(np.argmax(scores))]
    model = Ridge(np.concatenate([train["features"], val["features"]]),
                  np.concatenate([train[KEY], val[KEY]]))
    pred = model.predict(test["features"], penalty)
    return {"r2": r2_score(test[KEY], pred), "error": landmark_error(test[KEY], pred),
            "penalty": penalty}


class LandmarksEvaluator(common.Evaluator):
    """Landmark regression on every dataset of eval.datasets that has landmarks."""

    name = "landmarks"

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        names = common.split_list(config.eval.datasets)
        with_points = [n for n in eds.LINEAR if KEY in eds.LINEAR[n].point_keys]
        if not any(n in with_points for n in names):
            raise ConfigError(f"eval.datasets: the landmarks protocol needs a dataset with "
                              f"landmarks; allowed: add {', '.join(with_points)} "
                              f"(got {config.eval.datasets})")

    def run(self, features: common.Features) -> list[common.Result]:
        if KEY not in features.splits["train"]:
            return []
        train, val, test = (features.splits[s] for s in ("train", "val", "test"))
        out = regress(train, val, test)
        extra = {"ridge_penalty": out["penalty"], **features.info}
        return [common.Result(features.name, "landmarks_r2", 100.0 * out["r2"], extra=extra),
                common.Result(features.name, "landmarks_err", 100.0 * out["error"],
                              extra=extra)]


PROTOCOL = LandmarksEvaluator

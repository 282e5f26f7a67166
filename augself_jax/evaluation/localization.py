"""Object localization (AugSelf paper, CUB-200): a linear regressor from the frozen features
to the object's box, scored by intersection over union on the test split.

The box is (x_min, y_min, x_max, y_max) as fractions of the evaluated image (after the
evaluation's resize and centre crop): CUB-200's TFDS `bbox`, or the built-in dataset's exact
shape box (data/shapes.py). The regressor is the probe's ridge (evaluation/probes.py): the
penalty is chosen on validation by mean IoU, then refit on train + val. A predicted box is
clipped to the image; one whose min exceeds its max on an axis is empty (IoU 0).
"""

from __future__ import annotations

import numpy as np

from augself_jax.data.eval_datasets import object_boxes
from augself_jax.evaluation import common
from augself_jax.evaluation.probes import RIDGE_GRID, Ridge

IOU_THRESHOLD = 0.5  # the share of test images localised at least this well


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes [N, 4] (x_min, y_min, x_max, y_max); an inverted box is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = lambda x: np.maximum(x[:, 2] - x[:, 0], 0.0)
    height = lambda x: np.maximum(x[:, 3] - x[:, 1], 0.0)
    inter_w = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0)
    inter_h = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0)
    inter = inter_w * inter_h
    union = width(a) * height(a) + width(b) * height(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def localize(train: dict[str, np.ndarray], val: dict[str, np.ndarray],
             test: dict[str, np.ndarray], boxes: tuple[np.ndarray, np.ndarray, np.ndarray]
             ) -> tuple[np.ndarray, float]:
    """(test IoU per image, chosen penalty): ridge from `features` to the boxes, the penalty
    of the best mean validation IoU, refit on train + val."""
    box_tr, box_va, _ = boxes
    model = Ridge(train["features"], box_tr)
    scores = [box_iou(np.clip(model.predict(val["features"], p), 0, 1), box_va).mean()
              for p in RIDGE_GRID]
    penalty = RIDGE_GRID[int(np.argmax(scores))]
    model = Ridge(np.concatenate([train["features"], val["features"]]),
                  np.concatenate([box_tr, box_va]))
    pred = np.clip(model.predict(test["features"], penalty), 0.0, 1.0)
    return box_iou(pred, boxes[2]), penalty


class LocalizationEvaluator(common.Evaluator):
    """`localization`: mean test IoU and the share of test images with IoU >= 0.5, on every
    dataset of eval.datasets that has boxes (others are skipped with a log line)."""

    name = "localization"

    def __init__(self, context: common.Context | None = None):
        self.log = context.log if context is not None else print

    @classmethod
    def from_config(cls, config, context: common.Context) -> LocalizationEvaluator:
        return cls(context)

    def run(self, features: common.Features) -> list[common.Result]:
        splits = [features.splits[s] for s in ("train", "val", "test")]
        boxes = [object_boxes(s) for s in splits]
        if any(b is None for b in boxes):
            self.log(f"{features.name}: no object boxes, localization skipped")
            return []
        iou, penalty = localize(*splits, tuple(boxes))
        extra = {"ridge_penalty": penalty, **features.info}
        return [common.Result(features.name, "mean_iou", 100.0 * float(iou.mean()),
                              extra=extra),
                common.Result(features.name, "iou50",
                              100.0 * float(np.mean(iou >= IOU_THRESHOLD)), extra=extra)]


PROTOCOL = LocalizationEvaluator

"""MoCo v2 + AugSelf (crop and colour heads).

Presets: `configs/moco_augself.py:stl10` (default),
`:imagenet100`, `:cifar10`, `:shapes` (the built-in dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.experiment(arg, "moco", augself=True)

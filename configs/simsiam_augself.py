"""SimSiam + AugSelf (crop and colour heads).

Presets: `configs/simsiam_augself.py:stl10` (default),
`:imagenet100`, `:cifar10`, `:shapes` (the built-in dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.experiment(arg, "simsiam", augself=True)

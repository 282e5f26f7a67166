"""SwAV + AugSelf (crop and colour heads).

Presets: `configs/swav_augself.py:stl10` (default), `:imagenet100`, `:cifar10`, `:shapes`
(the built-in dataset); `:stl10,vit_small` swaps in a ViT backbone.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.experiment(arg, "swav", augself=True)

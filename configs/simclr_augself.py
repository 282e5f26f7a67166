"""SimCLR + AugSelf (crop and colour heads): the quick-start experiment.

Presets: `configs/simclr_augself.py:stl10` (default),
`:imagenet100`, `:cifar10`, `:shapes` (the built-in dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config(arg)
    c.method.name = "simclr"
    # The reference AugSelf heads: crop and colour, 1.0 at STL-10 scale, 0.5 on ImageNet-100.
    weight = 0.5 if c.preset == "imagenet100" else 1.0
    c.augself.crop = weight
    c.augself.color = weight
    return c

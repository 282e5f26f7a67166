"""Barlow Twins + CASSLE (the CASSLE paper's pairing).

Presets: `configs/barlow_cassle.py:stl10` (default),
`:imagenet100`, `:cifar10`, `:shapes` (the built-in dataset).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.experiment(arg, "barlow", cassle=True)

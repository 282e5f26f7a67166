"""MoCo v3 + CASSLE (proj-cat conditioned projector), with the reference recipe.

Presets: `configs/mocov3_cassle.py:stl10` (default), `:imagenet100`, `:cifar10`, `:shapes`
(the built-in dataset), each with an optional backbone: `:stl10,vit_small`,
`:imagenet100,vit_base` (ViT-S/16, ViT-B/16: AdamW, T = 0.2, 3-layer projector) or a ResNet
(LARS, T = 1.0, 2-layer projector). Set the backbone here rather than with
`--config.model.backbone`, which would keep the ResNet optimiser recipe.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.experiment(arg, "mocov3", cassle=True)

"""The one place a backbone is built from `config.model`: ResNets and Vision Transformers.

Every backbone maps normalised images [B, H, W, 3] to features [B, num_features].
"""

from typing import Any

import jax.numpy as jnp
from flax import nnx

from augself_jax.models import resnet, vit

RESNETS = tuple(resnet.STAGES)
VITS = tuple(vit.SIZES)
BACKBONES = RESNETS + VITS


def is_vit(name: str) -> bool:
    return name in VITS


def build_backbone(model_config: Any, image_size: int, rngs: nnx.Rngs) -> nnx.Module:
    """`model.backbone` with its options: `stem`, `width` (ResNets) or `patch_size`,
    `vit_depth` (ViTs; 0 keeps the named size's 12 blocks), computing in `model.dtype`."""
    m = model_config
    dtype = jnp.dtype(m.dtype)
    if is_vit(m.backbone):
        depth = int(m.vit_depth) or None
        return vit.ViT(m.backbone, int(image_size), int(m.patch_size), dtype, depth=depth,
                       rngs=rngs)
    return resnet.ResNet(m.backbone, stem=m.stem, width=int(m.width), dtype=dtype, rngs=rngs)

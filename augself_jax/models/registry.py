"""The backbone registry (the idiom is `augself_jax/registries.py`) and the one place a
backbone is built from `config.model`: ResNets and Vision Transformers, the rows of their
size tables (`resnet.STAGES`, `vit.SIZES`), each name mapped to its family.

Every backbone maps normalised images [B, H, W, 3] to features [B, num_features].
"""

from typing import Any

import jax.numpy as jnp
from flax import nnx

from augself_jax.errors import ConfigError, one_of, positive
from augself_jax.models import resnet, vit
from augself_jax.registries import Registry

REGISTRY: Registry[str] = Registry("model.backbone", lambda: {
    **{name: "resnet" for name in resnet.STAGES}, **{name: "vit" for name in vit.SIZES}})
entries, names, get = REGISTRY.entries, REGISTRY.names, REGISTRY.get
DTYPES = ("float32", "bfloat16", "float16")


def is_vit(name: str) -> bool:
    return get(name) == "vit"


def validate_backbone(config: Any) -> None:
    """ConfigError naming the first bad field of `config.model` (the backbone and its
    options; the ViT's patch size against `data.image_size`)."""
    m = config.model
    get(m.backbone)  # an unknown name
    one_of("model.dtype", m.dtype, DTYPES)
    if is_vit(m.backbone):
        vit.check_patch_size(int(config.data.image_size), m.patch_size)
        if not isinstance(m.vit_depth, int) or m.vit_depth < 0:
            raise ConfigError(f"model.vit_depth: {m.vit_depth!r} must be an integer >= 0 "
                              "(0: the named size's depth)")
    else:
        one_of("model.stem", m.stem, resnet.STEMS)
        positive("model.width", m.width)


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

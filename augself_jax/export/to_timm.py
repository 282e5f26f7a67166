"""The ViT's arrays under timm's `vit_small_patch16_224` / `vit_base_patch16_224` names.

The backbone (augself_jax/models/vit.py) is MoCo v3's ViT, which timm's VisionTransformer
computes exactly (pre-norm blocks, LayerNorm eps 1e-6, exact GELU, a fused qkv laid out
[q | k | v] by head, the class token through the final norm). `pos_embed` holds the fixed
2-D sin-cos table with the class token's zero row (timm adds it to every token, the class
token included), `patch_embed.proj` the frozen random projection; the head is left out.

MoCo v3's ViT-S has 12 attention heads where timm's `vit_small_patch16_224` has 6, with the
same keys and shapes: load the file into `timm.create_model(..., num_heads=12)`, or it runs
with the wrong attention and no error.
"""

import numpy as np

from augself_jax.models.vit import sincos_position_embedding


def _linear(arrays: dict) -> dict[str, np.ndarray]:
    """Flax (in, out) kernel -> PyTorch (out, in) weight."""
    return {"weight": np.ascontiguousarray(np.asarray(arrays["kernel"], np.float32).T),
            "bias": np.asarray(arrays["bias"], np.float32)}


def _norm(arrays: dict) -> dict[str, np.ndarray]:
    return {"weight": np.asarray(arrays["scale"], np.float32),
            "bias": np.asarray(arrays["bias"], np.float32)}


def state_dict(nested: dict, grid: int) -> dict[str, np.ndarray]:
    """timm's state dict (without the head) of the ViT whose arrays `nested` holds, for
    images of `grid` x `grid` patches."""
    kernel = np.asarray(nested["patch_kernel"], np.float32)  # (p, p, 3, width)
    width = kernel.shape[-1]
    out: dict[str, np.ndarray] = {
        "cls_token": np.asarray(nested["cls_token"], np.float32).reshape(1, 1, width),
        "pos_embed": sincos_position_embedding(grid, width)[None],
        "patch_embed.proj.weight": np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))),
        "patch_embed.proj.bias": np.asarray(nested["patch_bias"], np.float32),
    }
    parts = {"norm1": _norm, "attn.qkv": _linear, "attn.proj": _linear, "norm2": _norm,
             "mlp.fc1": _linear, "mlp.fc2": _linear}
    ours = {"norm1": "norm1", "attn.qkv": "qkv", "attn.proj": "proj", "norm2": "norm2",
            "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
    for i in range(len(nested["blocks"])):
        block = nested["blocks"][str(i)]
        for name, convert in parts.items():
            for field, value in convert(block[ours[name]]).items():
                out[f"blocks.{i}.{name}.{field}"] = value
    for field, value in _norm(nested["norm"]).items():
        out[f"norm.{field}"] = value
    return out

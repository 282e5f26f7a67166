"""Vision Transformers ViT-S/16 and ViT-B/16 as MoCo v3 builds them, returning the class token.

Following the MoCo v3 reference (and CASSLE, which uses it):
- a fixed 2-D sin-cos position embedding (not learned), zero for the class token;
- the patch embedding is a frozen random projection ("stop-grad conv1"), which the MoCo v3
  paper found to stabilise training. It is held in `FrozenPatch` variables, which are not
  `nnx.Param`: the optimiser never sees them, so weight decay cannot shrink them either;
- xavier-uniform linear layers, with q, k and v initialised as three separate matrices;
- pre-norm blocks, LayerNorm eps 1e-6, exact GELU, no dropout or drop-path.

Parameters are float32; activations run in `dtype`. Softmax and LayerNorm statistics are
computed in float32 whatever the dtype.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from augself_jax.errors import ConfigError, positive

# name: (width, depth, heads). MoCo v3's ViT-S uses 12 heads (timm's uses 6).
SIZES = {"vit_small": (384, 12, 12), "vit_base": (768, 12, 12)}
MLP_RATIO = 4

_xavier = nnx.initializers.xavier_uniform()


def check_patch_size(image_size: int, patch_size: int) -> None:
    """ConfigError unless `model.patch_size` is a positive integer that divides
    `data.image_size` (the patches tile the image)."""
    positive("model.patch_size", patch_size)
    if int(image_size) % int(patch_size):
        raise ConfigError(f"model.patch_size: {patch_size} does not divide data.image_size "
                          f"{image_size}")


class FrozenPatch(nnx.Variable):
    """The patch embedding's random projection: saved and restored, never trained."""


def sincos_position_embedding(grid: int, width: int) -> np.ndarray:
    """(1 + grid*grid, width) float32: zeros for the class token, then one row per patch.

    The layout is the MoCo v3 reference's: with patches numbered row by row, the first half
    of the channels holds sin, cos of the patch's row and the second half those of its column,
    each at frequencies 1 / 10000^(i / (width / 4)), i = 0 .. width/4 - 1.
    """
    if width % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    by_row = rows.reshape(-1, 1) * omega
    by_col = cols.reshape(-1, 1) * omega
    patches = np.concatenate([np.sin(by_row), np.cos(by_row), np.sin(by_col), np.cos(by_col)], 1)
    return np.concatenate([np.zeros((1, width)), patches]).astype(np.float32)


def _linear(cin: int, cout: int, dtype: Any, rngs: nnx.Rngs, kernel_init=_xavier) -> nnx.Linear:
    return nnx.Linear(cin, cout, kernel_init=kernel_init, bias_init=nnx.initializers.zeros,
                      dtype=dtype, rngs=rngs)


def _norm(n: int, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(n, epsilon=1e-6, dtype=dtype, rngs=rngs)


def _qkv_init(key: jax.Array, shape: tuple, dtype: Any = jnp.float32) -> jax.Array:
    # The reference draws the fused (width -> 3*width) kernel as if q, k, v were separate
    # width x width matrices: uniform with bound sqrt(6 / (width + width)).
    bound = math.sqrt(6.0 / (shape[1] // 3 + shape[0]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Block(nnx.Module):
    def __init__(self, width: int, heads: int, dtype: Any, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = _norm(width, dtype, rngs)
        self.qkv = _linear(width, 3 * width, dtype, rngs, kernel_init=_qkv_init)
        self.proj = _linear(width, width, dtype, rngs)
        self.norm2 = _norm(width, dtype, rngs)
        self.fc1 = _linear(width, MLP_RATIO * width, dtype, rngs)
        self.fc2 = _linear(MLP_RATIO * width, width, dtype, rngs)

    def attention(self, x: jax.Array) -> jax.Array:
        b, n, w = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads), 3, axis=2)
        # The logits leave the product in float32 (accumulated there anyway): rounded to
        # bfloat16 first, a logit of 10 would carry an error of up to 0.03 into the softmax.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q[:, :, 0], k[:, :, 0],
                            preferred_element_type=jnp.float32) / math.sqrt(w // self.heads)
        weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v[:, :, 0]).reshape(b, n, w)
        return self.proj(out)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=False))


class ViT(nnx.Module):
    """`ViT("vit_small", image_size=96)(images) -> (batch, 384)`: the final-normed class token.

    `depth` overrides the number of blocks (tests use a shallow net); the width and heads are
    the named size's.
    """

    def __init__(self, name: str, image_size: int, patch_size: int = 16, dtype: Any = jnp.float32,
                 *, depth: int | None = None, rngs: nnx.Rngs):
        if name not in SIZES:
            raise ValueError(f"model.backbone must be one of {sorted(SIZES)}, got {name!r}")
        check_patch_size(image_size, patch_size)
        width, full_depth, heads = SIZES[name]
        self.num_features = width
        self.patch_size = patch_size
        self.dtype = dtype
        fan = 3 * patch_size * patch_size
        bound = math.sqrt(6.0 / (fan + width))
        self.patch_kernel = FrozenPatch(
            jax.random.uniform(rngs.params(), (patch_size, patch_size, 3, width), jnp.float32,
                               -bound, bound))
        self.patch_bias = FrozenPatch(jnp.zeros((width,), jnp.float32))
        self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, width)))
        self.grid = image_size // patch_size
        self.blocks = nnx.List([Block(width, heads, dtype, rngs)
                                for _ in range(full_depth if depth is None else depth)])
        self.norm = _norm(width, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        tokens = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.patch_kernel[...].astype(self.dtype), (p, p), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        tokens = tokens + self.patch_bias[...].astype(self.dtype)
        b = tokens.shape[0]
        tokens = tokens.reshape(b, -1, self.num_features)
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, self.num_features))
        x = jnp.concatenate([cls, tokens], axis=1) + jnp.asarray(
            sincos_position_embedding(self.grid, self.num_features), self.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]

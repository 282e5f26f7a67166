"""ResNet-18 / ResNet-50 (torchvision layout) in Flax NNX, returning pooled features.

Parameters are float32; activations run in `dtype`. Convolutions pad explicitly
(not 'SAME') so strided layers see the same pixels as torchvision's.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.models.variables import batch_norm

STAGES = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}
STEMS = ("imagenet", "cifar")

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu') for every conv.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin: int, cout: int, k: int, stride: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
    pad = k // 2
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        rngs=rngs,
    )


def _bn(n: int, dtype: Any, rngs: nnx.Rngs, zero: bool = False) -> nnx.BatchNorm:
    # momentum 0.9 in flax == 0.1 in torch; a zero scale starts each residual block as identity.
    return batch_norm(
        n,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        rngs=rngs,
        scale_init=nnx.initializers.zeros if zero else nnx.initializers.ones,
    )


class Downsample(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, dtype: Any, rngs: nnx.Rngs):
        self.conv = _conv(cin, cout, 1, stride, dtype, rngs)
        self.bn = _bn(cout, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dtype: Any, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, width, 3, stride, dtype, rngs)
        self.bn1 = _bn(width, dtype, rngs)
        self.conv2 = _conv(width, width, 3, 1, dtype, rngs)
        self.bn2 = _bn(width, dtype, rngs, zero=True)
        out = width * self.expansion
        self.downsample = (
            Downsample(cin, out, stride, dtype, rngs) if (stride != 1 or cin != out) else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dtype: Any, rngs: nnx.Rngs):
        out = width * self.expansion
        self.conv1 = _conv(cin, width, 1, 1, dtype, rngs)
        self.bn1 = _bn(width, dtype, rngs)
        self.conv2 = _conv(width, width, 3, stride, dtype, rngs)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = _bn(width, dtype, rngs)
        self.conv3 = _conv(width, out, 1, 1, dtype, rngs)
        self.bn3 = _bn(out, dtype, rngs, zero=True)
        self.downsample = (
            Downsample(cin, out, stride, dtype, rngs) if (stride != 1 or cin != out) else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
    """`ResNet('resnet18', stem='imagenet', width=64)`; `x [B,H,W,3] -> [B, num_features]`."""

    def __init__(
        self,
        name: str = "resnet18",
        *,
        stem: str = "imagenet",
        width: int = 64,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if name not in STAGES:
            raise ValueError(f"backbone '{name}'; allowed: {', '.join(STAGES)}")
        if stem not in STEMS:
            raise ValueError(f"stem '{stem}'; allowed: {', '.join(STEMS)}")
        kind, depths = STAGES[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.name = name
        self.stem = stem
        self.width = width
        self.dtype = dtype
        if stem == "imagenet":
            self.conv1 = nnx.Conv(
                3,
                width,
                (7, 7),
                strides=(2, 2),
                padding=((3, 3), (3, 3)),
                use_bias=False,
                kernel_init=_conv_init,
                dtype=dtype,
                rngs=rngs,
            )
        else:
            self.conv1 = _conv(3, width, 3, 1, dtype, rngs)
        self.bn1 = _bn(width, dtype, rngs)
        blocks = []
        cin = width
        for i, depth in enumerate(depths):
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, width * 2**i, stride, dtype, rngs))
                cin = width * 2**i * block.expansion
        self.blocks = nnx.List(blocks)
        self.num_features = cin

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        x = nnx.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return jnp.mean(x, axis=(1, 2))

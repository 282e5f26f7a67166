"""The one MLP builder: every projector, predictor, AugSelf head and CASSLE encoder."""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from augself_jax.models.variables import batch_norm

LAST_BN = ("none", "affine", "plain")

# torch.nn.Linear's default (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
_linear_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """torch.nn.Linear's default bias init, U(+-1/sqrt(fan_in)), as every reference's MLP
    (the AugSelf reference's `load_mlp`, CASSLE's and MoCo v3's heads are PyTorch Linears)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MLP(nnx.Module):
    """Linear layers of `widths`; hidden ones are Linear - BN - ReLU (or Linear - ReLU).

    `last_bn`: 'none', 'affine' (BN with scale and bias) or 'plain' (BN without them).
    Bias rule: a Linear followed by a BN has no bias (the BN's shift replaces it); a
    `use_bias=False` MLP has none anywhere (the official MoCo v3's `bias=False` Linears).
    Weights and biases start as torch.nn.Linear's default, U(+-1/sqrt(fan_in)).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        *,
        hidden_bn: bool = True,
        last_bn: str = "none",
        use_bias: bool = True,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if last_bn not in LAST_BN:
            raise ValueError(f"last_bn '{last_bn}'; allowed: {', '.join(LAST_BN)}")
        linears, norms = [], []
        n_in = in_features
        for i, n_out in enumerate(widths):
            last = i == len(widths) - 1
            has_bn = (last and last_bn != "none") or (not last and hidden_bn)
            linears.append(
                nnx.Linear(
                    n_in,
                    n_out,
                    use_bias=use_bias and not has_bn,
                    kernel_init=_linear_init,
                    bias_init=torch_bias_init(n_in),
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            affine = not (last and last_bn == "plain")
            norms.append(
                batch_norm(
                    n_out,
                    momentum=0.9,
                    epsilon=1e-5,
                    use_bias=affine,
                    use_scale=affine,
                    dtype=dtype,
                    rngs=rngs,
                )
                if has_bn
                else None
            )
            n_in = n_out
        self.linears = nnx.List(linears)
        self.norms = nnx.List(norms)
        self.out_features = n_in
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        n = len(self.linears)
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            x = linear(x)
            if norm is not None:
                x = norm(x)
            if i < n - 1:
                x = nnx.relu(x)
        return x

"""ResNet backbones and the MLP builder: sizes, stems, init, dtypes, bias and BN rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_methods_support import fast_build, fast_call

from augself_jax.models.mlp import MLP
from augself_jax.models.resnet import BasicBlock, Bottleneck, ResNet


def n_params(module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name,count,features", [("resnet18", 11_176_512, 512),
                                                 ("resnet50", 23_508_032, 2048)])
def test_parameter_counts_match_torchvision_without_fc(name, count, features):
    model = nnx.eval_shape(lambda: ResNet(name, rngs=nnx.Rngs(0)))  # abstract: nothing computed
    assert model.num_features == features
    assert n_params(model) == count


def test_cifar_stem_is_a_3x3_stride1_conv_without_pool():
    imagenet = nnx.eval_shape(lambda: ResNet("resnet18", stem="imagenet", rngs=nnx.Rngs(0)))
    cifar = nnx.eval_shape(lambda: ResNet("resnet18", stem="cifar", rngs=nnx.Rngs(0)))
    assert imagenet.conv1.kernel.shape == (7, 7, 3, 64)
    assert cifar.conv1.kernel.shape == (3, 3, 3, 64)
    assert n_params(imagenet) - n_params(cifar) == (49 - 9) * 3 * 64


@pytest.mark.parametrize("stem,size,dtype", [("imagenet", 32, jnp.float32),
                                              ("cifar", 8, jnp.bfloat16)])
def test_forward_dtype_and_residual_blocks_start_as_identity(stem, size, dtype):
    model = fast_build(lambda: ResNet("resnet18", stem=stem, width=4, dtype=dtype,
                                      rngs=nnx.Rngs(0)))
    assert all(np.all(np.asarray(b.bn2.scale[...]) == 0) for b in model.blocks)
    assert all(np.all(np.asarray(b.bn1.scale[...]) == 1) for b in model.blocks)
    y = fast_call(model, lambda m, x: m(x), jnp.ones((2, size, size, 3)))
    assert y.shape == (2, 32) and model.num_features == 32 and y.dtype == dtype
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}


def test_bottleneck_zero_inits_bn3_and_expands_width():
    block = fast_build(lambda: Bottleneck(8, 4, 2, jnp.float32, nnx.Rngs(0)))
    assert np.all(np.asarray(block.bn3.scale[...]) == 0)
    assert np.all(np.asarray(block.bn2.scale[...]) == 1)
    assert block.conv2.strides == (2, 2)  # ResNet v1.5: the stride sits on the 3x3
    assert fast_call(block, lambda m, x: m(x), jnp.ones((2, 4, 4, 8))).shape == (2, 2, 2, 16)
    model = nnx.eval_shape(lambda: ResNet("resnet50", width=8, rngs=nnx.Rngs(0)))
    assert model.num_features == 8 * 8 * 4


def test_train_and_eval_modes_switch_batch_norm():
    block = fast_build(lambda: BasicBlock(4, 8, 2, jnp.float32, nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 4))
    before = np.asarray(block.bn1.mean[...]).copy()
    block.train()
    assert fast_call(block, lambda m, x: m(x), x).shape == (4, 4, 4, 8)
    assert not np.allclose(np.asarray(block.bn1.mean[...]), before)  # running stats moved
    block.eval()
    after = np.asarray(block.bn1.mean[...]).copy()
    fast_call(block, lambda m, x: m(x), x)
    np.testing.assert_array_equal(np.asarray(block.bn1.mean[...]), after)


def test_mlp_bias_and_batchnorm_rules():
    mlp = nnx.eval_shape(lambda: MLP(6, [5, 4, 3], rngs=nnx.Rngs(0)))
    assert [lin.bias is None for lin in mlp.linears] == [True, True, False]  # BN replaces bias
    assert [n is None for n in mlp.norms] == [False, False, True]
    plain = nnx.eval_shape(lambda: MLP(6, [5, 3], last_bn="plain", rngs=nnx.Rngs(0)))
    assert plain.linears[1].bias is None and plain.norms[1].scale is None
    affine = nnx.eval_shape(lambda: MLP(6, [5, 3], last_bn="affine", rngs=nnx.Rngs(0)))
    assert affine.norms[1].scale is not None
    no_bn = nnx.eval_shape(lambda: MLP(6, [5, 3], hidden_bn=False, rngs=nnx.Rngs(0)))
    assert no_bn.norms[0] is None and no_bn.linears[0].bias is not None


def test_mlp_forward_matches_numpy():
    mlp = fast_build(lambda: MLP(3, [4, 2], hidden_bn=True, rngs=nnx.Rngs(1)))
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    w0 = np.asarray(mlp.linears[0].kernel[...])
    w1, b1 = np.asarray(mlp.linears[1].kernel[...]), np.asarray(mlp.linears[1].bias[...])
    h = x @ w0
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)  # train-mode BN, scale 1, bias 0
    expected = np.maximum(h, 0) @ w1 + b1
    out = fast_call(mlp, lambda m, x: m(x), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        MLP(3, [2], last_bn="sometimes", rngs=nnx.Rngs(0))

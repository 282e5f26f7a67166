"""ViT-S/16 and ViT-B/16: sizes against timm, the sin-cos table by hand, a NumPy forward pass."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from augself_jax.models.vit import FrozenPatch, ViT, sincos_position_embedding


def count(module, kind) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, kind)))


# timm's vit_{small,base}_patch16_224 have 22,050,664 and 86,567,656 parameters; less their
# 1000-way head and their learned 197-token position embedding (fixed here), that leaves:
@pytest.mark.parametrize("name,total,width", [
    ("vit_small", 22_050_664 - (384 * 1000 + 1000) - 197 * 384, 384),
    ("vit_base", 86_567_656 - (768 * 1000 + 1000) - 197 * 768, 768)])
def test_sizes_match_timm_without_head_and_learned_positions(name, total, width):
    model = nnx.eval_shape(lambda: ViT(name, image_size=224, rngs=nnx.Rngs(0)))
    frozen = 16 * 16 * 3 * width + width
    assert model.num_features == width
    assert count(model, FrozenPatch) == frozen
    assert count(model, nnx.Param) + frozen == total


def test_sincos_table_by_hand():
    table = sincos_position_embedding(grid=2, width=8)  # frequencies 1 and 1/100
    assert table.shape == (5, 8) and np.all(table[0] == 0)
    # patch 3 of a 2x2 grid sits at row 1, column 1; patch 1 at row 0, column 1.
    for patch, (r, c) in {1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (1, 1)}.items():
        want = [math.sin(r), math.sin(r / 100), math.cos(r), math.cos(r / 100),
                math.sin(c), math.sin(c / 100), math.cos(c), math.cos(c / 100)]
        np.testing.assert_allclose(table[patch], want, rtol=1e-6, atol=1e-7)


def _numpy_sincos(grid: int, width: int) -> np.ndarray:
    """The formula checked by hand above, in NumPy, for any grid and width: row 0 (the class
    token) zero; patch p at (row, column) = divmod(p - 1, grid) gets sin and cos of
    row * omega, then of column * omega, omega_k = 10000^(-k / (width / 4))."""
    omega = 10000.0 ** (-np.arange(width // 4) / (width // 4))
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    angles = [rows[:, None] * omega, cols[:, None] * omega]
    table = np.concatenate([f(a) for a in angles for f in (np.sin, np.cos)], 1)
    return np.concatenate([np.zeros((1, width)), table])


def test_sincos_table_matches_the_formula_on_a_larger_grid():
    np.testing.assert_allclose(sincos_position_embedding(grid=5, width=32), _numpy_sincos(5, 32),
                               rtol=1e-5, atol=1e-6)


def _numpy_forward(model: ViT, x: np.ndarray) -> np.ndarray:
    def ln(y, norm):
        mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
        scale, bias = np.asarray(norm.scale[...]), np.asarray(norm.bias[...])
        return (y - mu) / np.sqrt(var + 1e-6) * scale + bias

    def lin(y, layer):
        return y @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])

    p, b = model.patch_size, x.shape[0]
    g = x.shape[1] // p
    patches = x.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * 3)
    tokens = patches @ np.asarray(model.patch_kernel[...]).reshape(p * p * 3, -1)
    tokens += np.asarray(model.patch_bias[...])
    cls = np.broadcast_to(np.asarray(model.cls_token[...]), (b, 1, tokens.shape[-1]))
    h = np.concatenate([cls, tokens], 1) + _numpy_sincos(g, tokens.shape[-1])  # not the code's
    for blk in model.blocks:
        w, heads = h.shape[-1], blk.heads
        q, k, v = np.split(lin(ln(h, blk.norm1), blk.qkv), 3, axis=-1)
        q, k, v = (t.reshape(b, -1, heads, w // heads).transpose(0, 2, 1, 3) for t in (q, k, v))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(w // heads)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        h = h + lin((att @ v).transpose(0, 2, 1, 3).reshape(b, -1, w), blk.proj)
        u = lin(ln(h, blk.norm2), blk.fc1)
        h = h + lin(0.5 * u * (1 + erf(u / math.sqrt(2))), blk.fc2)
    return ln(h, model.norm)[:, 0]


def test_forward_matches_numpy_with_random_weights():
    model = ViT("vit_small", image_size=32, patch_size=16, depth=2, rngs=nnx.Rngs(1))
    # Randomise LayerNorms and the class token so every term of the pass shows.
    key = jax.random.key(2)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and (var[...].ndim == 1 or path[-1] == "cls_token"):
            key, sub = jax.random.split(key)
            var[...] = var[...] + 0.5 * jax.random.normal(sub, var[...].shape)
    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 32, 32, 3)), np.float64)
    got = np.asarray(model(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, _numpy_forward(model, x), rtol=2e-4, atol=2e-4)


def test_initialisation_follows_the_reference():
    model = ViT("vit_small", image_size=32, patch_size=16, depth=1, rngs=nnx.Rngs(0))
    qkv = np.asarray(model.blocks[0].qkv.kernel[...])
    bound = math.sqrt(6 / (384 + 384))  # q, k, v drawn as separate 384x384 matrices
    assert qkv.shape == (384, 1152) and np.abs(qkv).max() <= bound
    assert np.abs(qkv).max() > 0.99 * bound
    patch = np.asarray(model.patch_kernel[...])
    assert np.abs(patch).max() <= math.sqrt(6 / (16 * 16 * 3 + 384))
    assert np.all(np.asarray(model.patch_bias[...]) == 0)
    assert np.abs(np.asarray(model.cls_token[...])).max() < 1e-5


def test_patch_embedding_gets_no_gradient_and_bf16_runs_in_bf16():
    model = ViT("vit_small", image_size=32, patch_size=16, depth=1, dtype=jnp.bfloat16,
                rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert count(model, FrozenPatch) == 16 * 16 * 3 * 384 + 384
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest)(jnp.ones((2, 32, 32, 3))).astype(jnp.float32))

    out = nnx.merge(graphdef, params, rest)(jnp.ones((2, 32, 32, 3)))
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 384)
    grads = jax.grad(loss)(params)  # the optimiser's view: Params only
    names = {str(path[-1]) for path, _ in nnx.to_flat_state(grads)}
    assert "cls_token" in names and not names & {"patch_kernel", "patch_bias"}


def test_image_size_must_be_a_multiple_of_the_patch():
    want = r"^model.patch_size: 16 does not divide data.image_size 36$"
    with pytest.raises(ValueError, match=want):
        ViT("vit_small", image_size=36, rngs=nnx.Rngs(0))

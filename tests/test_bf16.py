"""bfloat16 compute (`model.dtype=bfloat16`): activations of the backbone, projector, AugSelf
heads and CASSLE encoder in bfloat16; parameters, gradients, losses and batch-norm
statistics in float32; and a bf16 step's loss and gradients close to float32's."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

from step_inputs import abstract_batch, make_config, synthetic_batch  # noqa: E402

from augself_jax.methods import build_model, compute_loss  # noqa: E402
from augself_jax.train import mesh as mesh_lib  # noqa: E402
from augself_jax.train.step import prepare_views  # noqa: E402

TINY = dict(backbone="resnet18", stem="cifar", width=8, image_size=16, small_heads=True)
BATCH = 16


def _config(method: str, variant: str, dtype: str):
    return make_config(method, variant, batch=BATCH, dtype=dtype, **TINY)


def _fixed_batch() -> dict:
    """Distinct coarse images (4x4 random blocks) and a mirrored, dimmed second view, so
    the two views of an example are alike and the examples differ, as in training."""
    batch = synthetic_batch(BATCH, 16)
    coarse = np.random.default_rng(1).integers(0, 256, (BATCH, 4, 4, 3)).astype(np.float32)
    image = np.repeat(np.repeat(coarse, 4, 1), 4, 2)
    batch["view1"] = image.astype(np.uint8)
    batch["view2"] = np.clip(image[:, :, ::-1] * 0.9 + 10, 0, 255).astype(np.uint8)
    return batch


def _train_model(config):
    model = build_model(config, nnx.Rngs(0))
    model.train()
    return model


def _loss_and_grads(config, batch):
    # One compiled init program: eager init would compile every initializer on its own.
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: _train_model(config)), nnx.Param, ...)
    params, rest = jax.jit(lambda: nnx.split(_train_model(config), nnx.Param, ...)[1:],
                           compiler_options=mesh_lib.fast_compile_options())()
    inputs = prepare_views(config, batch)

    def loss_fn(params):
        loss, _ = compute_loss(nnx.merge(graphdef, params, rest, copy=True), inputs, step=0,
                               total_steps=10)
        return loss

    fn = jax.jit(jax.value_and_grad(loss_fn),
                 compiler_options=mesh_lib.fast_compile_options())
    return params, fn(params)


def _out_dtype(module: nnx.Module, *args) -> jnp.dtype:
    """The dtype `module(*args)` returns, from shapes alone (a train-mode module mutates its
    batch statistics, so it is called as a merged copy inside the trace)."""
    graphdef, state = nnx.split(module)
    return jax.eval_shape(lambda state, *a: nnx.merge(graphdef, state)(*a), state, *args).dtype


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


# Measured on CPU at this size: loss differences below 1e-3; whole-gradient relative L2
# errors of 0.09 (SimCLR + AugSelf) and 0.19 (BYOL + CASSLE). bfloat16 keeps 8 bits of
# mantissa (a relative rounding of 2^-9 per stored activation and activation gradient);
# at initialisation the examples' features are nearly equal, so the contrastive and BYOL
# gradients are small differences of large terms (BYOL's online and target networks are
# the same at step 0) and that rounding shows up magnified. The bounds leave room for
# another backend's rounding but not for a float32-only part running in bfloat16's
# precision twice (an extra rounding of the loss inputs or the statistics) going unnoticed
# by the dtype test below.
TOLERANCES = {("simclr", "augself"): 0.15, ("byol", "cassle"): 0.3}


@pytest.mark.parametrize("method,variant", [
    ("simclr", "augself"),
    pytest.param("byol", "cassle", marks=pytest.mark.slow),  # two backbones: ~2x the time
])
def test_bf16_loss_and_gradients_agree_with_float32(method, variant):
    batch = _fixed_batch()
    params32, (loss32, grads32) = _loss_and_grads(_config(method, variant, "float32"), batch)
    params16, (loss16, grads16) = _loss_and_grads(_config(method, variant, "bfloat16"), batch)
    # Same float32 parameters either way: the dtype changes the compute, not the model.
    np.testing.assert_array_equal(_flat(params32), _flat(params16))
    assert loss16.dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(grads16)} == {jnp.dtype(jnp.float32)}
    # Measured 4e-4 (SimCLR + AugSelf). An NT-Xent computed in bfloat16 was off by 7e-3 in
    # one planted version and by 6e-4 in another (its projections cast to bfloat16 before
    # the normalisation): how far depends on where its loss rounds, so this bound catches
    # the first and the per-method dtype test below catches both.
    assert abs(float(loss32) - float(loss16)) < 2e-3, abs(float(loss32) - float(loss16))
    g32, g16 = _flat(grads32), _flat(grads16)
    assert np.all(np.isfinite(g16))
    rel = np.linalg.norm(g16 - g32) / np.linalg.norm(g32)
    assert rel < TOLERANCES[method, variant], rel


def test_bf16_activations_and_float32_losses_and_statistics():
    """dtypes along the whole bf16 step, from abstract shapes (nothing runs)."""
    config = _config("byol", "cassle", "bfloat16")
    config.augself.crop = 1.0  # BYOL + AugSelf + CASSLE: every part at once
    model = nnx.eval_shape(lambda: _train_model(config))  # shapes only, no initialisation
    x = jax.ShapeDtypeStruct((BATCH, 16, 16, 3), jnp.float32)
    assert _out_dtype(model.backbone, x) == jnp.bfloat16
    conditioned = jax.ShapeDtypeStruct((BATCH, model.projector.linears[0].in_features),
                                       jnp.bfloat16)  # features + the CASSLE embedding
    assert _out_dtype(model.projector, conditioned) == jnp.bfloat16
    z = jax.ShapeDtypeStruct((BATCH, model.predictor.linears[0].in_features), jnp.bfloat16)
    assert _out_dtype(model.predictor, z) == jnp.bfloat16
    pair = jax.ShapeDtypeStruct((BATCH, 2 * model.backbone.num_features), jnp.bfloat16)
    assert _out_dtype(model.augself_heads["crop"], pair) == jnp.bfloat16
    desc = jax.ShapeDtypeStruct((BATCH, model.cassle.linears[0].in_features), jnp.float32)
    assert _out_dtype(model.cassle, desc) == jnp.bfloat16
    params = nnx.state(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}

    graphdef, state = nnx.split(model)
    batch = abstract_batch(BATCH, 16)

    def loss_and_stats(state, batch):
        m = nnx.merge(graphdef, state)
        loss, metrics = compute_loss(m, prepare_views(config, batch), step=0, total_steps=10)
        return loss, metrics, nnx.state(m, nnx.BatchStat)

    loss, metrics, stats = jax.eval_shape(loss_and_stats, state, batch)
    assert loss.dtype == jnp.float32
    assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(metrics))
    assert jax.tree.leaves(stats)
    assert {s.dtype for s in jax.tree.leaves(stats)} == {jnp.dtype(jnp.float32)}


def _method_names() -> tuple[str, ...]:
    from augself_jax.methods import registry

    return registry.names()


@pytest.mark.parametrize("method", _method_names())
def test_bf16_every_methods_losses_are_float32(method):
    """Every registered method's loss terms (ssl_loss, each AugSelf term, ...) leave the
    bf16 step in float32, checked term by term from abstract shapes: a float32 AugSelf
    term would otherwise promote a bfloat16 ssl_loss in the total and hide it."""
    config = _config(method, "augself", "bfloat16")
    model = nnx.eval_shape(lambda: _train_model(config))
    graphdef, state = nnx.split(model)

    def loss_and_metrics(state, batch):
        return compute_loss(nnx.merge(graphdef, state), prepare_views(config, batch), step=0,
                            total_steps=10)

    loss, metrics = jax.eval_shape(loss_and_metrics, state, abstract_batch(BATCH, 16))
    assert "ssl_loss" in metrics or method == "supervised", sorted(metrics)
    assert loss.dtype == jnp.float32
    wrong = {k: str(v.dtype) for k, v in metrics.items() if v.dtype != jnp.float32}
    assert not wrong, wrong

"""Optimizers and schedules against hand-written NumPy formulas (docs/METHOD.md section 4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from test_train_support import load_config, tiny_config

from augself_jax.methods import registry
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import optimizers
from augself_jax.train import state as state_lib


def _config(name="sgd", method="simclr", batch=512, base_lr=0.03, wd=5e-4):
    c = load_config("simclr", "shapes")
    c.optimizer.name, c.method.name, c.batch_size = name, method, batch
    c.optimizer.base_lr, c.optimizer.weight_decay = base_lr, wd
    c.optimizer.warmup_epochs = 0.0  # the formulas below start at the peak (the preset warms up)
    return c


def _params():
    return {"backbone": {"kernel": jnp.asarray(np.linspace(-1, 1, 6).reshape(2, 3), jnp.float32),
                         "bias": jnp.asarray([0.5, -0.25, 1.0], jnp.float32)},
            "predictor": {"kernel": jnp.full((3, 2), 0.3, jnp.float32)}}


def test_cosine_schedule_with_warmup():
    c = _config(batch=512, base_lr=0.1)
    peak = 0.1 * 512 / 256
    cosine = optimizers.learning_rate_schedule(c, 100)
    for t in (0, 10, 50, 99, 100):
        assert math.isclose(float(cosine(t)), peak * 0.5 * (1 + math.cos(math.pi * t / 100)),
                            rel_tol=1e-5, abs_tol=1e-7)
    warm = optimizers.learning_rate_schedule(c, 100, warmup_steps=10)
    assert float(warm(0)) == 0.0 and math.isclose(float(warm(5)), peak / 2, rel_tol=1e-5)
    for t in (10, 40, 100):
        expected = peak * 0.5 * (1 + math.cos(math.pi * (t - 10) / 90))
        assert math.isclose(float(warm(t)), expected, rel_tol=1e-5, abs_tol=1e-7)
    c.optimizer.schedule = "constant"
    assert float(optimizers.learning_rate_schedule(c, 100)(77)) == pytest.approx(peak)


def test_sgd_is_torch_sgd_with_coupled_weight_decay():
    c = _config("sgd", batch=256, base_lr=0.1, wd=0.01)
    params = _params()
    tx, schedule = optimizers.make_optimizer(c, params, num_steps=10)
    state = tx.init(params)
    p = {k: np.asarray(v) for k, v in params["backbone"].items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(3):
        grads = {"backbone": {k: jnp.full(v.shape, 0.2 * (t + 1)) for k, v in p.items()},
                 "predictor": {"kernel": jnp.zeros((3, 2))}}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        lr = 0.1 * 0.5 * (1 + math.cos(math.pi * t / 10))
        for k in p:  # torch.optim.SGD: d = g + wd p; buf = m buf + d; p -= lr buf
            buf[k] = 0.9 * buf[k] + (0.2 * (t + 1) + 0.01 * p[k])
            p[k] = p[k] - lr * buf[k]
            np.testing.assert_allclose(params["backbone"][k], p[k], rtol=1e-5, atol=1e-7)


def test_lars_excludes_biases_from_decay_and_trust_ratio():
    c = _config("lars", batch=256, base_lr=0.5, wd=0.1)
    params = _params()
    tx, _ = optimizers.make_optimizer(c, params, num_steps=10)
    g = {"backbone": {"kernel": jnp.full((2, 3), 0.1), "bias": jnp.full((3,), 0.1)},
         "predictor": {"kernel": jnp.full((3, 2), 0.1)}}
    updates, _ = tx.update(g, tx.init(params), params)
    # Bias: plain momentum SGD, first step: -lr * g.
    np.testing.assert_allclose(updates["backbone"]["bias"], -0.5 * 0.1 * np.ones(3), rtol=1e-5)
    # Kernel: d = g + wd p, scaled by trust_coefficient * |p| / |d|.
    p = np.asarray(params["backbone"]["kernel"])
    d = 0.1 + 0.1 * p
    expected = -0.5 * 0.001 * np.linalg.norm(p) / np.linalg.norm(d) * d
    np.testing.assert_allclose(updates["backbone"]["kernel"], expected, rtol=1e-5)


def test_adamw_first_step_and_masked_decay():
    c = _config("adamw", batch=256, base_lr=0.01, wd=0.1)
    params = _params()
    tx, _ = optimizers.make_optimizer(c, params, num_steps=10)
    g = {"backbone": {"kernel": jnp.full((2, 3), 0.3), "bias": jnp.full((3,), -0.3)},
         "predictor": {"kernel": jnp.full((3, 2), 0.3)}}
    updates, _ = tx.update(g, tx.init(params), params)
    # First Adam step is lr * sign(g) (bias-corrected); decay only on matrices.
    np.testing.assert_allclose(updates["backbone"]["bias"], 0.01 * np.ones(3), rtol=1e-4)
    p = np.asarray(params["backbone"]["kernel"])
    np.testing.assert_allclose(updates["backbone"]["kernel"], -0.01 * (1 + 0.1 * p), rtol=1e-4)


def test_simsiam_predictor_keeps_the_constant_lr():
    c = _config("sgd", method="simsiam", batch=256, base_lr=0.05, wd=0.0)
    params = _params()
    simsiam = registry.get("simsiam")
    tx, schedule = optimizers.make_optimizer(c, params, num_steps=4,
                                             constant_lr=simsiam.constant_lr(c))
    state = tx.init(params)
    g = {"backbone": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))},
         "predictor": {"kernel": jnp.ones((3, 2))}}
    for _ in range(3):  # steps 0, 1, 2; momentum buffers accumulate 1, 1.9, 2.71
        updates, state = tx.update(g, state, params)
    np.testing.assert_allclose(updates["predictor"]["kernel"], -0.05 * 2.71, rtol=1e-5)
    cos_lr = 0.05 * 0.5 * (1 + math.cos(math.pi * 2 / 4))
    np.testing.assert_allclose(updates["backbone"]["bias"], -cos_lr * 2.71, rtol=1e-5)
    c.method.simsiam_fixed_predictor_lr = False
    tx, _ = optimizers.make_optimizer(c, params, num_steps=4, constant_lr=simsiam.constant_lr(c))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(g, state, params)
    np.testing.assert_allclose(updates["predictor"]["kernel"], -cos_lr * 2.71, rtol=1e-5)


def test_warmup_epochs_become_steps(shapes_data_dir):
    config = tiny_config("simclr_augself", batch=64)
    config.data.data_dir = shapes_data_dir
    builder = tfds.builder("augself_shapes", data_dir=shapes_data_dir)
    per_epoch = builder.info.splits["train"].num_examples // 64  # full batches per epoch
    config.optimizer.warmup_epochs = 1.5
    assert optimizers.warmup_steps(config) == round(1.5 * per_epoch)
    config.optimizer.warmup_epochs = 0.0
    assert optimizers.warmup_steps(config) == 0

    # The trainer's schedule: linear from 0 over those steps, then the cosine from its peak.
    config.optimizer.warmup_epochs = 0.25
    config.total_steps = 4 * per_epoch
    warm = round(0.25 * per_epoch)
    setup = state_lib.make_setup(config, mesh_lib.make_mesh(config, jax.devices()[:1]))
    peak = config.optimizer.base_lr * 64 / 256
    assert float(setup.schedule(0)) == 0.0
    assert float(setup.schedule(warm // 2)) == pytest.approx(peak * (warm // 2) / warm, rel=1e-5)
    assert float(setup.schedule(warm)) == pytest.approx(peak, rel=1e-5)
    t = warm + (config.total_steps - warm) // 2
    assert float(setup.schedule(t)) == pytest.approx(
        peak * 0.5 * (1 + np.cos(np.pi * (t - warm) / (config.total_steps - warm))), rel=1e-4)

"""8 simulated devices train the same model as 1 device (same global batch), and a
checkpoint written on one device count restores onto the other."""

import jax
import numpy as np
import pytest
from test_train_support import host_leaves, synthetic_host_batch, tiny_config, to_global

from augself_jax import checkpoints
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import state as state_lib
from augself_jax.train.step import make_train_step

STEPS = 2


def _train(config, devices):
    mesh = mesh_lib.make_mesh(config, devices)
    setup = state_lib.make_setup(config, mesh)
    state = state_lib.init_state(config, setup)
    step = make_train_step(config, setup)
    losses = []
    for k in range(STEPS):
        state, metrics = step(state, to_global(synthetic_host_batch(config, k), mesh))
        losses.append({name: float(v) for name, v in metrics.items()})
    return setup, step, state, losses


def _moco_cassle():
    config = tiny_config("moco_augself", steps=STEPS)
    config.augself.crop = 0.0
    config.augself.color = 0.0
    config.cassle.enabled = True
    return config


@pytest.fixture(scope="module")
def simclr_runs():
    config = tiny_config("simclr_augself", steps=STEPS)
    return config, _train(config, jax.devices()[:1]), _train(config, jax.devices())


def _assert_same_training(one, eight):
    _, _, state1, losses1 = one
    _, _, state8, losses8 = eight
    for m1, m8 in zip(losses1, losses8, strict=True):
        assert m1.keys() == m8.keys()
        for name in m1:
            np.testing.assert_allclose(m8[name], m1[name], rtol=2e-4, atol=1e-5, err_msg=name)
    for part in ("params", "rest"):
        a, b = host_leaves(getattr(state1, part)), host_leaves(getattr(state8, part))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=2e-5)
    # The updates themselves agree, not just the (mostly unchanged) parameters.
    assert losses1[1]["loss"] != losses1[0]["loss"]


def test_simclr_augself_8_devices_match_1(simclr_runs):
    _, one, eight = simclr_runs
    assert len(eight[2].params["backbone"]["conv1"]["kernel"].sharding.device_set) == 8
    assert {"loss", "ssl_loss", "augself/crop", "augself/color", "lr"} <= set(one[3][0])
    _assert_same_training(one, eight)


def test_moco_cassle_8_devices_match_1():
    config = _moco_cassle()
    _assert_same_training(_train(config, jax.devices()[:1]), _train(config, jax.devices()))


@pytest.mark.parametrize("source,target", [(8, 1), (1, 8)])
def test_restore_onto_other_device_count(simclr_runs, tmp_path, source, target):
    config, one, eight = simclr_runs
    runs = {1: one, 8: eight}
    _, _, saved_state, _ = runs[source]
    setup_t, step_t, _, _ = runs[target]
    ckpt = checkpoints.TrainCheckpointer(tmp_path, keep=2)
    ckpt.save(STEPS, saved_state, {"step": STEPS, "data_position": STEPS})
    ckpt.wait()
    restored, meta = ckpt.restore(STEPS, setup_t.abstract_state)
    ckpt.close()
    assert meta["data_position"] == STEPS
    for x, y in zip(host_leaves(saved_state), host_leaves(restored), strict=True):
        np.testing.assert_array_equal(x, y)
    leaf = jax.tree.leaves(restored.params)[0]
    assert len(leaf.sharding.device_set) == target
    # Training continues on the new device count.
    mesh = setup_t.mesh
    state, metrics = step_t(restored, to_global(synthetic_host_batch(config, STEPS), mesh))
    assert int(state.step) == STEPS + 1 and np.isfinite(float(metrics["loss"]))

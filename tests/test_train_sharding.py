"""8 simulated devices train the same model as 1 device (same global batch), and a
checkpoint written on one device count restores onto the other."""

import jax
import numpy as np
import pytest
from test_train_support import host_leaves, synthetic_host_batch, tiny_config

from augself_jax import checkpoints
from augself_jax.data.global_batch import make_global_batch
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import state as state_lib
from augself_jax.train.step import make_train_step

STEPS = 2


def _train(config, devices):
    mesh = mesh_lib.make_mesh(config, devices)
    setup = state_lib.make_setup(config, mesh)
    state = state_lib.init_state(config, setup)
    initial = host_leaves(state)  # copied out: the step donates its input state
    step = make_train_step(config, setup)
    losses = []
    for k in range(STEPS):
        state, metrics = step(state, make_global_batch(synthetic_host_batch(config, k), mesh))
        losses.append({name: float(v) for name, v in metrics.items()})
    updates = [x - x0 if np.issubdtype(x.dtype, np.floating) else x
               for x, x0 in zip(host_leaves(state), initial, strict=True)]
    return setup, step, state, losses, (initial, updates)


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
    *_, losses1, (init1, updates1) = one
    *_, losses8, (init8, updates8) = eight
    for m1, m8 in zip(losses1, losses8, strict=True):
        assert m1.keys() == m8.keys()
        for name in m1:
            np.testing.assert_allclose(m8[name], m1[name], rtol=2e-4, atol=1e-5, err_msg=name)
    # The same initial state, bit for bit, then the same updates (new state - initial, over
    # params, rest and the optimizer state) to well below the updates' own size.
    for x, y in zip(init1, init8, strict=True):
        assert x.tobytes() == y.tobytes()
    moved = 0
    for u1, u8 in zip(updates1, updates8, strict=True):
        if not np.issubdtype(u1.dtype, np.floating):
            np.testing.assert_array_equal(u8, u1)  # step counters, queue pointer
            continue
        size = float(np.abs(u1).max())
        moved += size > 1e-5
        # 1e-6: float32 rounding of O(1) weights, for arrays that barely moved.
        np.testing.assert_allclose(u8, u1, rtol=0, atol=0.02 * size + 1e-6)
    assert moved > len(updates1) // 2  # most arrays really changed in two steps


def test_simclr_augself_8_devices_match_1(simclr_runs):
    _, one, eight = simclr_runs
    assert len(eight[2].params["backbone"]["conv1"]["kernel"].sharding.device_set) == 8
    assert {"loss", "ssl_loss", "augself/crop", "augself/color", "lr"} <= set(one[3][0])
    _assert_same_training(one, eight)


@pytest.mark.slow  # the MoCo and CASSLE steps run in test_train_experiments; parity is simclr's
def test_moco_cassle_8_devices_match_1():
    config = _moco_cassle()
    _assert_same_training(_train(config, jax.devices()[:1]), _train(config, jax.devices()))


@pytest.mark.parametrize("source,target", [(8, 1), (1, 8)])
def test_restore_onto_other_device_count(simclr_runs, tmp_path, source, target):
    config, one, eight = simclr_runs
    runs = {1: one, 8: eight}
    _, _, saved_state, _, _ = runs[source]
    setup_t, step_t, _, _, _ = runs[target]
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
    state, metrics = step_t(restored, make_global_batch(synthetic_host_batch(config, STEPS), mesh))
    assert int(state.step) == STEPS + 1 and np.isfinite(float(metrics["loss"]))

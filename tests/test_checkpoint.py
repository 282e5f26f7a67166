"""Checkpoint layout, restore, and what the evaluation binary gets from a workdir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train_support import host_leaves, tiny_config

from augself_jax import checkpoints
from augself_jax.errors import ConfigError
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import state as state_lib


def test_nested_round_trip_keeps_structure_and_keys():
    tree = {"a": [jnp.arange(3), {"b": jnp.ones((2, 2))}], "key": jax.random.key(3),
            "t": (jnp.zeros(()),)}
    nested = checkpoints.to_nested(tree)
    assert set(nested) == {"a", "key", "t"} and set(nested["a"]) == {"0", "1"}
    assert nested["key"].dtype == jnp.uint32  # typed keys are stored as raw data
    back = checkpoints.from_nested(nested, tree)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    assert jnp.array_equal(jax.random.key_data(back["key"]), jax.random.key_data(tree["key"]))
    np.testing.assert_array_equal(back["a"][1]["b"], tree["a"][1]["b"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = tiny_config("byol_augself")
    setup = state_lib.make_setup(config, mesh_lib.make_mesh(config, jax.devices()[:1]))
    state = state_lib.init_state(config, setup)
    workdir = tmp_path_factory.mktemp("ckpt")
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=2)
    for step in (2, 4, 6):
        ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)),
                  {"step": step, "data_position": step})
    ckpt.close()
    return config, setup, state, workdir


def test_keeps_the_last_k_and_restores_exactly(saved):
    config, setup, state, workdir = saved
    assert checkpoints.all_steps(workdir) == [4, 6] and checkpoints.latest_step(workdir) == 6
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=2)
    restored, meta = ckpt.restore(6, setup.abstract_state)
    ckpt.close()
    assert meta == {"step": 6, "data_position": 6} and int(restored.step) == 6
    # Momentum targets (BYOL) travel in `rest` with the batch statistics.
    assert "target_backbone" in restored.rest
    for x, y in zip(host_leaves(state.params), host_leaves(restored.params), strict=True):
        assert x.tobytes() == y.tobytes()
    for x, y in zip(host_leaves(state.opt_state), host_leaves(restored.opt_state), strict=True):
        assert x.tobytes() == y.tobytes()


def test_an_unfinished_save_is_never_a_checkpoint(saved):
    _, _, _, workdir = saved
    # What a process killed mid-save leaves behind: a temporary directory, no commit marker.
    partial = checkpoints.checkpoint_dir(workdir) / "8.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    assert checkpoints.latest_step(workdir) == 6


def test_restore_backbone_in_eval_mode(saved):
    config, _, state, workdir = saved
    backbone, step = checkpoints.restore_backbone(workdir, config)
    assert step == 6
    model = state_lib.merge_model(state_lib.make_setup(
        config, mesh_lib.make_mesh(config, jax.devices()[:1])), state)
    model.backbone.eval()
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    np.testing.assert_allclose(backbone(x), model.backbone(x), rtol=1e-5, atol=1e-6)
    assert checkpoints.restore_backbone(workdir, config, step=4)[1] == 4


def test_restore_backbone_errors(saved, tmp_path):
    config, _, _, workdir = saved
    with pytest.raises(ConfigError, match="no checkpoint in"):
        checkpoints.restore_backbone(tmp_path, config)
    with pytest.raises(ConfigError, match="no checkpoint at step 3"):
        checkpoints.restore_backbone(workdir, config, step=3)
    wider = tiny_config("byol_augself")
    wider.model.width = 8
    with pytest.raises(ConfigError, match="does not match the checkpoint"):
        checkpoints.restore_backbone(workdir, wider)

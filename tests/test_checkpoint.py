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


def _distinct(state, step):
    """The state moved by amounts unique to `step` and to each part: a checkpoint restored
    from the wrong step, or `rest` restored from the wrong arrays, differs in every
    floating-point array. BYOL's momentum targets (in `rest`) are moved far from the online
    weights, so restoring one in place of the other cannot pass."""
    def shift(tree, amount, target_amount=None):
        def move(path, x):
            if not jnp.issubdtype(x.dtype, jnp.floating):
                return x
            is_target = "target_" in jax.tree_util.keystr(path)
            return x + (target_amount if is_target and target_amount is not None else amount)

        return jax.tree_util.tree_map_with_path(move, tree)

    return state.replace(step=jnp.asarray(step, jnp.int32),
                         params=shift(state.params, 0.01 * step),
                         rest=shift(state.rest, 0.003 * step, target_amount=1000.0 + step),
                         opt_state=shift(state.opt_state, -0.07 * step))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = tiny_config("byol_augself")
    setup = state_lib.make_setup(config, mesh_lib.make_mesh(config, jax.devices()[:1]))
    state = state_lib.init_state(config, setup)
    workdir = tmp_path_factory.mktemp("ckpt")
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=2)
    states = {step: _distinct(state, step) for step in (2, 4, 6)}
    for step, s in states.items():
        ckpt.save(step, s, {"step": step, "data_position": step})
    ckpt.close()
    return config, setup, states, workdir


def _assert_identical(want, got, part):
    a, b = host_leaves(getattr(want, part)), host_leaves(getattr(got, part))
    assert a and len(a) == len(b), part
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, part
        assert x.tobytes() == y.tobytes(), part


@pytest.mark.parametrize("step", [4, 6])
def test_keeps_the_last_k_and_restores_every_array(saved, step):
    config, setup, states, workdir = saved
    assert checkpoints.all_steps(workdir) == [4, 6] and checkpoints.latest_step(workdir) == 6
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=2)
    restored, meta = ckpt.restore(step, setup.abstract_state)
    ckpt.close()
    assert meta == {"step": step, "data_position": step} and int(restored.step) == step
    for part in ("params", "rest", "opt_state"):
        _assert_identical(states[step], restored, part)
    # BYOL's momentum targets travel in `rest`, and here they are not the online weights.
    target = host_leaves(restored.rest["target_backbone"])
    online = host_leaves(restored.params["backbone"])
    assert target and online
    assert min(t.min() for t in target) > max(o.max() for o in online) + 100


def test_an_unfinished_save_is_never_a_checkpoint(saved):
    _, _, _, workdir = saved
    # What a process killed mid-save leaves behind: a temporary directory, no commit marker.
    partial = checkpoints.checkpoint_dir(workdir) / "8.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    assert checkpoints.latest_step(workdir) == 6


@pytest.mark.parametrize("step", [None, 4])
def test_restore_backbone_in_eval_mode(saved, step):
    config, setup, states, workdir = saved
    backbone, got = checkpoints.restore_backbone(workdir, config, step=step)
    assert got == (step or 6)
    model = state_lib.merge_model(setup, states[got])
    model.backbone.eval()
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    np.testing.assert_allclose(backbone(x), model.backbone(x), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(backbone(x))).max() > 1e-2  # not a degenerate all-zero output
    # This step's online backbone, not another step's.
    other = state_lib.merge_model(setup, states[10 - got]).backbone
    other.eval()
    assert np.abs(np.asarray(other(x)) - np.asarray(backbone(x))).max() > 1e-3


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


@pytest.mark.parametrize("module", ["backbone", "target_backbone"])
def test_restore_backbone_reads_exactly_the_saved_arrays(saved, module):
    """The restore builds the backbone alone (no pretraining model around it); what it
    returns must still be, path for path and bit for bit, the module the trainer saved."""
    from flax import nnx

    config, setup, states, workdir = saved
    encoder, step = checkpoints.restore_backbone(workdir, config, module=module)
    want = state_lib.merge_model(setup, states[step])
    want_leaves = jax.tree_util.tree_leaves_with_path(
        jax.device_get(nnx.state(getattr(want, module))))
    got_leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(nnx.state(encoder)))
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves] and got_leaves
    for (path, x), (_, y) in zip(want_leaves, got_leaves, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), path


def test_restore_of_a_momentum_encoder_the_method_lacks_is_refused(saved):
    config, _, _, workdir = saved
    simclr = tiny_config("simclr_augself")
    with pytest.raises(ConfigError, match="^method.name: the simclr model keeps no "
                                          "target_backbone$"):
        checkpoints.restore_backbone(workdir, simclr, module="target_backbone")

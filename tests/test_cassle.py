"""CASSLE descriptors against hand-computed cases, sorted key order, encoder and injection modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_augself import A, B, batched
from test_methods_support import FAST, build, fast_call, synthetic_batch
from test_train_support import tiny_config

from augself_jax.augs import StaticSettings
from augself_jax.aware.cassle import descriptor, descriptor_dim, parse_keys
from augself_jax.methods import Momentum


def desc(rec, keys, reference=False):
    settings = StaticSettings.of()
    fn = jax.jit(lambda p: descriptor(p, parse_keys(keys), settings, reference=reference),
                 compiler_options=FAST)
    return np.asarray(fn(batched(rec)))[0]


def test_keys_are_sorted_whatever_the_user_wrote():
    assert parse_keys("crop, color,blur") == ("blur", "color", "crop")
    np.testing.assert_allclose(desc(A, "crop,color,blur"), desc(A, "blur,color,crop"))


def test_descriptor_keys_errors_are_one_line_and_name_the_old_spelling():
    from augself_jax.aware.cassle import check_keys
    from augself_jax.errors import ConfigError

    check_keys("blur,color,color_diff,crop,gray")
    for keys, words in (("blur,grayscale", "now spelled 'gray'"), ("", "empty"),
                        ("crop,hue", "unknown 'hue'"), ("crop,crop", "twice")):
        with pytest.raises(ConfigError, match=words) as err:
            check_keys(keys)
        assert "\n" not in str(err.value) and "cassle.descriptor_keys" in str(err.value)


def test_descriptor_hand_computed():
    # A: sigma 1.0 -> 0.5; w = (0.25, -0.25, 0, 0.25); flipped: cx = 1 - (0.2 + 0.2) = 0.6.
    np.testing.assert_allclose(
        desc(A, "crop,color,blur,flip,gray,color_diff"),
        [0.5, 0.25, -0.25, 0.0, 0.25, 0.01, 0.02, 0.03, 0.35, 0.6, 0.5, 0.4, 1.0, 0.0], atol=1e-6)
    # B: jitter not applied -> colour zeros; not flipped: cx = 0.1 + 0.4.
    np.testing.assert_allclose(desc(B, "blur,color,color_diff,crop,gray"),
                               [0, 0, 0, 0, 0, 0, 0, 0, 0.6, 0.5, 0.6, 0.8, 1.0], atol=1e-6)
    assert desc(A, "blur", reference=True)[0] == pytest.approx(1.0)  # raw sigma
    assert descriptor_dim(parse_keys("blur,color,color_diff,crop,gray")) == 13


@pytest.mark.parametrize("mode,enc_out,proj_in", [("proj-cat", 8, 32 + 8), ("proj-add", 32, 32),
                                                  ("proj-mul", 32, 32), ("raw", None, 32 + 13)])
def test_encoder_and_projector_widths_per_mode(mode, enc_out, proj_in):
    import flax.nnx as nnx

    from augself_jax.methods import build_model

    config = tiny_config("byol", cassle={"mode": mode, "depth": 6})  # the reference's depth
    model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
    assert model.projector.linears[0].in_features == proj_in
    assert model.predictor.linears[0].in_features == 16  # predictors are never conditioned
    if enc_out is None:
        assert model.cassle is None and model.target_cassle is None
        return
    widths = [lin.out_features for lin in model.cassle.linears]
    assert widths == [8] * 5 + [enc_out]  # depth 6, width 8
    assert all(lin.bias is None for lin in model.cassle.linears)
    assert model.cassle.norms[-1].scale is not None  # last BN affine, no final ReLU
    assert model.cassle.linears[0].in_features == 13
    assert isinstance(model.target_cassle.linears[0].kernel, Momentum)  # EMA copy of gamma


def test_each_branch_is_conditioned_on_its_own_view():
    from augself_jax.methods.core import project

    model = build(tiny_config("simclr", cassle={"mode": "proj-cat"}))
    batch = synthetic_batch()
    y = jnp.asarray(np.random.default_rng(0).normal(size=(16, 32)), jnp.float32)
    z1 = fast_call(model, lambda m, y, p: project(m, y, p), y, batch["params1"])
    z2 = fast_call(model, lambda m, y, p: project(m, y, p), y, batch["params2"])
    assert not np.allclose(z1, z2)  # same features, different descriptors

    from augself_jax.methods import compute_loss

    def loss(m, b):
        return compute_loss(m, b, step=0, total_steps=1)[0]

    base = fast_call(model, loss, batch)
    for key in ("params1", "params2"):
        changed = dict(batch, **{key: synthetic_batch(seed=5)[key]})
        assert not np.isclose(fast_call(model, loss, changed), base)

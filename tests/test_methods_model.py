"""build_model's structure, where gradients flow, momentum updates, the MoCo queue, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_methods_support import FAST, build, fast_call, synthetic_batch
from test_train_support import tiny_config

from augself_jax.errors import ConfigError
from augself_jax.methods import (
    Momentum,
    Queue,
    build_model,
    compute_loss,
    registry,
    update_targets,
    validate_model_config,
)

# The heads docs/METHOD.md section 4 gives each built-in method. A method added later is
# held to the properties every method shares (below), taken from its own declaration.
HEADS = {"simclr": {"projector"}, "moco": {"projector"}, "byol": {"projector", "predictor"},
         "simsiam": {"projector", "predictor"}, "barlow": {"projector"},
         "supervised": {"classifier"}, "mocov3": {"projector", "predictor"},
         "swav": {"projector", "prototypes"}}
MOMENTUM = {"moco", "byol", "mocov3"}  # docs/METHOD.md section 4: EMA targets
QUEUED = {"moco"}


def abstract(config):
    return nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))


@pytest.mark.parametrize("method", registry.names())
def test_structure_and_variable_types(method):
    model = abstract(tiny_config(method, augself={"color": 1.0}, cassle={}))
    declared = registry.get(method)
    assert model.backbone.num_features == 32
    heads = {h for h in ("projector", "predictor", "classifier", "prototypes")
             if getattr(model, h, None) is not None}
    momentum = declared.momentum is not None
    if method in HEADS:
        assert heads == HEADS[method]
        assert momentum == (method in MOMENTUM)
        assert (model.queue is not None) == (method in QUEUED)
    assert (model.target_backbone is not None) == momentum
    params = nnx.state(model, nnx.Param)
    paths = {p[0] for p, _ in nnx.to_flat_state(params)}
    assert not any(str(p).startswith("target_") or str(p).startswith("queue") for p in paths)
    if momentum:
        n_target = len(jax.tree.leaves(nnx.state(model, Momentum)))
        online = [nnx.state(getattr(model, m), nnx.Param)
                  for m in ("backbone", *declared.target_heads, "cassle")]
        assert n_target == sum(len(jax.tree.leaves(s)) for s in online)
    if method == "moco":
        assert len(jax.tree.leaves(nnx.state(model, Queue))) == 2
        assert model.queue.shape == (64, 16)


def test_barlow_and_simsiam_heads():
    barlow = abstract(tiny_config("barlow"))
    assert [lin.out_features for lin in barlow.projector.linears] == [32, 32, 16]
    assert barlow.projector.norms[-1] is not None and barlow.projector.norms[-1].scale is None
    simsiam = abstract(tiny_config("simsiam", simsiam_proj_layers=3))
    assert len(simsiam.projector.linears) == 3 and simsiam.projector.norms[-1].scale is not None


def _grads(model, batch, wrt):
    """d loss / d (variables selected by `wrt`), computed as one fast program."""
    graphdef, diff, rest = nnx.split(model, wrt, ...)

    def loss(diff, rest, batch):
        m = nnx.merge(graphdef, diff, rest, copy=True)
        return compute_loss(m, batch, step=0, total_steps=10)[0]

    return jax.jit(jax.grad(loss), compiler_options=FAST)(diff, rest, batch)


def _norms(grads):
    return {p: float(jnp.linalg.norm(v[...])) for p, v in nnx.to_flat_state(grads)}


# BYOL's momentum branch is the same code path as MoCo's (core.momentum_copy, project).
@pytest.mark.parametrize("method", ["moco", pytest.param("byol", marks=pytest.mark.slow)])
def test_no_gradient_reaches_momentum_branches_or_queue(method):
    model = build(tiny_config(method, augself={"crop": 1.0}, cassle={}))
    wrt = nnx.Any(Momentum, nnx.Param, nnx.All(Queue, nnx.PathContains("queue")))
    norms = _norms(_grads(model, synthetic_batch(), wrt))
    target = [n for p, n in norms.items() if str(p[0]).startswith(("target_", "queue"))]
    online = {p[0] for p, n in norms.items() if n > 0}
    assert target and max(target) == 0.0
    assert {"backbone", "projector", "cassle", "augself_heads"} <= online


def test_simsiam_targets_are_stop_gradient():
    from augself_jax.methods.simsiam import simsiam_loss

    p1, p2, z1, z2 = (jnp.asarray(np.random.default_rng(i).normal(size=(4, 3))) for i in range(4))
    gz = jax.grad(lambda z1, z2: simsiam_loss(p1, p2, z1, z2), argnums=(0, 1))(z1, z2)
    assert all(np.all(np.asarray(g) == 0) for g in gz)
    gp = jax.grad(lambda p1: simsiam_loss(p1, p2, z1, z2))(p1)
    assert np.any(np.asarray(gp) != 0)


@pytest.mark.parametrize("method,view2_grad", [("moco", False), ("simclr", True)])
def test_augself_learns_from_view2_only_without_momentum_encoder(method, view2_grad):
    """With a momentum encoder, view 2's AugSelf features come from it without gradient."""
    model = build(tiny_config(method, augself={"color": 1.0}))
    batch = synthetic_batch()

    def head_loss(m, v2):
        return compute_loss(m, dict(batch, view2=v2), step=0, total_steps=1)[1]["augself/color"]

    graphdef, state = nnx.split(model)
    g = jax.jit(jax.grad(lambda v2: head_loss(nnx.merge(graphdef, state, copy=True), v2)),
                compiler_options=FAST)(jnp.asarray(batch["view2"]))
    assert bool(np.any(np.asarray(g) != 0)) == view2_grad


@pytest.mark.slow  # the weighted total is checked for every config in test_train_experiments
def test_metrics_and_total_loss():
    config = tiny_config("simclr", augself={"crop": 0.5, "color": 2.0})
    model = build(config)
    loss, metrics = fast_call(model, lambda m, b: compute_loss(m, b, step=0, total_steps=1),
                              synthetic_batch())
    assert {"loss", "ssl_loss", "augself/crop", "augself/color"} <= set(metrics)
    want = metrics["ssl_loss"] + 0.5 * metrics["augself/crop"] + 2.0 * metrics["augself/color"]
    np.testing.assert_allclose(loss, want, rtol=1e-5)


@pytest.mark.parametrize("enqueue", ["keys", "queries"])
def test_moco_queue_ring_buffer(enqueue):
    model = build(tiny_config("moco", moco_enqueue=enqueue))
    batch = synthetic_batch()
    old = np.asarray(model.queue[...]).copy()

    def step(m, b):
        # What should be enqueued, from the modules themselves (no CASSLE here): the momentum
        # encoder's projection of view 2 (keys) or the online one of view 1 (queries).
        if enqueue == "keys":
            z = m.target_projector(m.target_backbone(b["view2"]))
        else:
            z = m.projector(m.backbone(b["view1"]))
        compute_loss(m, b, step=0, total_steps=1)
        return z

    z = np.asarray(fast_call(model, step, batch), np.float64)
    expected = z / np.linalg.norm(z, axis=1, keepdims=True)
    queue = np.asarray(model.queue[...])
    np.testing.assert_allclose(queue[:16], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(queue[16:], old[16:])
    assert int(model.queue_ptr[...]) == 16
    for _ in range(4):  # 64 rows / 16 per step: the pointer wraps around
        fast_call(model, lambda m, b: compute_loss(m, b, step=0, total_steps=1), batch)
    assert int(model.queue_ptr[...]) == 16


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_update_targets_is_an_ema(method):
    model = build(tiny_config(method, cassle={}))
    # Move the online weights away from the (copied) targets first.
    online = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x + 1.0, online))
    before_t = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, Momentum))}
    on = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    fast_call(model, lambda m: update_targets(m, step=3, total_steps=10))
    tau = 0.999 if method == "moco" else 1 - (1 - 0.996) * (np.cos(np.pi * 3 / 10) + 1) / 2
    after = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, Momentum))}
    for p, t in before_t.items():
        o = on[(p[0].removeprefix("target_"),) + p[1:]]
        np.testing.assert_allclose(after[p], tau * t + (1 - tau) * o, rtol=1e-5, atol=1e-6)


def test_update_targets_is_a_noop_without_targets():
    model = build(tiny_config("simclr"))
    before = jax.tree.map(np.asarray, nnx.state(model))
    update_targets(model, step=0, total_steps=1)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray,
                                                                      nnx.state(model)))


def _error(config) -> str:
    with pytest.raises(ConfigError) as err:
        validate_model_config(config)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_validation_errors_name_the_field():
    c = tiny_config("simclr")
    c.method.name = "dino"
    assert _error(c).startswith("method.name")
    c = tiny_config("simclr")
    c.augself.colour = 1.0
    assert "augself key" in _error(c) and "colour" in _error(c)
    c = tiny_config("simclr")
    c.augself.crop = -0.5
    assert _error(c).startswith("augself.crop")
    c = tiny_config("simclr", cassle={})
    c.cassle.descriptor_keys = "blur,hue"
    assert _error(c).startswith("cassle.descriptor_keys") and "hue" in _error(c)
    c = tiny_config("simclr", cassle={})
    c.cassle.mode = "proj-sub"
    assert _error(c).startswith("cassle.mode")
    c = tiny_config("simclr")
    c.cassle.extra = 1
    assert "cassle key" in _error(c)
    c = tiny_config("moco")
    c.method.queue_size = 8
    assert _error(c).startswith("method.queue_size")
    c = tiny_config("simclr")
    c.model.backbone = "resnet34"
    assert _error(c).startswith("model.backbone")
    validate_model_config(tiny_config("byol", augself={"crop": 1.0}, cassle={"mode": "raw"}))

"""MoCo v3 and SwAV against NumPy references, their heads and schedules, BYOL's AugSelf view
option, the method registry, and both new methods through the real train step with AugSelf
and CASSLE (MoCo v3 on a shallow ViT)."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_methods_support import FAST, build, fast_call, synthetic_batch
from test_train_support import ROOT, host_leaves, load_config, tiny_config, two_real_steps

from augself_jax.errors import ConfigError
from augself_jax.methods import (
    Momentum,
    compute_loss,
    registry,
    update_targets,
    validate_model_config,
)
from augself_jax.methods.mocov3 import mocov3_loss
from augself_jax.methods.swav import sinkhorn, swav_loss


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_contrastive(q, k, t):
    logits = _unit(q) @ _unit(k).T / t
    return -np.mean(np.diag(_log_softmax(logits))) * 2 * t


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_loss_matches_numpy(t):
    rng = np.random.default_rng(0)
    q1, q2, k1, k2 = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4))
    want = _np_contrastive(q1, k2, t) + _np_contrastive(q2, k1, t)
    np.testing.assert_allclose(mocov3_loss(q1, q2, k1, k2, t), want, rtol=1e-5)
    # Perfectly aligned, well-separated pairs: each CE tends to 0.
    eye = np.eye(6, 5 + 1)[:, :5].astype(np.float32) * 50
    eye[5] = -eye[:5].sum(0)
    assert float(mocov3_loss(eye, eye, eye, eye, 0.05)) < 1e-3


def _np_sinkhorn(scores, eps, iters):
    """The AugSelf reference's distributed_sinkhorn on one process, written out in NumPy."""
    q = np.exp(scores.astype(np.float64) / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q *= ((1 / k) / q.sum(1))[:, None]
        q *= ((1 / b) / q.sum(0))[None, :]
    return (q / q.sum(0, keepdims=True)).T


def test_sinkhorn_matches_numpy_and_is_doubly_stochastic():
    rng = np.random.default_rng(1)
    scores = np.clip(rng.normal(0, 0.5, (12, 7)), -1, 1).astype(np.float32)
    np.testing.assert_allclose(sinkhorn(scores, 0.05, 3), _np_sinkhorn(scores, 0.05, 3),
                               rtol=1e-4, atol=1e-6)
    codes = np.asarray(sinkhorn(scores, 0.05, 3))
    np.testing.assert_allclose(codes.sum(1), 1.0, rtol=1e-5)  # each example: a distribution
    # Run to convergence: every prototype then receives an equal share B/K of the batch.
    converged = np.asarray(sinkhorn(scores, 0.5, 200))
    np.testing.assert_allclose(converged.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(converged.sum(0), 12 / 7, rtol=1e-3)
    # Prototype 0 favoured by every example: plain argmax sends 7 of the 12 examples there
    # and leaves two prototypes unused; the balanced codes use every prototype and give
    # prototype 0 no more than the others' share (12 / 7 rounds up to 2, plus one for ties).
    skewed = scores.copy()
    skewed[:, 0] += 0.5
    plain = np.bincount(np.argmax(skewed, 1), minlength=7)
    assert plain[0] == 7 and (plain == 0).sum() == 2  # the case is as skewed as it claims
    balanced = np.bincount(np.argmax(np.asarray(sinkhorn(skewed, 0.5, 200)), 1), minlength=7)
    assert balanced.min() >= 1 and balanced.max() <= 3, balanced
    # Scores of unit vectors at their extremes (+-1) neither overflow nor underflow.
    assert np.all(np.isfinite(np.asarray(sinkhorn(np.sign(scores), 0.05, 3))))


def test_swav_loss_matches_numpy():
    rng = np.random.default_rng(2)
    s1, s2 = (np.clip(rng.normal(0, 0.5, (8, 5)), -1, 1).astype(np.float32) for _ in range(2))
    q1, q2 = _np_sinkhorn(s1, 0.05, 3), _np_sinkhorn(s2, 0.05, 3)
    want = (-np.mean(np.sum(q1 * _log_softmax(s2 / 0.1), 1))
            - np.mean(np.sum(q2 * _log_softmax(s1 / 0.1), 1)))
    np.testing.assert_allclose(swav_loss(s1, s2, 0.05, 3, 0.1), want, rtol=1e-4)
    # The codes are targets: the gradient is that of a cross-entropy with fixed targets,
    # d/ds2 [-mean_b sum_k q1 log softmax(s2 / T)] = (softmax(s2 / T) - q1) / (T B).
    g = jax.grad(lambda s: swav_loss(jax.lax.stop_gradient(s1), s, 0.05, 3, 0.1)
                 - swav_loss(jax.lax.stop_gradient(s1), jax.lax.stop_gradient(s), 0.05, 3, 0.1)
                 )(s2)
    q2_term = jax.grad(lambda s: -jnp.mean(jnp.sum(
        sinkhorn(s, 0.05, 3) * jax.nn.log_softmax(jnp.asarray(s1) / 0.1), -1)))(s2)
    assert float(jnp.abs(q2_term).sum()) == 0.0  # nothing flows through the codes
    np.testing.assert_allclose(g, (np.exp(_log_softmax(s2 / 0.1)) - q1) / (0.1 * 8),
                               rtol=1e-3, atol=1e-6)


def _abstract(config):
    from augself_jax.methods import build_model

    return nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))


def _vit(config, depth=1, patch=8):
    config.model.update(backbone="vit_small", patch_size=patch, vit_depth=depth)
    config.data.image_size = 16
    return config


def test_mocov3_heads_follow_the_reference_per_backbone():
    resnet = _abstract(tiny_config("mocov3"))
    assert [lin.out_features for lin in resnet.projector.linears] == [32, 16]
    assert resnet.projector.norms[-1].scale is None  # BN without affine parameters
    assert resnet.predictor.norms[-1] is None  # the ResNet predictor ends in a Linear
    vit = _abstract(_vit(tiny_config("mocov3")))
    assert vit.backbone.num_features == 384
    assert [lin.out_features for lin in vit.projector.linears] == [32, 32, 16]
    assert vit.predictor.norms[-1] is not None and vit.predictor.norms[-1].scale is None
    # Targets: backbone and projector (and nothing else); no queue.
    assert vit.target_backbone is not None and vit.target_projector is not None
    assert not hasattr(vit, "target_predictor") and vit.queue is None


def test_recipes_per_backbone():
    vit = load_config("mocov3_cassle", "stl10,vit_small")
    assert (vit.model.backbone, vit.optimizer.name, vit.optimizer.base_lr,
            vit.optimizer.weight_decay, vit.optimizer.warmup_epochs) == (
        "vit_small", "adamw", 1.5e-4, 0.1, 40.0)
    resnet = load_config("mocov3_augself", "imagenet100")
    assert (resnet.model.backbone, resnet.optimizer.name, resnet.optimizer.base_lr,
            resnet.optimizer.weight_decay) == ("resnet50", "lars", 0.6, 1e-6)
    from augself_jax.methods.mocov3 import temperature

    assert (temperature(vit), temperature(resnet)) == (0.2, 1.0)
    vit.method.mocov3_temperature = 0.5
    assert temperature(vit) == 0.5
    for imagenet in ("imagenet100", "imagenet1k"):
        assert load_config("simsiam_augself", imagenet).method.simsiam_proj_layers == 3
    assert load_config("simsiam_augself", "stl10").method.simsiam_proj_layers == 2
    swav = load_config("swav_augself", "stl10").method
    assert (swav.swav_prototypes, swav.swav_freeze_steps) == (100, 409)
    assert load_config("swav_augself", "shapes").method.swav_freeze_steps == 0


def _update(model, step, total_steps):
    update_targets(model, step=step, total_steps=total_steps)


def test_mocov3_momentum_rises_by_cosine_to_one():
    config = tiny_config("mocov3", mocov3_momentum=0.9)
    model = build(config)
    online = np.asarray(model.projector.linears[0].kernel[...])
    # Move the online weights away from the target so that the EMA is visible.
    model.projector.linears[0].kernel[...] = jnp.asarray(online + 1.0)
    target = np.asarray(model.target_projector.linears[0].kernel[...])
    for step, total in ((0, 10), (5, 10)):
        tau = 1 - 0.1 * (np.cos(np.pi * step / total) + 1) / 2
        before = np.asarray(model.target_projector.linears[0].kernel[...])
        fast_call(model, _update, step, total)
        np.testing.assert_allclose(model.target_projector.linears[0].kernel[...],
                                   tau * before + (1 - tau) * (online + 1.0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(target, model.target_projector.linears[0].kernel[...])
    fast_call(model, _update, 10, 10)  # tau = 1: frozen
    frozen = np.asarray(model.target_projector.linears[0].kernel[...])
    fast_call(model, _update, 10, 10)
    np.testing.assert_array_equal(frozen, model.target_projector.linears[0].kernel[...])
    # The CASSLE reference's constant momentum.
    from augself_jax.methods.mocov3 import Hyper, momentum

    hp = Hyper(temperature=0.2, momentum=0.999, schedule="constant")
    assert [float(momentum(hp, t, 10)) for t in (0, 5, 10)] == pytest.approx([0.999] * 3)


def _prototype_norms(model):
    return np.linalg.norm(np.asarray(model.prototypes.kernel[...]), axis=0)


def test_swav_prototypes_are_unit_norm_and_frozen_at_first():
    config = tiny_config("swav", swav_prototypes=10, swav_freeze_steps=3)
    model = build(config)
    assert model.prototypes.kernel.shape == (16, 10)
    np.testing.assert_allclose(_prototype_norms(model), 1.0, rtol=1e-5)
    batch = synthetic_batch()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, step):
        m = nnx.merge(graphdef, params, rest, copy=True)
        return compute_loss(m, batch, step=step, total_steps=10)[0]

    grad = jax.jit(jax.grad(loss), compiler_options=FAST)

    def grads(step):
        g = grad(params, step)
        return (float(jnp.linalg.norm(g["prototypes"]["kernel"][...])),
                float(jnp.linalg.norm(g["projector"]["linears"][0]["kernel"][...])))

    frozen, trained = grads(2), grads(3)
    assert frozen[0] == 0.0 and frozen[1] > 0
    assert trained[0] > 0
    model.prototypes.kernel[...] = model.prototypes.kernel[...] * 3.0
    fast_call(model, _update, 0, 10)
    np.testing.assert_allclose(_prototype_norms(model), 1.0, rtol=1e-5)


def test_byol_augself_reads_online_view2_by_default():
    import dataclasses

    from augself_jax.aware import augself

    model = build(tiny_config("byol", augself={"crop": 1.0}))
    assert model.settings.hp.augself_view2 == "online"
    batch = synthetic_batch()

    def run(m, batch):
        # Make the target differ from the online network, as it does once training starts.
        for _, var in nnx.iter_graph(m.target_backbone):
            if isinstance(var, Momentum):
                var[...] = var[...] * 0.5
        _, metrics = compute_loss(m, batch, step=0, total_steps=10)
        y1, y2 = m.backbone(batch["view1"]), m.backbone(batch["view2"])
        ty2 = m.target_backbone(batch["view2"])
        direct = {name: augself.augself_losses(m.augself_heads, y1, v2, batch["params1"],
                                               batch["params2"], m.settings.aug_settings)["crop"]
                  for name, v2 in (("online", y2), ("target", ty2))}
        return metrics["augself/crop"], direct

    got, direct = fast_call(model, run, batch)
    np.testing.assert_allclose(got, direct["online"], rtol=1e-5)
    assert not np.isclose(float(direct["online"]), float(direct["target"]))
    # The option: the settings are static, so swapping them is the config's other value.
    model.settings = dataclasses.replace(
        model.settings, hp=dataclasses.replace(model.settings.hp, augself_view2="target"))
    got, direct = fast_call(model, run, batch)
    np.testing.assert_allclose(got, direct["target"], rtol=1e-5)


def test_registry_lists_every_method_and_their_fields():
    # Every method docs/METHOD.md section 4 documents (its table's first column) is
    # registered; a method added later joins the registry without joining a list here.
    with open(os.path.join(ROOT, "docs/METHOD.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("### The methods"):text.index("## 5.")]
    documented = set(re.findall(r"^\| `(\w+)`", table, re.M))
    assert len(documented) >= 8 and documented <= set(registry.names())
    c = load_config("simclr")
    for name, method in registry.entries().items():
        assert callable(method.forward) and callable(method.build_heads), name
        for field in method.defaults:
            assert field in c.method, (name, field)
    with pytest.raises(ConfigError, match="^method.name: 'dino' is unknown; allowed: barlow"):
        registry.get("dino")


@pytest.mark.parametrize("method, change, field", [
    ("mocov3", lambda m: setattr(m, "mocov3_proj_layers", 4), "method.mocov3_proj_layers"),
    ("mocov3", lambda m: setattr(m, "mocov3_momentum", 1.5), "method.mocov3_momentum"),
    ("mocov3", lambda m: setattr(m, "mocov3_momentum_schedule", "step"),
     "method.mocov3_momentum_schedule"),
    ("swav", lambda m: setattr(m, "swav_prototypes", 0), "method.swav_prototypes"),
    ("swav", lambda m: setattr(m, "swav_epsilon", 0.0), "method.swav_epsilon"),
    ("swav", lambda m: setattr(m, "swav_freeze_steps", -1), "method.swav_freeze_steps"),
    ("byol", lambda m: setattr(m, "byol_augself_view2", "both"), "method.byol_augself_view2"),
])
def test_bad_method_fields_are_one_line_errors(method, change, field):
    c = load_config("simclr")
    c.method.name = method
    change(c.method)
    with pytest.raises(ConfigError, match=f"^{field}"):
        validate_model_config(c)


@pytest.mark.parametrize("model, field", [
    ({"backbone": "vit_small", "patch_size": 7}, "model.patch_size"),
    ({"backbone": "vit_small", "vit_depth": -1}, "model.vit_depth"),
    ({"backbone": "vit_huge"}, "model.backbone"),
])
def test_bad_backbone_fields_are_one_line_errors(model, field):
    c = load_config("mocov3")
    c.model.update(model)
    with pytest.raises(ConfigError, match=f"^{field}"):
        validate_model_config(c)


def _two_real_steps(config):
    state, before, history = two_real_steps(config)
    for metrics in history:
        assert {"augself/crop", "augself/color", "ssl_loss"} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert history[0]["loss"] != history[1]["loss"]
    moved = [not np.array_equal(a, b) for a, b in zip(before, host_leaves(state.params),
                                                      strict=True)]
    assert sum(moved) > len(moved) // 2
    return state


def test_mocov3_vit_with_augself_and_cassle_trains_through_the_real_step():
    # The ViT named in the preset argument, as a user writes `mocov3_cassle.py:shapes,
    # vit_small`: the recipe follows the backbone (AdamW, wd 0.1, T 0.2, 3-layer projector).
    config = _vit(tiny_config("mocov3_cassle", preset="shapes,vit_small", steps=2))
    config.augself.crop = config.augself.color = 1.0
    validate_model_config(config)
    assert config.optimizer.name == "adamw" and config.optimizer.weight_decay == 0.1
    assert config.method.mocov3_temperature in (-1, 0.2)  # -1: picked by backbone (0.2)
    state = _two_real_steps(config)
    target = host_leaves(state.rest["target_backbone"])
    assert all(np.all(np.isfinite(t)) for t in target)
    assert "target_cassle" in state.rest


def test_swav_with_augself_and_cassle_trains_through_the_real_step():
    config = tiny_config("swav_cassle", steps=2, swav_prototypes=12, swav_freeze_steps=1)
    config.augself.crop = config.augself.color = 1.0
    validate_model_config(config)
    state = _two_real_steps(config)
    (kernel,) = host_leaves(state.params["prototypes"])
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_main_trains_mocov3_cassle_on_a_vit(shapes_data_dir, tmp_path):
    from conftest import run_command
    from test_train_support import ROOT

    proc = run_command(["main.py", "--config=configs/mocov3_cassle.py:shapes,vit_small",
                        f"--workdir={tmp_path / 'run'}", "--config.total_steps=2",
                        "--config.batch_size=16", "--config.log_every=1",
                        "--config.checkpoint_every=2", "--config.knn_every=0",
                        "--config.model.vit_depth=1", "--config.model.patch_size=8",
                        "--config.method.proj_hidden=64", "--config.method.pred_hidden=64",
                        "--config.method.proj_out=32", "--config.augself.crop=1.0",
                        "--config.xla_fast_compile=True",
                        f"--config.data.data_dir={shapes_data_dir}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done: 2 steps" in proc.stdout + proc.stderr

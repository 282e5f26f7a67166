"""A tiny model learns on the built-in dataset: every method's loss falls, and the AugSelf colour
head beats predicting zero."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_methods_support import FAST, build
from test_train_support import tiny_config

from augself_jax.augs import StaticSettings
from augself_jax.data import registry as datasets
from augself_jax.data.photometric import apply_photometric, normalize
from augself_jax.data.pipeline import make_pretrain_iterator
from augself_jax.methods import compute_loss, registry, update_targets

STEPS = 30


def shapes_config(method: str, data_dir: str, **augself):
    c = tiny_config(method, augself=augself, num_classes=-1)
    c.batch_size = 32
    c.data.data_dir = data_dir
    c.model.width = 8
    c.method.update(proj_hidden=64, proj_out=32, pred_hidden=16)
    c.augself.hidden = 32
    # SwAV's prototypes stay frozen through the 30 steps, as the method's own default (409
    # steps) keeps them and as this test's bar was set; the shapes recipe's 0 (prototypes
    # trained from step 0) was measured at 61.3% against 51.1% untrained, under the bar.
    c.method.swav_freeze_steps = STEPS
    return c


def make_step(config, model, lr: float, total_steps: int):
    info = datasets.get(config.data.dataset)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(lr, momentum=0.9)

    def prepare(batch):
        out = {"label": batch["label"]}
        for v in ("1", "2"):
            images, rec = apply_photometric(batch[f"view{v}"], batch[f"params{v}"],
                                            StaticSettings.from_aug(config.aug))
            out[f"view{v}"] = normalize(images, info.mean, info.std)
            out[f"params{v}"] = rec
        return out

    def step(params, rest, opt_state, batch, i):
        inputs = prepare(batch)

        def loss_fn(params, rest):
            m = nnx.merge(graphdef, params, rest, copy=True)
            loss, metrics = compute_loss(m, inputs, step=i, total_steps=total_steps)
            return loss, (metrics, nnx.state(m, nnx.Not(nnx.Param)))

        grads, (metrics, rest) = jax.grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        m = nnx.merge(graphdef, params, rest)
        update_targets(m, step=i, total_steps=total_steps)
        _, params, rest = nnx.split(m, nnx.Param, ...)
        return params, rest, opt_state, metrics, inputs

    return jax.jit(step, compiler_options=FAST), (params, rest, tx.init(params))


def train(config, lr: float = 0.1, steps: int = STEPS):
    model = build(config)
    step, (params, rest, opt_state) = make_step(config, model, lr, steps)
    history = []
    for i, batch in enumerate(itertools.islice(make_pretrain_iterator(config), steps)):
        params, rest, opt_state, metrics, inputs = step(params, rest, opt_state, batch, i)
        history.append((jax.device_get(metrics), inputs))
    return history


def _mean(history, key, part):
    return float(np.mean([m[key] for m, _ in part(history)]))


def _falls(history, key="loss"):
    losses = [float(m[key]) for m, _ in history]
    assert np.all(np.isfinite(losses)), losses
    # From step 2 on: MoCo's loss first rises while real keys replace the random queue.
    first, last = np.mean(losses[2:12]), np.mean(losses[-10:])
    assert last < first, (key, losses)


SLOW = pytest.mark.slow  # 30-100 s each on 2 busy cores; the SimCLR + AugSelf run is the default


# Every registered method, a new one included, but SimCLR (its AugSelf run below is the
# default test) and MoCo v3 and SwAV (their learning runs are the shape test below).
LEARNING_ELSEWHERE = ("simclr", "mocov3", "swav")


@pytest.mark.parametrize("method", [pytest.param(m, marks=SLOW) for m in registry.names()
                                    if m not in LEARNING_ELSEWHERE])
def test_loss_falls(method, shapes_data_dir):
    lr = 0.02 if method == "barlow" else 0.1  # Barlow's summed loss has large gradients
    _falls(train(shapes_config(method, shapes_data_dir), lr=lr))


# Slow: 40 steps on the built-in dataset (one to two minutes on 2 cores); every method's loss
# runs in the default suite through the real step (test_train_experiments).
@SLOW
def test_simclr_learns_and_augself_color_head_beats_predicting_zero(shapes_data_dir):
    from augself_jax.aware.augself import pair_targets

    config = shapes_config("simclr", shapes_data_dir, color=1.0, crop=1.0)
    history = train(config, lr=0.2, steps=40)
    _falls(history, "ssl_loss")
    _falls(history, "augself/color")
    ranges = StaticSettings.from_aug(config.aug)
    zero_losses = []
    for _, inputs in history[-10:]:
        t12 = pair_targets(inputs["params1"], inputs["params2"], ranges, augs=("color",))["color"]
        t21 = pair_targets(inputs["params2"], inputs["params1"], ranges, augs=("color",))["color"]
        zero_losses.append(float(jnp.mean(jnp.concatenate([t12, t21]) ** 2)))  # tanh(0) = 0
    head = _mean(history, "augself/color", lambda h: h[-10:])
    assert head < np.mean(zero_losses), (head, np.mean(zero_losses))


def _shape_knn(config, model, n_memory: int = 2000, n_query: int = 1000) -> float:
    """1-NN shape accuracy (%) of the backbone's eval-mode features on unaugmented images:
    the first n_memory train images as memory, the first n_query test images as queries."""
    import tensorflow_datasets as tfds

    from augself_jax.evaluation.knn import knn_accuracy

    info = datasets.get(config.data.dataset)
    source = tfds.data_source("augself_shapes/32px", data_dir=config.data.data_dir)
    model.eval()
    embed = jax.jit(lambda x: model.backbone(normalize(x, info.mean, info.std)))

    def features(split, n):
        rows = [source[split][i] for i in range(n)]
        images = np.stack([r["image"] for r in rows]).astype(np.float32) / 255.0
        return np.asarray(embed(jnp.asarray(images))), np.array([r["shape"] for r in rows])

    (mx, my), (qx, qy) = features("train", n_memory), features("test", n_query)
    return knn_accuracy(mx, my, qx, qy, ks=(1,), num_classes=4)[1]


def _trained_model(config, lr: float, steps: int):
    model = build(config)
    graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    step, (params, rest, opt_state) = make_step(config, model, lr, steps)
    for i, batch in enumerate(itertools.islice(make_pretrain_iterator(config), steps)):
        params, rest, opt_state, _, _ = step(params, rest, opt_state, batch, i)
    return nnx.merge(graphdef, params, rest)


# Slow: 150 steps and two feature passes (one to three minutes on 2 cores). At the full hue
# circle colour is no cue, so the shape is what the two views share. (At 80 steps and lr 0.1
# the margins were 8 points for SwAV and 13 for MoCo v3; at 150 steps and lr 0.2 SwAV's was
# 20: 71.2% against 51.1%.)
@SLOW
@pytest.mark.parametrize("method", ["swav", "mocov3"])
def test_learns_shape_over_the_untrained_network(method, shapes_data_dir):
    config = shapes_config(method, shapes_data_dir)
    config.aug.hue = 0.5
    untrained = _shape_knn(config, build(config))
    trained = _shape_knn(config, _trained_model(config, lr=0.2, steps=150))
    # Chance is 25% (4 balanced shapes).
    assert trained > untrained + 15.0, (method, trained, untrained)

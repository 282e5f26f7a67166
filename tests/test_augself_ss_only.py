"""augself.ss_only (the references' --ss-only): the AugSelf heads and the backbone train on the
heads' losses alone. The SSL term is absent from the gradient (the projector gets none), the
real train step runs, and validation refuses the switch without a head, before compiling."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import copy_checkout, run_command
from flax import nnx
from test_methods_support import FAST, build, synthetic_batch
from test_train_support import host_leaves, tiny_config, two_real_steps

from augself_jax.errors import ConfigError
from augself_jax.methods import compute_loss, validate_model_config


def _grads_and_metrics(config):
    """(gradient norm of each top-level part, the step's metrics) in one compile."""
    model = build(config)
    batch = synthetic_batch()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        m = nnx.merge(graphdef, params, rest, copy=True)
        return compute_loss(m, batch, step=0, total_steps=10)

    (_, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True),
                                  compiler_options=FAST)(params)
    norms = {part: float(np.sqrt(sum(np.sum(np.square(x)) for x in host_leaves(g))))
             for part, g in grads.items()}
    return norms, {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("method", [
    "simclr", pytest.param("byol", marks=pytest.mark.slow)])  # byol: a predictor too
def test_the_ssl_term_is_absent_from_the_gradient(method):
    heads = {"crop": 1.0, "color": 0.5}
    on, m_on = _grads_and_metrics(tiny_config(method, augself={**heads, "ss_only": True}))
    off, m_off = _grads_and_metrics(tiny_config(method, augself=heads))
    assert on["projector"] == 0.0 and off["projector"] > 0  # the SSL head learns nothing
    if method == "byol":
        assert on["predictor"] == 0.0 and off["predictor"] > 0
    assert on["backbone"] > 0 and on["augself_heads"] > 0
    # The loss is the heads' weighted sum alone; the SSL loss is still computed and logged.
    heads_only = m_on["augself/crop"] + 0.5 * m_on["augself/color"]
    assert m_on["loss"] == pytest.approx(heads_only, rel=1e-5)
    assert m_off["loss"] == pytest.approx(heads_only + m_off["ssl_loss"], rel=1e-5)
    assert m_on["ssl_loss"] == pytest.approx(m_off["ssl_loss"], rel=1e-5)
    assert m_on["ssl_loss"] > 0.1  # a real loss, left out


def test_ss_only_trains_through_the_real_step():
    config = tiny_config("simclr_augself", steps=2)
    config.augself.ss_only = True
    validate_model_config(config)
    state, before, history = two_real_steps(config)
    for metrics in history:
        assert {"augself/crop", "augself/color", "ssl_loss"} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        # The reported loss is the heads' weighted sum (weights 1 in this experiment).
        np.testing.assert_allclose(metrics["loss"],
                                   metrics["augself/crop"] + metrics["augself/color"],
                                   rtol=1e-5)
    moved = [not np.array_equal(a, b) for a, b in zip(before, host_leaves(state.params),
                                                      strict=True)]
    assert sum(moved) > len(moved) // 2


def test_ss_only_without_a_head_is_refused():
    with pytest.raises(ConfigError, match=r"^augself.ss_only: .*allowed: ss_only False, or a "
                                          r"weight > 0 for one of .*crop"):
        tiny_config("simclr", augself={"ss_only": True})


def test_command_line_refuses_ss_only_without_a_head(tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    r = run_command(["main.py", "--config=configs/simclr.py:shapes", "--workdir=runs/ss",
                     "--config.augself.ss_only=True"], cwd=checkout)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith("config error: augself.ss_only: ")
    assert not os.path.exists(os.path.join(checkout, "runs", "ss"))  # nothing written


@pytest.mark.slow  # a compile and two steps from the command line (~1-2 min on 2 cores)
def test_command_line_ss_only_trains(tmp_path, shapes_data_dir):
    checkout = copy_checkout(tmp_path / "checkout")
    r = run_command(["main.py", "--config=configs/simclr_augself.py:shapes",
                     "--workdir=runs/ss", "--config.augself.ss_only=True",
                     "--config.total_steps=2", "--config.batch_size=16",
                     "--config.log_every=1", "--config.knn_every=0",
                     f"--config.data.data_dir={shapes_data_dir}"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(checkout, "runs", "ss", "config.json")) as f:
        assert json.load(f)["augself"]["ss_only"] is True

"""What the ViT step's profile on a CPU established (docs/RESULTS.md section 3): the train step
compiles once for a stream of distinct batches, and under bfloat16 the attention logits
reach the softmax in float32 without a bfloat16 rounding on the way."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

from step_inputs import make_config, synthetic_batch  # noqa: E402

from augself_jax.models.vit import Block  # noqa: E402

TINY = dict(backbone="resnet18", stem="cifar", width=8, image_size=16, small_heads=True)


def test_rotating_batches_compile_the_cassle_step_once():
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib
    from augself_jax.train.prefetch import device_batches
    from augself_jax.train.step import STEP_KEYS, make_train_step

    config = make_config("simclr", "cassle", batch=8, **TINY)  # one encoder: a quick compile
    config.xla_fast_compile = True
    mesh = mesh_lib.make_mesh(config, jax.devices()[:1])
    setup = state_lib.make_setup(config, mesh, num_steps=100)
    step = make_train_step(config, setup)
    state = state_lib.init_state(config, setup)
    ring = [synthetic_batch(8, 16, seed=i) for i in range(4)]
    losses = []
    for batch in device_batches(iter(ring * 2), mesh, STEP_KEYS, 0):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1  # eight steps, four distinct batches: one program
    assert len(set(losses[:4])) == 4 and np.all(np.isfinite(losses))  # they were distinct


def test_bf16_attention_logits_are_float32_from_the_product_on():
    block = Block(48, 4, jnp.bfloat16, nnx.Rngs(0))
    graphdef, state = nnx.split(block)
    x = jnp.ones((2, 5, 48), jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s).attention(x))(state, x)
    products = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    logits = [e for e in products if e.outvars[0].aval.shape == (2, 4, 5, 5)]
    assert len(logits) == 1 and logits[0].outvars[0].aval.dtype == jnp.float32
    assert all(e.invars[0].aval.dtype == jnp.bfloat16 for e in logits)  # bf16 operands
    exps = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "exp"]
    assert exps and all(e.outvars[0].aval.dtype == jnp.float32 for e in exps)

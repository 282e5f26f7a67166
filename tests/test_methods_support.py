"""Helpers shared by the methods tests (no tests here): fast builds, batches; the tiny
configs are test_train_support's `tiny_config` (a method's own config file, made tiny)."""

import jax
import numpy as np
from flax import nnx

from augself_jax.augs import records
from augself_jax.methods import build_model
from augself_jax.train.mesh import fast_compile_options

# CPU compile time dominates a tiny model's cost; the trainer's fast-compile options cut it.
FAST = fast_compile_options()


def fast_build(make) -> nnx.Module:
    """make() run as one fast-compiled program (eager init compiles every op on its own)."""
    graphdef, _ = nnx.split(nnx.eval_shape(make))
    state = jax.jit(lambda: nnx.state(make()), compiler_options=FAST)()
    return nnx.merge(graphdef, state)


def fast_call(module: nnx.Module, fn, *args):
    """fn(module, *args) as one fast-compiled program; the module's state updates in place."""
    graphdef, state = nnx.split(module)

    def run(state, *args):
        m = nnx.merge(graphdef, state)
        out = fn(m, *args)
        return out, nnx.state(m)

    out, new_state = jax.jit(run, compiler_options=FAST)(state, *args)
    nnx.update(module, new_state)
    return out


def build(config, seed: int = 0) -> nnx.Module:
    """build_model in train mode, built fast."""
    def make():
        model = build_model(config, nnx.Rngs(seed))
        model.train()
        return model

    return fast_build(make)


def synthetic_batch(b: int = 16, size: int = 16, seed: int = 0, classes: int = 4) -> dict:
    """Random views and labels; each view's parameter record drawn by the augmentation
    registry's own samplers (every key it declares, applied and not-applied views)."""
    rng = np.random.default_rng(seed)
    return {"view1": rng.normal(size=(b, size, size, 3)).astype(np.float32),
            "view2": rng.normal(size=(b, size, size, 3)).astype(np.float32),
            "params1": records.sample_record(b, seed=2 * seed),
            "params2": records.sample_record(b, seed=2 * seed + 1),
            "label": rng.integers(0, classes, b).astype(np.int32)}

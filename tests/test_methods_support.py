"""Helpers shared by the methods tests (no tests here): tiny configs, fast builds, batches."""

import jax
import numpy as np
from flax import nnx

from augself_jax.methods import build_model, validate_model_config
from configs.common import base_config

# CPU compile time dominates a tiny model's cost; these options cut it several-fold.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def tiny_config(method: str = "simclr", *, augself: dict | None = None,
                cassle: dict | None = None, **method_fields):
    c = base_config("shapes")
    c.batch_size = 16
    c.model.width = 4
    c.method.name = method
    fields = dict(proj_hidden=32, proj_out=16, pred_hidden=8, queue_size=64, num_classes=5)
    c.method.update({**fields, **method_fields})
    c.augself.hidden = 16
    c.augself.update(augself or {})
    if cassle is not None:
        c.cassle.enabled = True
        c.cassle.width = 8
        c.cassle.update(cassle)
    validate_model_config(c)
    return c


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


def record(rng: np.random.Generator, b: int) -> dict:
    """A random parameter record of the contract's shapes (docs/METHOD.md section 1)."""
    applied = rng.integers(0, 2, b).astype(np.float32)
    color = np.where(applied[:, None] > 0, rng.uniform(0.6, 1.4, (b, 4)), [1, 1, 1, 0])
    color[:, 3] = np.where(applied > 0, rng.uniform(-0.1, 0.1, b), 0.0)
    top_left = rng.uniform(0, 0.5, (b, 2))
    size = rng.uniform(0.3, 0.5, (b, 2))
    return {
        "crop": np.concatenate([top_left, size], 1).astype(np.float32),
        "flip": rng.integers(0, 2, b).astype(np.float32),
        "color": color.astype(np.float32),
        "color_applied": applied,
        "color_order": np.tile(np.arange(4, dtype=np.int32), (b, 1)),
        "color_mean_shift": (rng.normal(0, 0.05, (b, 3)) * applied[:, None]).astype(np.float32),
        "gray": rng.integers(0, 2, b).astype(np.float32),
        "blur": rng.uniform(0.1, 2.0, b).astype(np.float32),
        "solarize": rng.uniform(0, 1, b).astype(np.float32),
        "rotation": rng.integers(0, 4, b).astype(np.int32),
    }


def synthetic_batch(b: int = 16, size: int = 16, seed: int = 0, classes: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    return {"view1": rng.normal(size=(b, size, size, 3)).astype(np.float32),
            "view2": rng.normal(size=(b, size, size, 3)).astype(np.float32),
            "params1": record(rng, b), "params2": record(rng, b),
            "label": rng.integers(0, classes, b).astype(np.int32)}

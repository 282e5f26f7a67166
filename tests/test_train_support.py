"""Helpers for the trainer's tests: tiny configs and synthetic two-view batches (no tests here).

Synthetic batches follow the pipeline's host batch and its parameter record
(docs/METHOD.md), so that the step, sharding and checkpoint tests do not pay for tf.data.
"""

import importlib.util
import os

import jax
import ml_collections
import numpy as np

from augself_jax.augs import records
from augself_jax.methods import validate_model_config
from augself_jax.train import mesh as mesh_lib
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, preset: str = "shapes") -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def config_with(overrides: dict, data_dir: str,
                name: str = "simclr_augself") -> ml_collections.ConfigDict:
    """An experiment's shapes config with dotted-key `overrides` (as the command line's
    `--config.a.b=v`) applied in-process, reading the dataset from `data_dir`."""
    config = load_config(name)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.data.data_dir = data_dir
    return config


def tiny_config(name: str = "simclr_augself", *, preset: str = "shapes", batch: int = 16,
                steps: int = 4, augself: dict | None = None, cassle: dict | None = None,
                **method: object) -> ml_collections.ConfigDict:
    """The smallest config that still runs every part of the method: configs/<name>.py (or,
    for a method without a plain config file, `common.experiment` of that method) with
    ResNet-18 of width 4 (`preset` as the config file's argument, e.g. "shapes,vit_small").
    `augself` updates the AugSelf section; `cassle` (a dict, {} for the defaults) switches
    CASSLE on and updates its section; `method` updates the method's fields. Validated as
    a model config, so a bad field fails here."""
    if os.path.isfile(os.path.join(ROOT, "configs", f"{name}.py")):
        c = load_config(name, preset)
    else:
        c = common.experiment(preset, name)
    c.batch_size = batch
    c.total_steps = steps
    c.log_every = 2
    c.checkpoint_every = 2
    c.knn_every = 0
    c.xla_fast_compile = True
    c.model.width = 4
    c.augself.hidden = 16
    c.augself.update(augself or {})
    c.method.queue_size = 64
    c.method.proj_hidden = 32
    c.method.proj_out = 16
    c.method.pred_hidden = 16
    c.cassle.width = 8
    c.cassle.depth = 2
    if cassle is not None:
        c.cassle.enabled = True
        c.cassle.update(cassle)
    for key, value in method.items():
        c.method[key] = value
    validate_model_config(c)
    return c


def synthetic_host_batch(config: ml_collections.ConfigDict, step: int, size: int = 16) -> dict:
    """A deterministic host batch for `step`: random pixels and labels, and each view's
    parameter record drawn by the augmentation registry's own samplers at `config.aug`."""
    rng = np.random.default_rng([config.seed, step])
    b = config.batch_size
    seeds = rng.integers(0, 2**31, 2)

    def record(seed) -> dict:
        return records.sample_record(b, seed=int(seed), aug=config.aug, height=size,
                                     width=size)

    return {
        "view1": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
        "view2": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
        "params1": record(seeds[0]),
        "params2": record(seeds[1]),
        "label": rng.integers(0, 4, b).astype(np.int32),
    }


def host_leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def two_real_steps(config: ml_collections.ConfigDict):
    """Two steps of the real jitted train step on synthetic batches: (state after, the
    parameters' host values before, each step's metrics as floats)."""
    from augself_jax.data.global_batch import make_global_batch
    from augself_jax.train import state as state_lib
    from augself_jax.train.step import make_train_step

    setup = state_lib.make_setup(config, mesh_lib.make_mesh(config, jax.devices()[:1]))
    state = state_lib.init_state(config, setup)
    before = host_leaves(state.params)
    step = make_train_step(config, setup)
    history = []
    for k in range(2):
        state, metrics = step(state, make_global_batch(synthetic_host_batch(config, k), setup.mesh))
        history.append({m: float(v) for m, v in jax.device_get(metrics).items()})
    return state, before, history

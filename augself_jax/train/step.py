"""The pure, jitted train step over the sharded global batch.

uint8 views (geometric ops done in tf.data) -> photometric ops with their recorded
parameters + normalisation on the device -> method loss -> optax update -> momentum
targets. The arrays are global, so batch-norm statistics, SimCLR negatives and Barlow
Twins correlations span the whole batch without hand-written collectives.

There is no random op here: every augmentation parameter was drawn (and recorded) by
the pipeline, and any nnx RNG state a model keeps travels in `state.rest`, so a step is
a pure function of (state, batch) and a resumed run repeats an uninterrupted one.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from augself_jax.train import mesh as mesh_lib
from augself_jax.train.state import Setup, TrainState, state_shardings

# The host batch keys the step consumes ('index' stays on the host).
STEP_KEYS = ("view1", "view2", "params1", "params2", "label")


def prepare_views(config: ml_collections.ConfigDict, batch: dict,
                  photometric: Callable | None = None) -> dict:
    """Photometric ops and normalisation of both uint8 views: compute_loss's input.
    `photometric(views, params, settings)`: the chain to apply (default: data.photometric's;
    the cost benchmark passes the former chain to compare the two)."""
    from augself_jax.augs import StaticSettings
    from augself_jax.data import registry as datasets
    from augself_jax.data.photometric import apply_photometric, normalize

    photometric = photometric or apply_photometric
    settings = StaticSettings.from_aug(config.aug)
    info = datasets.get(config.data.dataset)
    out = {"label": batch["label"]}
    for view in ("1", "2"):
        images, params = photometric(batch[f"view{view}"], batch[f"params{view}"], settings)
        out[f"view{view}"] = normalize(images, jnp.asarray(info.mean), jnp.asarray(info.std))
        out[f"params{view}"] = params
    return out


def make_train_step(config: ml_collections.ConfigDict,
                    setup: Setup) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """jit(step)(state, global_batch) -> (state, metrics); the input state is donated."""
    from augself_jax.methods import compute_loss, update_targets

    graphdef, tx, schedule, num_steps = setup.graphdef, setup.tx, setup.schedule, setup.num_steps

    def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict[str, Any]]:
        inputs = prepare_views(config, batch)

        def loss_fn(params: nnx.State, rest: nnx.State):
            # copy=True: Variables made under this grad trace may be mutated in it (BatchNorm).
            model = nnx.merge(graphdef, params, rest, copy=True)
            loss, metrics = compute_loss(model, inputs, step=state.step, total_steps=num_steps)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (metrics, new_rest)

        grads, (metrics, rest) = jax.grad(loss_fn, has_aux=True)(state.params, state.rest)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model = nnx.merge(graphdef, params, rest)
        update_targets(model, step=state.step, total_steps=num_steps)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        metrics = dict(metrics)
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = TrainState(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
        return new_state, metrics

    replicated = mesh_lib.replicated(setup.mesh)
    return jax.jit(step_fn, out_shardings=(state_shardings(setup), replicated),
                   donate_argnums=(0,),
                   compiler_options=mesh_lib.fast_compile_options(config.xla_fast_compile))

"""The train state: NNX split-state pytrees (trainable params, the other state, optax state).

The model's static structure (nnx GraphDef) lives outside the state, so the step is a pure
function of arrays. `rest` holds everything that is not an nnx.Param: batch statistics,
momentum targets, the MoCo queue.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from augself_jax.train import mesh as mesh_lib
from augself_jax.train import optimizers


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer steps taken == the data position (the next batch's index)
    params: nnx.State
    rest: nnx.State
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the step and the checkpoints need besides the state itself."""

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    num_steps: int
    abstract_state: TrainState  # ShapeDtypeStructs carrying the target shardings
    mesh: jax.sharding.Mesh


def _build(config: ml_collections.ConfigDict) -> nnx.Module:
    from augself_jax.methods import build_model

    model = build_model(config, nnx.Rngs(config.seed))
    model.train()
    return model


def _init_state(config: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> TrainState:
    _, params, rest = nnx.split(_build(config), nnx.Param, ...)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                      opt_state=tx.init(params))


def make_setup(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               num_steps: int | None = None) -> Setup:
    """Everything about the state except its values (nothing is computed)."""
    num_steps = optimizers.total_steps(config) if num_steps is None else num_steps
    abstract_model = nnx.eval_shape(lambda: _build(config))
    graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
    tx, schedule = optimizers.make_optimizer(
        config, abstract_params, num_steps,
        constant_lr=abstract_model.settings.method.constant_lr(config))
    shapes = jax.eval_shape(lambda: _init_state(config, tx))
    replicated = mesh_lib.replicated(mesh)
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)
    return Setup(graphdef=graphdef, tx=tx, schedule=schedule, num_steps=num_steps,
                 abstract_state=abstract_state, mesh=mesh)


def state_shardings(setup: Setup) -> Any:
    return jax.tree.map(lambda x: x.sharding, setup.abstract_state)


def init_state(config: ml_collections.ConfigDict, setup: Setup) -> TrainState:
    """Fresh parameters, created directly with their (replicated) shardings on every process.

    The init program runs once, so on CPU it is compiled without LLVM's expensive passes
    (seconds instead of half a minute for a ResNet).
    """
    return jax.jit(lambda: _init_state(config, setup.tx), out_shardings=state_shardings(setup),
                   compiler_options=mesh_lib.fast_compile_options())()


def merge_model(setup: Setup, state: TrainState) -> nnx.Module:
    """The live module (train mode) for a state; for evaluation and tests, outside jit."""
    return nnx.merge(setup.graphdef, state.params, state.rest)

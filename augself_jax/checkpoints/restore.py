"""Evaluation's restore: the pretrained backbone (or its momentum encoder) alone, from a
run's checkpoint, without building the pretraining model around it (the layout is
`store.py`'s). The export reads the same way.
"""

import json

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from augself_jax.checkpoints.store import (
    BEST,
    BEST_SUBDIR,
    CHECKPOINT_SUBDIR,
    META_FILE,
    all_steps,
    checkpoint_dir,
    failure_cause,
    first_non_finite,
    from_nested,
    open_manager,
    to_nested,
    tree_mismatch,
)
from augself_jax.errors import CheckpointError, ConfigError

ENCODERS = ("backbone", "target_backbone")  # what `restore_backbone(module=...)` reads


def _describe_model(config: ml_collections.ConfigDict) -> str:
    m = config.model
    return f"{m.backbone}, stem {m.stem}, width {m.width}"


def parse_step(value: str | int | None) -> int | str | None:
    """A --step value: None or '' (the latest), 'best', or a step number; else ConfigError."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text == BEST:
        return BEST
    if not text.isdigit():
        raise ConfigError(f"step: '{value}' is not a checkpoint step; allowed: a step number, "
                          f"'{BEST}' (the best kNN-monitor checkpoint) or nothing (the latest)")
    return int(text)


def _pick_step(workdir: str | epath.Path, step: int | str | None) -> tuple[str, int, list[int]]:
    """(subdir, step, that subdir's steps) of the checkpoint `step` names, or ConfigError."""
    steps = all_steps(workdir)
    if step == BEST:
        best = all_steps(workdir, BEST_SUBDIR)
        if not best:
            raise ConfigError(
                f"step: no best checkpoint in {checkpoint_dir(workdir, BEST_SUBDIR)} (it is "
                "kept only when the run had the kNN monitor on, knn_every > 0); allowed: "
                + (f"one of the steps {', '.join(map(str, steps))}, or no --step (the latest)"
                   if steps else "none, the workdir has no checkpoint"))
        return BEST_SUBDIR, best[-1], best
    if not steps:
        raise ConfigError(f"workdir: no checkpoint in {checkpoint_dir(workdir)}")
    if step is None:
        return CHECKPOINT_SUBDIR, steps[-1], steps
    if step not in steps:
        best = f" or {BEST}" if all_steps(workdir, BEST_SUBDIR) else ""
        raise ConfigError(f"step: no checkpoint at step {step} in {checkpoint_dir(workdir)}; "
                          f"allowed: {', '.join(map(str, steps))}{best}")
    return CHECKPOINT_SUBDIR, int(step), steps


def step_record(workdir: str | epath.Path, step: int | str | None) -> tuple[epath.Path, dict]:
    """(the directory, the JSON record) of the checkpoint `step` names (see restore_backbone);
    ConfigError for a step that is not there, {} for a record that cannot be read (the
    restore then names the cause)."""
    subdir, step, _ = _pick_step(workdir, step)
    path = checkpoint_dir(workdir, subdir) / str(step)
    try:
        meta = json.loads((path / "meta" / META_FILE).read_text())
    except (OSError, ValueError):
        meta = {}
    return path, meta if isinstance(meta, dict) else {}


def _abstract_encoder(config: ml_collections.ConfigDict, module: str) -> nnx.Module:
    """The shapes of `module` as the pretraining model holds it, from the backbone alone:
    `backbone` is `build_backbone`'s module, `target_backbone` its momentum copy (whose
    arrays are Momentum variables, not nnx.Params), kept only by methods with targets."""
    from augself_jax.methods.core import momentum_copy
    from augself_jax.methods.registry import get as get_method
    from augself_jax.models.registry import build_backbone

    if module not in ENCODERS:
        raise ValueError(f"restore_backbone: module '{module}'; allowed: {', '.join(ENCODERS)}")
    if module == "target_backbone" and get_method(config.method.name).momentum is None:
        raise ConfigError(f"method.name: the {config.method.name} model keeps no {module}")

    def build() -> nnx.Module:
        backbone = build_backbone(config.model, config.data.image_size, nnx.Rngs(config.seed))
        return momentum_copy(backbone) if module == "target_backbone" else backbone

    return nnx.eval_shape(build)


def restore_backbone(workdir: str | epath.Path, config: ml_collections.ConfigDict,
                     step: int | str | None = None, *,
                     module: str = "backbone") -> tuple[nnx.Module, int]:
    """The pretrained backbone (`model.backbone`, in eval mode) of WORKDIR's checkpoint at
    `step` (default: the latest; 'best': the best kNN-monitor checkpoint), on this
    process's first device, and the step. `module="target_backbone"`: its momentum encoder
    (the export's --momentum_encoder; a ConfigError when the method keeps none)."""
    subdir, step, steps = _pick_step(workdir, step)
    graphdef, params, rest = nnx.split(_abstract_encoder(config, module), nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          {"params": {module: params}, "rest": {module: rest}})
    target_nested = to_nested(target)

    path = checkpoint_dir(workdir, subdir) / str(step)
    manager = open_manager(checkpoint_dir(workdir, subdir), read_only=True)
    try:
        stored = manager.item_metadata(step)["state"]
        if stored is None:
            raise ValueError("no array metadata")
        mismatch = tree_mismatch(target_nested, stored, partial=True)
        if mismatch is not None:
            raise ConfigError(f"model: the config's backbone ({_describe_model(config)}) does "
                              f"not match the checkpoint in {path.parent}: {mismatch}")
        # The backbone alone: a partial restore, which only the PyTree handler offers (the
        # manager registered the Standard handler for "state"; the on-disk format is shared).
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = {"state": checkpointer.restore(
                path / "state", args=ocp.args.PyTreeRestore(
                    target_nested, restore_args=ocp.checkpoint_utils.construct_restore_args(
                        target_nested), partial_restore=True))}
    except ConfigError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} cannot be read ({failure_cause(e)}); pick another step "
                              f"with --step (steps: {', '.join(map(str, steps))})") from e
    finally:
        manager.close()
    values = from_nested(restored["state"], target)
    bad = first_non_finite(values)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or Inf in {bad}; a diverged model is not "
                              f"evaluated (steps: {', '.join(map(str, steps))}; --step picks one)")
    backbone = nnx.merge(graphdef, values["params"][module], values["rest"][module])
    backbone.eval()
    return backbone, step

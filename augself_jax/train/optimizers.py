"""Optimizers and learning-rate schedules (docs/METHOD.md section 4).

lr = base_lr * batch / 256, cosine decay to 0 at the last step (stepped per
optimizer step, not per epoch as the reference), optional linear warm-up.
A method may keep parameter groups at the constant base lr (its registry entry's
`constant_lr`, e.g. SimSiam's predictor).
"""

from typing import Any

import jax
import ml_collections
import optax

from augself_jax.errors import ConfigError

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "constant")


def total_steps(config: ml_collections.ConfigDict) -> int:
    """config.total_steps when set, else epochs times the pipeline's steps per epoch."""
    if config.total_steps is not None:
        return int(config.total_steps)
    from augself_jax.data.pipeline import steps_per_epoch

    return int(config.num_epochs) * steps_per_epoch(config)


def steps_per_epoch_or_none(config: ml_collections.ConfigDict) -> int | None:
    from augself_jax.data.pipeline import steps_per_epoch

    try:
        return steps_per_epoch(config)
    except Exception:  # noqa: BLE001  (a dataset not prepared here: warm-up in steps unknown)
        return None


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
    return config.optimizer.base_lr * config.batch_size / 256


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int,
                           warmup_steps: int = 0) -> optax.Schedule:
    """The main schedule: linear warm-up from 0, then cosine to 0 (or constant)."""
    peak = peak_learning_rate(config)
    name = config.optimizer.schedule
    if name not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule: unknown '{name}'; allowed: {', '.join(SCHEDULES)}")
    warmup_steps = min(warmup_steps, num_steps)
    if name == "constant":
        main = optax.constant_schedule(peak)
    else:
        main = optax.cosine_decay_schedule(peak, max(num_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def warmup_steps(config: ml_collections.ConfigDict) -> int:
    if config.optimizer.warmup_epochs <= 0:
        return 0
    per_epoch = steps_per_epoch_or_none(config)
    if per_epoch is None:
        raise ConfigError("optimizer.warmup_epochs: needs the dataset's size, which is unknown")
    return int(round(config.optimizer.warmup_epochs * per_epoch))


def decay_mask(params: Any) -> Any:
    """True for weights that get decay and trust ratios: kernels, not biases or norm params."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _base_transform(config: ml_collections.ConfigDict,
                    lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    opt = config.optimizer
    if opt.name == "sgd":
        # torch.optim.SGD semantics: decay added to the gradient before momentum.
        return optax.chain(optax.add_decayed_weights(opt.weight_decay),
                           optax.sgd(lr, momentum=opt.momentum))
    if opt.name == "lars":
        return optax.lars(lr, weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
                          trust_coefficient=opt.trust_coefficient, trust_ratio_mask=decay_mask,
                          momentum=opt.momentum)
    if opt.name == "adamw":
        return optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay,
                           mask=decay_mask)
    raise ConfigError(f"optimizer.name: unknown '{opt.name}'; allowed: {', '.join(OPTIMIZERS)}")


def _top_level_name(path: tuple) -> str:
    key = path[0]
    return str(getattr(key, "key", getattr(key, "name", key)))


def make_optimizer(config: ml_collections.ConfigDict, params: Any, num_steps: int,
                   constant_lr: tuple[str, ...] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer for `params` (a pytree of the trainable parameters) and its lr schedule;
    `constant_lr`: the top-level attributes the method trains at the constant (scaled) base
    lr (its registry entry's `constant_lr(config)`)."""
    schedule = learning_rate_schedule(config, num_steps, warmup_steps(config))
    main = _base_transform(config, schedule)
    constant = set(constant_lr)
    top_names = {_top_level_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    groups = sorted(constant & top_names)
    if not groups:
        return main, schedule
    # Parameter groups the method keeps at the constant (scaled) base lr, such as SimSiam's
    # predictor (the reference's fix_lr). Each group is labelled by its attribute name, which
    # names its optimiser state in checkpoints.
    transforms = {"main": main}
    transforms.update({g: _base_transform(config, peak_learning_rate(config)) for g in groups})
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: name if (name := _top_level_name(path)) in groups else "main", params)
    return optax.multi_transform(transforms, labels), schedule

"""The one module holding a whole pretraining model, and the three calls the trainer makes.

Nothing here names a method: each method's registry entry (`methods/registry.py`) says
which heads, targets and extra state the model holds and how they are updated.
"""

import jax.numpy as jnp
from flax import nnx

from augself_jax.aware import augself, cassle
from augself_jax.methods.core import Settings, ema_update, momentum_copy, pick
from augself_jax.methods.registry import get as get_method
from augself_jax.models.registry import build_backbone

# Attributes every model has (None when its method does not use them), so code and tests
# can ask `model.predictor is None`; a method may add further heads or state by name.
SLOTS = ("projector", "predictor", "classifier", "queue", "queue_ptr")


class PretrainModel(nnx.Module):
    """backbone, the method's heads (projector | classifier, predictor, ...), augself_heads,
    cassle, target_* and the method's extra state (MoCo's queue, queue_ptr).

    Attributes a configuration does not use are None. Momentum targets (`target_backbone`,
    `target_projector`, `target_cassle`) hold Momentum variables and extra state (the MoCo
    `queue` / `queue_ptr`) is Queue variables: neither is an nnx.Param.
    """

    def __init__(self, config, rngs: nnx.Rngs):
        method = get_method(config.method.name)  # resolved here, once; carried in settings
        s = Settings.from_config(config, method)
        self.settings = s
        dtype = jnp.dtype(config.model.dtype)
        self.backbone = build_backbone(config.model, config.data.image_size, rngs)
        f = self.backbone.num_features

        # Optional parts are None when unused; nnx.data keeps each attribute a pytree slot.
        proj_in, encoder = f, None
        if s.cassle_keys is not None:
            c = config.cassle
            d = cassle.descriptor_dim(s.cassle_keys)
            encoder = cassle.make_encoder(
                s.cassle_mode, d, f, int(c.depth), int(c.width), dtype, rngs
            )
            proj_in = cassle.projector_in_features(s.cassle_mode, f, d, int(c.width))
        self.cassle = nnx.data(encoder)

        heads = method.build_heads(config, f, proj_in, dtype, rngs)
        for name in SLOTS:
            setattr(self, name, nnx.data(None))
        for name, head in heads.items():
            setattr(self, name, nnx.data(head))

        augs = tuple(a for a, _ in s.augself)
        hidden = pick(config.augself.hidden, 512)
        self.augself_heads = nnx.data(
            augself.make_heads(augs, f, hidden, dtype, rngs, s.augself_color_target)
            if augs else None
        )

        momentum = method.momentum is not None
        self.target_backbone = nnx.data(momentum_copy(self.backbone) if momentum else None)
        self.target_projector = nnx.data(None)
        for name in method.target_heads if momentum else ():
            setattr(self, "target_" + name, nnx.data(momentum_copy(getattr(self, name))))
        self.target_cassle = nnx.data(
            momentum_copy(encoder) if momentum and encoder is not None else None
        )

        extra = method.init_state(config, rngs) if method.init_state is not None else {}
        for name, variable in extra.items():
            setattr(self, name, nnx.data(variable))


def build_model(config, rngs: nnx.Rngs) -> PretrainModel:
    """Everything the config asks for, in train mode, parameters float32."""
    return PretrainModel(config, rngs)


def compute_loss(model: PretrainModel, batch: dict, *, step, total_steps) -> tuple:
    """(loss, metrics): SSL loss + sum of lambda_aug * AugSelf loss_aug (without the SSL
    loss under augself.ss_only). Call inside jit.

    batch: view1/view2 normalised float [B,H,W,3], params1/params2 records, label [B].
    Mutates BatchNorm statistics and the method's extra state (MoCo's queue) in place.
    """
    del total_steps  # no loss here depends on the schedule's length
    s: Settings = model.settings
    ssl_loss, y1, y2, metrics = s.method.forward(model, batch, step)
    metrics = dict(metrics, ssl_loss=ssl_loss)
    # augself.ss_only (the references' --ss-only): the SSL loss is still computed and
    # logged, but only the AugSelf heads' losses train the network.
    loss = jnp.zeros_like(ssl_loss) if s.augself_ss_only else ssl_loss
    if model.augself_heads is not None:
        losses = augself.augself_losses(
            model.augself_heads,
            y1,
            y2,
            batch["params1"],
            batch["params2"],
            s.aug_settings,
            reference=s.augself_reference,
            color_target=s.augself_color_target,
        )
        for aug, weight in s.augself:
            metrics[f"augself/{aug}"] = losses[aug]
            loss = loss + weight * losses[aug]
    metrics["loss"] = loss
    return loss, metrics


def update_targets(model: PretrainModel, *, step, total_steps) -> None:
    """After the optimizer step: the method's in-place updates, then the momentum targets
    (a no-op for methods without targets)."""
    s: Settings = model.settings
    method = s.method
    if method.after_update is not None:
        method.after_update(model)
    if method.momentum is None:
        return
    tau = method.momentum(s.hp, step, total_steps)
    ema_update(model.target_backbone, model.backbone, tau)
    for name in method.target_heads:
        ema_update(getattr(model, "target_" + name), getattr(model, name), tau)
    if model.target_cassle is not None:
        ema_update(model.target_cassle, model.cassle, tau)

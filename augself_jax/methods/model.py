"""The one module holding a whole pretraining model, and the three calls the trainer makes."""

import jax.numpy as jnp
from flax import nnx

from augself_jax.aware import augself, cassle
from augself_jax.methods import barlow, byol, moco, simclr, simsiam, supervised
from augself_jax.methods.core import Queue, Settings, ema_update, momentum_copy, pick
from augself_jax.models.resnet import ResNet

METHODS = {
    "simclr": simclr,
    "moco": moco,
    "byol": byol,
    "simsiam": simsiam,
    "barlow": barlow,
    "supervised": supervised,
}


class PretrainModel(nnx.Module):
    """backbone, projector | classifier, predictor, augself_heads, cassle, target_*, queue.

    Attributes a configuration does not use are None. Momentum targets (`target_backbone`,
    `target_projector`, `target_cassle`) hold Momentum variables and the MoCo `queue` /
    `queue_ptr` are Queue variables: neither is an nnx.Param.
    """

    def __init__(self, config, rngs: nnx.Rngs):
        s = Settings.from_config(config)
        self.settings = s
        method = METHODS[s.method]
        dtype = jnp.dtype(config.model.dtype)
        self.backbone = ResNet(
            config.model.backbone,
            stem=config.model.stem,
            width=int(config.model.width),
            dtype=dtype,
            rngs=rngs,
        )
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
        self.projector = nnx.data(heads.get("projector"))
        self.predictor = nnx.data(heads.get("predictor"))
        self.classifier = nnx.data(heads.get("classifier"))

        augs = tuple(a for a, _ in s.augself)
        hidden = pick(config.augself.hidden, 512)
        self.augself_heads = nnx.data(
            augself.make_heads(augs, f, hidden, dtype, rngs) if augs else None
        )

        momentum = method.HAS_MOMENTUM
        self.target_backbone = nnx.data(momentum_copy(self.backbone) if momentum else None)
        self.target_projector = nnx.data(momentum_copy(self.projector) if momentum else None)
        self.target_cassle = nnx.data(
            momentum_copy(encoder) if momentum and encoder is not None else None
        )

        is_moco = s.method == "moco"
        self.queue = nnx.data(Queue(moco.init_queue(config, rngs)) if is_moco else None)
        self.queue_ptr = nnx.data(Queue(jnp.zeros((), jnp.int32)) if is_moco else None)


def build_model(config, rngs: nnx.Rngs) -> PretrainModel:
    """Everything the config asks for, in train mode, parameters float32."""
    return PretrainModel(config, rngs)


def compute_loss(model: PretrainModel, batch: dict, *, step, total_steps) -> tuple:
    """(loss, metrics): SSL loss + sum of lambda_aug * AugSelf loss_aug. Call inside jit.

    batch: view1/view2 normalised float [B,H,W,3], params1/params2 records, label [B].
    Mutates BatchNorm statistics and the MoCo queue in place.
    """
    del step, total_steps  # no loss here depends on the schedule
    s: Settings = model.settings
    ssl_loss, y1, y2, metrics = METHODS[s.method].forward(model, batch)
    metrics = dict(metrics, ssl_loss=ssl_loss)
    loss = ssl_loss
    if model.augself_heads is not None:
        losses = augself.augself_losses(
            model.augself_heads,
            y1,
            y2,
            batch["params1"],
            batch["params2"],
            s.ranges,
            reference=s.augself_reference,
        )
        for aug, weight in s.augself:
            metrics[f"augself/{aug}"] = losses[aug]
            loss = loss + weight * losses[aug]
    metrics["loss"] = loss
    return loss, metrics


def update_targets(model: PretrainModel, *, step, total_steps) -> None:
    """Momentum updates after the optimizer step; a no-op for methods without targets."""
    s: Settings = model.settings
    if model.target_backbone is None:
        return
    if s.method == "byol":
        tau = byol.tau_schedule(step, total_steps, s.byol_tau_base)
    else:
        tau = s.moco_momentum
    ema_update(model.target_backbone, model.backbone, tau)
    ema_update(model.target_projector, model.projector, tau)
    if model.target_cassle is not None:
        ema_update(model.target_cassle, model.cassle, tau)


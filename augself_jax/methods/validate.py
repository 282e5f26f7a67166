"""Checks of the model / method / augself / cassle config sections: one ConfigError line each."""

from augself_jax.aware import augself, cassle
from augself_jax.errors import ConfigError
from augself_jax.models.resnet import STAGES, STEMS

METHOD_NAMES = ("simclr", "moco", "byol", "simsiam", "barlow", "supervised")
DTYPES = ("float32", "bfloat16", "float16")


def _one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}: '{value}' is unknown; allowed: {', '.join(map(str, allowed))}")


def _positive(field: str, value, *, allow_default: bool = False) -> None:
    if allow_default and value == -1:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        extra = " or -1 (the method's default)" if allow_default else ""
        raise ConfigError(f"{field}: {value!r} must be a positive integer{extra}")


def _in_range(field: str, value, lo: float, hi: float) -> None:
    if not lo <= float(value) <= hi:
        raise ConfigError(f"{field}: {value} is outside [{lo}, {hi}]")


def validate_model_config(config) -> None:
    """Raise ConfigError naming the first bad field of model, method, augself or cassle."""
    m = config.model
    _one_of("model.backbone", m.backbone, tuple(STAGES))
    _one_of("model.stem", m.stem, STEMS)
    _positive("model.width", m.width)
    _one_of("model.dtype", m.dtype, DTYPES)

    me = config.method
    _one_of("method.name", me.name, METHOD_NAMES)
    if float(me.temperature) <= 0:
        raise ConfigError(f"method.temperature: {me.temperature} must be > 0")
    for f in ("proj_hidden", "proj_out", "pred_hidden", "num_classes"):
        _positive(f"method.{f}", me[f], allow_default=True)
    _in_range("method.moco_momentum", me.moco_momentum, 0.0, 1.0)
    _in_range("method.byol_tau_base", me.byol_tau_base, 0.0, 1.0)
    _one_of("method.moco_enqueue", me.moco_enqueue, ("keys", "queries"))
    _one_of("method.simsiam_proj_layers", me.simsiam_proj_layers, (2, 3))
    if float(me.barlow_lambda) < 0:
        raise ConfigError(f"method.barlow_lambda: {me.barlow_lambda} must be >= 0")
    _positive("method.queue_size", me.queue_size)
    if me.name == "moco" and me.queue_size < config.batch_size:
        raise ConfigError(
            f"method.queue_size: {me.queue_size} is smaller than batch_size "
            f"{config.batch_size}; a step enqueues the whole batch"
        )

    a = config.augself
    known = set(augself.HEADS) | {"hidden", "reference"}
    for key in a.keys():
        _one_of("augself key", key, sorted(known))
    for aug in augself.HEADS:
        if float(a[aug]) < 0:
            raise ConfigError(f"augself.{aug}: weight {a[aug]} must be >= 0 (0 disables the head)")
    _positive("augself.hidden", a.hidden)

    c = config.cassle
    for key in c.keys():
        _one_of("cassle key", key,
                ("enabled", "descriptor_keys", "mode", "depth", "width", "reference"))
    _one_of("cassle.mode", c.mode, cassle.MODES)
    cassle.check_keys(c.descriptor_keys)
    _positive("cassle.depth", c.depth)
    _positive("cassle.width", c.width)

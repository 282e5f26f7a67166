"""Checks of the model / method / augself / cassle config sections: one ConfigError line each.

The method's own fields are checked by its registry entry (`Method.validate`).
"""

from augself_jax.aware import augself, cassle
from augself_jax.errors import ConfigError
from augself_jax.models.backbones import BACKBONES, is_vit
from augself_jax.models.resnet import STEMS

DTYPES = ("float32", "bfloat16", "float16")


def one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}: '{value}' is unknown; allowed: {', '.join(map(str, allowed))}")


def positive(field: str, value, *, allow_default: bool = False) -> None:
    if allow_default and value == -1:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        extra = " or -1 (the method's default)" if allow_default else ""
        raise ConfigError(f"{field}: {value!r} must be a positive integer{extra}")


def in_range(field: str, value, lo: float, hi: float) -> None:
    if not lo <= float(value) <= hi:
        raise ConfigError(f"{field}: {value} is outside [{lo}, {hi}]")


def _validate_backbone(config) -> None:
    m = config.model
    one_of("model.backbone", m.backbone, BACKBONES)
    one_of("model.dtype", m.dtype, DTYPES)
    if is_vit(m.backbone):
        positive("model.patch_size", m.patch_size)
        if int(config.data.image_size) % int(m.patch_size):
            raise ConfigError(f"model.patch_size: {m.patch_size} does not divide "
                              f"data.image_size {config.data.image_size}")
        if not isinstance(m.vit_depth, int) or m.vit_depth < 0:
            raise ConfigError(f"model.vit_depth: {m.vit_depth!r} must be an integer >= 0 "
                              "(0: the named size's depth)")
    else:
        one_of("model.stem", m.stem, STEMS)
        positive("model.width", m.width)


def validate_model_config(config) -> None:
    """Raise ConfigError naming the first bad field of model, method, augself or cassle."""
    from augself_jax.methods import registry

    _validate_backbone(config)
    me = config.method
    method = registry.get(me.name)
    if float(me.temperature) <= 0:
        raise ConfigError(f"method.temperature: {me.temperature} must be > 0")
    for f in ("proj_hidden", "proj_out", "pred_hidden"):
        positive(f"method.{f}", me[f], allow_default=True)
    method.validate(config)

    a = config.augself
    known = set(augself.HEADS) | {"hidden", "reference", "ss_only", "color_target"}
    for key in a.keys():
        one_of("augself key", key, sorted(known))
    for aug in augself.HEADS:
        if float(a[aug]) < 0:
            raise ConfigError(f"augself.{aug}: weight {a[aug]} must be >= 0 (0 disables the head)")
    if a.get("ss_only", False) and not augself.enabled_augs(a):
        raise ConfigError("augself.ss_only: True trains the AugSelf heads alone, but no head "
                          "is on; allowed: ss_only False, or a weight > 0 for one of "
                          f"{', '.join(augself.HEADS)}")
    positive("augself.hidden", a.hidden)
    one_of("augself.color_target", a.get("color_target", "linear"), augself.COLOR_TARGETS)

    c = config.cassle
    for key in c.keys():
        one_of("cassle key", key,
               ("enabled", "descriptor_keys", "mode", "depth", "width", "reference"))
    one_of("cassle.mode", c.mode, cassle.MODES)
    cassle.check_keys(c.descriptor_keys)
    positive("cassle.depth", c.depth)
    positive("cassle.width", c.width)

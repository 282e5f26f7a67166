"""Which export format holds which backbone; the checks run before any checkpoint is read."""

from typing import Any

from augself_jax.errors import ConfigError

FORMATS = ("torchvision", "timm", "detectron2")
_FILE_KIND = {"torchvision": "safetensors", "timm": "safetensors", "detectron2": "pickle"}


def check_format(name: str) -> None:
    if name not in FORMATS:
        raise ConfigError(f"format: '{name}' is not an export format; allowed: "
                          f"{', '.join(FORMATS)}")


def file_kind(name: str) -> str:
    return _FILE_KIND[name]


def _fitting(model: Any) -> list[str]:
    from augself_jax.models import registry as backbones

    family = backbones.entries().get(model.backbone)
    if family == "vit":
        return ["timm"]
    if family == "resnet":
        return ["torchvision"] + (["detectron2"] if model.stem == "imagenet" else [])
    return []


def check_fits(name: str, model: Any) -> None:
    """ConfigError when format `name` cannot hold the run's backbone (`config.model`): timm
    holds the ViTs, torchvision the ResNets, detectron2 the ResNets with the ImageNet stem
    (its stem is a 7x7 convolution and a max-pool)."""
    check_format(name)
    fitting = _fitting(model)
    if name in fitting:
        return
    allowed = ", ".join(fitting) or "none"
    if name == "detectron2" and "torchvision" in fitting:  # a ResNet with the CIFAR stem
        raise ConfigError(
            f"format: detectron2's ResNet stem is a 7x7 convolution and a max-pool, and this "
            f"run's model.stem is {model.stem}; allowed for this run: {allowed}")
    holds = "Vision Transformers" if name == "timm" else "ResNets"
    raise ConfigError(f"format: {name} holds {holds}, and this run's model.backbone is "
                      f"{model.backbone}; allowed for this run: {allowed}")

"""`python -m configs`: what the registries hold, so no document lists it by hand.

Prints the experiment configs (one file per method and variant), the presets, the
methods, backbones, augmentations (with their config fields, record keys, AugSelf heads and
CASSLE descriptor keys) and evaluation protocols (with each preset's default), each read
from its registry: a newly added one appears here by existing.
"""

import os

from augself_jax import augs
from augself_jax.evaluation import registry as protocols
from augself_jax.methods import registry as methods
from augself_jax.models import registry as backbones
from configs import common

_HERE = os.path.dirname(os.path.abspath(__file__))


def experiment_configs() -> list[str]:
    """configs/<experiment>.py for every experiment file (not common.py or package files)."""
    return sorted(f"configs/{n}" for n in os.listdir(_HERE)
                  if n.endswith(".py") and not n.startswith("_") and n != "common.py")


def default_protocols() -> dict[str, str]:
    """preset -> its default `eval.protocols`."""
    return {p: common.base_config(p).eval.protocols for p in common.PRESETS}


def lines() -> list[str]:
    out = [f"experiment configs: {', '.join(experiment_configs())}",
           f"presets (--config=configs/<experiment>.py:<preset>[,<backbone>]): "
           f"{', '.join(common.PRESETS)}",
           f"methods (method.name): {', '.join(methods.names())}",
           f"backbones (model.backbone): {', '.join(backbones.names())}",
           f"augmentations, in chain order: "
           f"{', '.join(e.name for e in sorted(augs.entries().values(), key=lambda e: e.chain))}",
           f"  their config.aug fields: {', '.join(augs.config_defaults())}",
           f"  record keys: {', '.join(augs.record_keys())}",
           f"  AugSelf heads (augself.<name>): {', '.join(common.AUGSELF_KEYS)}",
           f"  CASSLE descriptor keys (cassle.descriptor_keys): {', '.join(common.CASSLE_KEYS)}",
           f"protocols (eval.protocols): {', '.join(protocols.names())}"]
    by_default: dict[str, list[str]] = {}
    for preset, default in default_protocols().items():
        by_default.setdefault(default, []).append(preset)
    for default, presets in by_default.items():
        out.append(f"  default for {', '.join(presets)}: {default}")
    return out


if __name__ == "__main__":
    print("\n".join(lines()))

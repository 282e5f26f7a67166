"""The ResNet in the pickle detectron2 loads, as MoCo's convert-pretrain-to-detectron2.py
writes it: `{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}`.

Names are detectron2's ResNet's (`stem.conv1.weight`, `stem.conv1.norm.*`,
`res<stage + 1>.<j>.conv<c>.weight`, `res<stage + 1>.<j>.conv<c>.norm.*`,
`res<stage + 1>.<j>.shortcut.weight`, `...shortcut.norm.*`), the same that MoCo's renaming
makes of torchvision's; the BatchNorm arrays keep torchvision's field names
(`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`), as there.
detectron2 reads them into its frozen BatchNorm, which has no `num_batches_tracked` and
reports it unused, as for MoCo's files.
"""

import pickle

import numpy as np

from augself_jax.export.to_torchvision import batch_norm, conv_weight, layer_names
from augself_jax.models.resnet import STAGES

AUTHOR = "augself_jax"


def _conv(out: dict, prefix: str, conv: dict, bn: dict, step: int) -> None:
    out[f"{prefix}.weight"] = conv_weight(conv["kernel"])
    for name, value in batch_norm(bn, step).items():
        out[f"{prefix}.norm.{name}"] = value


def state_dict(nested: dict, backbone: str, step: int) -> dict[str, np.ndarray]:
    """detectron2's names for the ResNet (ImageNet stem) whose arrays `nested` holds."""
    kind, _ = STAGES[backbone]
    convs = 2 if kind == "basic" else 3
    out: dict[str, np.ndarray] = {}
    _conv(out, "stem.conv1", nested["conv1"], nested["bn1"], step)
    for prefix, index in layer_names(backbone):
        stage, j = prefix.removeprefix("layer").split(".")
        block, name = nested["blocks"][str(index)], f"res{int(stage) + 1}.{j}"
        for c in range(1, convs + 1):
            _conv(out, f"{name}.conv{c}", block[f"conv{c}"], block[f"bn{c}"], step)
        if "downsample" in block:
            _conv(out, f"{name}.shortcut", block["downsample"]["conv"],
                  block["downsample"]["bn"], step)
    return out


def pickled(model: dict[str, np.ndarray]) -> bytes:
    """The file's bytes; `matching_heuristics` lets detectron2 match names by suffix."""
    return pickle.dumps({"model": model, "__author__": AUTHOR, "matching_heuristics": True})

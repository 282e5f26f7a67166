"""The ResNet's arrays under torchvision's `resnet18` / `resnet50` state-dict names.

The backbone (augself_jax/models/resnet.py) is torchvision's architecture, so the mapping
is one to one: `blocks.<i>` is `layer<stage>.<j>`, a block's `downsample.conv/bn` is
torchvision's `downsample.0/1`, and the classifier `fc` is left out. Convolution kernels go
from Flax's HWIO to PyTorch's OIHW; BatchNorm's scale/bias/mean/var become
weight/bias/running_mean/running_var (epsilon 1e-5 in both), with `num_batches_tracked` set
to the checkpoint's step (one statistics update per training step).

The CIFAR stem (3x3 `conv1`, stride 1, no max-pool) is written under the same names: the
user replaces torchvision's `conv1` by that convolution and its `maxpool` by `Identity`.
A thin network (`model.width` other than 64) keeps its true shapes.
"""

import numpy as np

from augself_jax.models.resnet import STAGES


def conv_weight(kernel: np.ndarray) -> np.ndarray:
    """Flax (kh, kw, in, out) -> PyTorch (out, in, kh, kw)."""
    return np.ascontiguousarray(np.transpose(np.asarray(kernel, np.float32), (3, 2, 0, 1)))


def batch_norm(bn: dict, step: int) -> dict[str, np.ndarray]:
    """An nnx.BatchNorm's arrays under torch.nn.BatchNorm2d's names."""
    return {"weight": np.asarray(bn["scale"], np.float32),
            "bias": np.asarray(bn["bias"], np.float32),
            "running_mean": np.asarray(bn["mean"], np.float32),
            "running_var": np.asarray(bn["var"], np.float32),
            "num_batches_tracked": np.asarray(step, np.int64)}


def _add(out: dict, prefix: str, arrays: dict[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        out[f"{prefix}.{name}"] = value


def layer_names(backbone: str) -> list[tuple[str, int]]:
    """(torchvision's block prefix `layer<s>.<j>`, the backbone's block index), in order."""
    _, depths = STAGES[backbone]
    names, index = [], 0
    for stage, depth in enumerate(depths):
        for j in range(depth):
            names.append((f"layer{stage + 1}.{j}", index))
            index += 1
    return names


def state_dict(nested: dict, backbone: str, step: int) -> dict[str, np.ndarray]:
    """torchvision's state dict (without `fc`) of the ResNet whose arrays `nested` holds by
    module path (`conv1/kernel`, `bn1/scale`, `blocks/<i>/conv1/kernel`, ...)."""
    kind, _ = STAGES[backbone]
    convs = 2 if kind == "basic" else 3
    out: dict[str, np.ndarray] = {"conv1.weight": conv_weight(nested["conv1"]["kernel"])}
    _add(out, "bn1", batch_norm(nested["bn1"], step))
    names = layer_names(backbone)
    if len(nested["blocks"]) != len(names):
        raise ValueError(f"{backbone} has {len(names)} blocks, the checkpoint "
                         f"{len(nested['blocks'])}")
    for prefix, index in names:
        block = nested["blocks"][str(index)]
        for c in range(1, convs + 1):
            out[f"{prefix}.conv{c}.weight"] = conv_weight(block[f"conv{c}"]["kernel"])
            _add(out, f"{prefix}.bn{c}", batch_norm(block[f"bn{c}"], step))
        if "downsample" in block:
            shortcut = block["downsample"]
            out[f"{prefix}.downsample.0.weight"] = conv_weight(shortcut["conv"]["kernel"])
            _add(out, f"{prefix}.downsample.1", batch_norm(shortcut["bn"], step))
    return out

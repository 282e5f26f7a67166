"""The protocol interface: every evaluation protocol is one module of this package that
defines `PROTOCOL`, an `Evaluator` subclass built from the config.

The expensive part, extracting frozen features, is shared: the driver (run.py) extracts each
dataset's features once and hands the same `Features` to every protocol that runs on that
kind of dataset. A protocol only turns features into numbers (`run(features) -> Results`).
`evaluate.py` and the trainer's kNN monitor both go through these evaluators.

Adding a protocol: `augself_jax/evaluation/<module>.py` with a `PROTOCOL` class (its `name`
is what `eval.protocols` lists), its fields in the `eval` section of `configs/common.py`,
and its test. Nothing else lists the protocols.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np

from augself_jax.errors import ConfigError


def split_list(value: str) -> list[str]:
    """A comma-separated config field as a list ('linear, knn' -> ['linear', 'knn'])."""
    return [v.strip() for v in str(value).split(",") if v.strip()]


def positive_ints(field: str, value: str) -> list[int]:
    """A comma-separated list of positive integers, or ConfigError naming `field`."""
    out = []
    for item in split_list(value):
        if not item.isdigit() or int(item) < 1:
            raise ConfigError(f"{field}: '{item}' is not a positive integer")
        out.append(int(item))
    return out


@dataclasses.dataclass(frozen=True)
class Result:
    """One number a protocol reports. `task`: the dataset, or `dataset/label_key` for a
    dataset with several label tasks. `extra` is kept with the record (regularisation,
    split sizes, confidence interval...)."""

    task: str
    metric: str
    value: float
    unit: str = "%"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    """What protocols may need beyond the features: the backbone (protocols that run it on
    transformed images), the mesh, the pretraining normalisation, where to write files."""

    backbone: Any = None
    mesh: jax.sharding.Mesh | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    eval_dir: str = ""
    step: int = 0
    run_name: str = ""  # the workdir's name, for figure titles
    log: Any = print
    writer: Any = None  # the run's metric writer (TensorBoard), for figures; None: files only


def publish_png(context: Context, filename: str, png: bytes) -> str:
    """A protocol's figure: written to eval_dir/filename (through epath: a gs:// workdir
    keeps it) and, with a writer, to TensorBoard as image `eval/<filename stem>` at the
    evaluated step. Returns the file's path ('' without an eval_dir: no file written)."""
    import io

    import PIL.Image
    from etils import epath

    if not context.eval_dir:
        return ""
    path = epath.Path(context.eval_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    if context.writer is not None:
        pixels = np.asarray(PIL.Image.open(io.BytesIO(png)).convert("RGB"))
        context.writer.write_images(int(context.step),
                                    {f"eval/{filename.rsplit('.', 1)[0]}": pixels[None]})
    return str(path)


@dataclasses.dataclass
class Features:
    """Frozen features of one dataset. `splits` maps a split to a dict holding `features`
    [N, F] and each label / continuous key: 'train', 'val', 'test' for a linear dataset,
    'pool' for a few-shot one. `images`: the first test images (uint8), for protocols that
    transform them. `info`: split sizes and how validation was chosen (kept with results)."""

    name: str
    label_keys: tuple[str, ...]
    splits: dict[str, dict[str, np.ndarray]]
    task_names: dict[str, str] = dataclasses.field(default_factory=dict)
    metric: str = "top1"
    images: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def task(self, label_key: str) -> str:
        return self.task_names.get(label_key, self.name)

    def num_classes(self, label_key: str) -> int:
        return int(max(s[label_key].max() for s in self.splits.values()) + 1)


class Evaluator(abc.ABC):
    """A protocol. `on`: the datasets it runs on, 'linear' (eval.datasets: train / val /
    test features) or 'fewshot' (eval.fewshot_datasets: one pool)."""

    name: ClassVar[str]
    on: ClassVar[str] = "linear"

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        """ConfigError (one line naming the field) for this protocol's own fields."""
        return None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, context: Context) -> Evaluator:
        return cls()

    def image_statistics(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Per-image arrays computed from a host batch's uint8 images and kept beside the
        features (e.g. colour histograms); {} for most protocols."""
        return {}

    def images_needed(self) -> int:
        """How many test images (uint8) `Features.images` must hold for this protocol."""
        return 0

    @abc.abstractmethod
    def run(self, features: Features) -> Iterable[Result]:
        """The protocol's numbers for one dataset."""


def _protocol_modules() -> Iterator[Any]:
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        yield importlib.import_module(f"{__package__}.{module.name}")


def registry() -> dict[str, type[Evaluator]]:
    """{name: Evaluator class} of every module of this package that defines PROTOCOL."""
    found: dict[str, type[Evaluator]] = {}
    for module in _protocol_modules():
        protocol = getattr(module, "PROTOCOL", None)
        if protocol is None:
            continue
        if protocol.name in found:
            raise ValueError(f"two protocols named '{protocol.name}'")
        found[protocol.name] = protocol
    return found


def get(name: str) -> type[Evaluator]:
    protocols = registry()
    if name not in protocols:
        raise ConfigError(f"eval.protocols: unknown protocol '{name}'; allowed: "
                          f"{', '.join(sorted(protocols))}")
    return protocols[name]


def validate(config: ml_collections.ConfigDict) -> list[type[Evaluator]]:
    """The classes of `eval.protocols`, each protocol's own fields checked."""
    names = split_list(config.eval.protocols)
    if not names:
        raise ConfigError(f"eval.protocols: empty; allowed: {', '.join(sorted(registry()))}")
    classes = [get(n) for n in names]
    for cls in classes:
        cls.validate(config)
    return classes


def build(config: ml_collections.ConfigDict, context: Context) -> list[Evaluator]:
    """The evaluators of `eval.protocols`, in the listed order."""
    return [cls.from_config(config, context) for cls in validate(config)]

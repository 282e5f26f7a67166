"""The protocol interface: every evaluation protocol is one module of this package that
defines `PROTOCOL`, an `Evaluator` subclass built from the config (found by registry.py).

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
import time
from collections.abc import Callable, Iterable
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


class Progress:
    """'<what>: i/n <unit> (<label>), <elapsed> s, ETA <s> s' lines through `log`: after the
    first update, then at most one every `every` seconds, and after the last. The ETA is
    the mean time per item so far times the items left. `log` None: silent."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, unit: str,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.log, self.unit = what, total, log, unit
        self.every, self.clock = every, clock
        self.start = self.last = clock()
        self.done = 0

    def add(self, count: int, label: str) -> None:
        first = self.done == 0
        self.done += count
        now = self.clock()
        if self.log is None or not (first or self.done >= self.total
                                    or now - self.last >= self.every):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.log(f"{self.what}: {self.done}/{self.total} {self.unit} ({label}), "
                 f"{elapsed:.0f} s, ETA {eta:.0f} s")


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

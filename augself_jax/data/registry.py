"""The dataset registry (the idiom is `augself_jax/registries.py`): the datasets augself_jax
knows, one row each of the table below (TFDS names, splits, image sizes, statistics,
labels)."""

import dataclasses
import functools
from importlib import resources

from augself_jax.registries import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str  # registry name (config.data.dataset)
    tfds_name: str  # what tfds.builder() takes, config included ("augself_shapes/32px")
    train_split: str  # what pretraining reads (may join splits: "train+unlabeled")
    test_split: str
    image_size: int  # side of the stored images (the reference's crop output size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    label_key: str  # the feature that holds the class label
    num_classes: int
    labeled_train_split: str = ""  # labelled training images (linear probe); "" = train_split
    # Optional class subset, as names of the TFDS ClassLabel, remapped to 0..len-1 in order.
    class_subset: tuple[str, ...] = ()
    # Other labels the dataset carries (name -> number of classes), e.g. the shapes probes.
    extra_labels: tuple[tuple[str, int], ...] = ()

    @property
    def probe_train_split(self) -> str:
        return self.labeled_train_split or self.train_split


@functools.cache
def imagenet100_classes() -> tuple[str, ...]:
    """The WordNet ids of the standard ImageNet-100 subset (shipped in the package)."""
    text = resources.files("augself_jax.data").joinpath("imagenet100_classes.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


# The built-in dataset's entries: (name, TFDS config, image size, mean, std). The statistics
# are the generated train split's (checked by tests/test_data_shapes.py); `shapes64_200k` is
# `shapes64`'s distribution with ten times the training examples (data-path benchmark);
# `shapes_hue72` puts the 8 hue classes within the reference hue jitter's 72 degrees.
_SHAPES_STATS = ((0.221, 0.222, 0.221), (0.256, 0.257, 0.255))
SHAPES_CONFIGS = (
    ("shapes", "32px", 32, *_SHAPES_STATS),
    ("shapes64", "64px", 64, *_SHAPES_STATS),
    ("shapes64_200k", "64px_200k", 64, *_SHAPES_STATS),
    ("shapes_hue72", "32px_hue72", 32, (0.303, 0.137, 0.236), (0.355, 0.042, 0.254)),
)


def _shapes_info(name: str, config: str, size: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float]) -> DatasetInfo:
    return DatasetInfo(
        name=name, tfds_name=f"augself_shapes/{config}", train_split="train",
        test_split="test", image_size=size, mean=mean, std=std, label_key="shape",
        num_classes=4, extra_labels=(("hue", 8), ("position", 9), ("size", 3)))


def _registry() -> dict[str, DatasetInfo]:
    return {
        **{name: _shapes_info(name, config, size, mean, std)
           for name, config, size, mean, std in SHAPES_CONFIGS},
        "stl10": DatasetInfo(
            name="stl10", tfds_name="stl10", train_split="train+unlabeled", test_split="test",
            labeled_train_split="train", image_size=96, mean=(0.43, 0.42, 0.39),
            std=(0.27, 0.26, 0.27), label_key="label", num_classes=10),
        "cifar10": DatasetInfo(
            name="cifar10", tfds_name="cifar10", train_split="train", test_split="test",
            image_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
            label_key="label", num_classes=10),
        "cifar100": DatasetInfo(
            name="cifar100", tfds_name="cifar100", train_split="train", test_split="test",
            image_size=32, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
            label_key="label", num_classes=100),
        "imagenet100": DatasetInfo(
            name="imagenet100", tfds_name="imagenet2012", train_split="train",
            test_split="validation", image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            label_key="label", num_classes=100, class_subset=imagenet100_classes()),
        # TFDS needs ILSVRC2012_img_{train,val}.tar in its manual_dir (no download).
        "imagenet1k": DatasetInfo(
            name="imagenet1k", tfds_name="imagenet2012", train_split="train",
            test_split="validation", image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            label_key="label", num_classes=1000),
    }


REGISTRY: Registry[DatasetInfo] = Registry("data.dataset", _registry)
entries, names, get = REGISTRY.entries, REGISTRY.names, REGISTRY.get

"""The transfer datasets of docs/EVALUATION.md section 6: TFDS names, splits, metrics, seeded
validation splits.

Two registries: `LINEAR` (train / val / test for the linear probe, kNN and the analyses) and
`FEWSHOT` (one pool of images that episodes are drawn from). MIT-67 and FGVC-Aircraft are not
in TFDS: the builders below read a manual download (`manual_dir`) and print where to get it.
The built-in `shapes` dataset is one entry with four label tasks (shape, hue, position, size).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from augself_jax.data.registry import imagenet100_classes
from augself_jax.errors import ConfigError
from augself_jax.registries import Registry


@dataclasses.dataclass(frozen=True)
class EvalDataset:
    name: str  # registry name; the `dataset` field of the results (plus `/task` for shapes)
    tfds_name: str
    trainval_split: str  # TFDS split(s) the training and validation images come from
    test_split: str
    # Reference split sizes. With `val_split` empty, validation is a seeded random subset of
    # `trainval_split` of size num_val (scaled proportionally when the split has another size).
    num_train: int
    num_val: int
    num_test: int
    num_classes: int
    metric: str = "top1"  # top1 | class_avg (mean per-class accuracy)
    val_split: str = ""  # an official validation split; then trainval_split is train only
    label_keys: tuple[str, ...] = ("label",)  # one linear task per key
    drop_label_names: tuple[str, ...] = ()  # classes removed (Caltech-101's background)
    keep: tuple[str, tuple[int, ...]] | None = None  # (feature, values) examples to keep
    manual: bool = False  # needs a manual download (MIT-67, Aircraft)
    val_seed: int = 0
    # Few-shot linear evaluation (the CASSLE reference's flowers-5shot / -10shot): the sweep
    # trains on `shots` images per class of the train split and the refit on `shots` per
    # class of train + val, each drawn with eval.val_seed (`few_shot_splits`); 0: all images.
    shots: int = 0
    # A class subset by TFDS class name, relabelled 0..n-1 in this order (ImageNet-100).
    class_names: tuple[str, ...] = ()
    # Per-image point features (`*_x` / `*_y` pixel coordinates) read beside the labels, in
    # the evaluation crop's frame (eval_input.points_in_crop): celeb_a's `landmarks`.
    point_keys: tuple[str, ...] = ()

    def task_name(self, label_key: str) -> str:
        return self.name if self.label_keys == ("label",) else f"{self.name}/{label_key}"


LINEAR: dict[str, EvalDataset] = {d.name: d for d in [
    EvalDataset("cifar10", "cifar10", "train", "test", 45000, 5000, 10000, 10),
    EvalDataset("cifar100", "cifar100", "train", "test", 45000, 5000, 10000, 100),
    EvalDataset("food101", "food101", "train", "validation", 68175, 7575, 25250, 101),
    EvalDataset("mit67", "mit67", "train", "test", 4690, 670, 1340, 67, manual=True),
    EvalDataset("pets", "oxford_iiit_pet", "train", "test", 2940, 740, 3669, 37,
                metric="class_avg"),
    EvalDataset("flowers", "oxford_flowers102", "train", "test", 1020, 1020, 6149, 102,
                metric="class_avg", val_split="validation"),
    EvalDataset("caltech101", "caltech101", "train", "test", 2525, 505, 5647, 101,
                metric="class_avg", drop_label_names=("background_google",)),
    EvalDataset("cars", "cars196", "train", "test", 7000, 1144, 8041, 196),
    EvalDataset("aircraft", "fgvc_aircraft", "train", "test", 3334, 3333, 3333, 100,
                metric="class_avg", val_split="validation", manual=True),
    EvalDataset("dtd", "dtd", "train", "test", 1880, 1880, 1880, 47, val_split="validation"),
    EvalDataset("sun397", "sun397/standard-part1-120k", "train", "test", 15880, 3970, 19850,
                397),
    # TFDS has 5994 training images; the reference's split file holds 4990 + 1000.
    EvalDataset("cub200", "caltech_birds2011", "train", "test", 4994, 1000, 5794, 200),
    EvalDataset("stl10", "stl10", "train", "test", 4500, 500, 8000, 10),
    # TFDS has 12,000 training images; the AugSelf reference's split file holds 10,800 + 1,200.
    EvalDataset("dogs", "stanford_dogs", "train", "test", 10800, 1200, 8580, 120),
    # k images per class (see `shots`), validated on the whole official validation split.
    EvalDataset("flowers_5shot", "oxford_flowers102", "train", "test", 510, 1020, 6149, 102,
                metric="class_avg", val_split="validation", shots=5),
    EvalDataset("flowers_10shot", "oxford_flowers102", "train", "test", 1020, 1020, 6149,
                102, metric="class_avg", val_split="validation", shots=10),
    # The pretraining classes of ImageNet-100 (imagenet2012, prepared as for pretraining);
    # validation is 10% of their training images, as the CASSLE reference's split.
    EvalDataset("imagenet100", "imagenet2012", "train", "validation", 114021, 12668, 5000, 100,
                class_names=imagenet100_classes()),
    # CelebA (aligned, 218 x 178): no class label, the five facial landmarks for the
    # `landmarks` protocol. Its licence allows non-commercial research use only.
    EvalDataset("celeba", "celeb_a", "train", "test", 162770, 19867, 19962, 0,
                val_split="validation", label_keys=(), point_keys=("landmarks",)),
    EvalDataset("shapes", "augself_shapes/32px", "train", "test", 18000, 2000, 5000, 4,
                label_keys=("shape", "hue", "position", "size")),
    EvalDataset("shapes64", "augself_shapes/64px", "train", "test", 18000, 2000, 5000, 4,
                label_keys=("shape", "hue", "position", "size")),
    EvalDataset("shapes_hue72", "augself_shapes/32px_hue72", "train", "test", 18000, 2000,
                5000, 4, label_keys=("shape", "hue", "position", "size")),
]}


@dataclasses.dataclass(frozen=True)
class FewShotDataset:
    name: str
    tfds_name: str
    split: str  # the pool episodes are drawn from
    label_keys: tuple[str, ...] = ("label",)
    keep: tuple[str, tuple[int, ...]] | None = None
    manual: bool = False

    def task_name(self, label_key: str) -> str:
        return self.name if self.label_keys == ("label",) else f"{self.name}/{label_key}"


# FC100 (Oreshkin et al. 2018): CIFAR-100 by superclass; the test superclasses are 0, 7, 12, 14
# (aquatic mammals, insects, medium mammals, people): 20 fine classes of 600 images.
FC100_TEST_SUPERCLASSES = (0, 7, 12, 14)
FEWSHOT: dict[str, FewShotDataset] = {d.name: d for d in [
    FewShotDataset("fc100", "cifar100", "train+test",
                   keep=("coarse_label", FC100_TEST_SUPERCLASSES)),
    FewShotDataset("cub200", "caltech_birds2011", "train+test"),
    FewShotDataset("plant_disease", "plant_village", "train"),
    FewShotDataset("shapes", "augself_shapes/32px", "test",
                   label_keys=("shape", "hue", "position", "size")),
]}


# Per-image object boxes for the `localization` protocol: a top-level TFDS box feature
# (CUB-200's `bbox`), which evaluation's input maps into the centre crop's frame.
BOX_KEYS = ("bbox",)
_SHAPES_KEYS = ("shape", "center_x", "center_y", "size_value")


def object_boxes(split: dict[str, np.ndarray]) -> np.ndarray | None:
    """[N, 4] (x_min, y_min, x_max, y_max) as fractions of the evaluated image, from a
    split's arrays: a TFDS box (ymin, xmin, ymax, xmax) or, on the built-in dataset, the
    exact box of each shape; None when the dataset has no boxes."""
    if "bbox" in split:
        return np.asarray(split["bbox"], np.float32)[:, [1, 0, 3, 2]]
    if all(k in split for k in _SHAPES_KEYS):
        from augself_jax.data import shapes

        return shapes.bounding_box(split)
    return None


def class_subset(builder: tfds.core.DatasetBuilder, d: EvalDataset
                 ) -> tuple[tuple[str, tuple[int, ...]] | None, np.ndarray | None]:
    """(`keep` for eval_batches, relabel map: TFDS label -> 0..n-1, -1 elsewhere) of a
    dataset with `class_names`; (d.keep, None) otherwise."""
    if not d.class_names:
        return d.keep, None
    feature = builder.info.features[d.label_keys[0]]
    ints = np.array([feature.str2int(n) for n in d.class_names], np.int64)
    relabel = np.full(feature.num_classes, -1, np.int64)
    relabel[ints] = np.arange(len(ints))
    return (d.label_keys[0], tuple(int(i) for i in ints)), relabel


def per_class_subset(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of `shots` examples of every class in `labels` (all of a smaller
    class), drawn without replacement: a pure function of (labels, shots, seed)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), min(shots, int(n)), replace=False)
             for c, n in zip(*np.unique(labels, return_counts=True), strict=True)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def few_shot_splits(train: dict[str, np.ndarray], val: dict[str, np.ndarray],
                    label_key: str, shots: int, seed: int
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, refit) of a few-shot linear dataset, as the CASSLE reference draws them:
    `shots` per class of train for the sweep, and, independently, `shots` per class of
    train + val for the refit at the chosen penalty (the sweep validates on all of val)."""
    pool = {k: np.concatenate([train[k], val[k]]) for k in train}
    take = lambda d, idx: {k: v[idx] for k, v in d.items()}
    return (take(train, per_class_subset(train[label_key], shots, seed)),
            take(pool, per_class_subset(pool[label_key], shots, seed + 1)))


# Their lookups, through the one registry idiom (augself_jax/registries.py).
LINEAR_REGISTRY: Registry[EvalDataset] = Registry("eval.datasets", lambda: LINEAR)
FEWSHOT_REGISTRY: Registry[FewShotDataset] = Registry("eval.fewshot_datasets", lambda: FEWSHOT)
get_linear_dataset, get_fewshot_dataset = LINEAR_REGISTRY.get, FEWSHOT_REGISTRY.get


def validation_split(num_examples: int, ds: EvalDataset, seed: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) into `trainval_split`, a pure function of (n, seed).

    The reference's torch-generator splits cannot be reproduced; ours are seeded and the seed
    is written with the results. At the reference size the sizes are exactly the reference's.
    """
    seed = ds.val_seed if seed is None else seed
    total = ds.num_train + ds.num_val
    num_val = num_examples * ds.num_val // total if num_examples != total else ds.num_val
    perm = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


# ----------------------------------------------------------------------------------------
# Builders over manual downloads.

_MIT67_INSTRUCTIONS = """\
MIT-67 (Indoor Scene Recognition) must be downloaded by hand into manual_dir:
  https://web.mit.edu/torralba/www/indoor.html
  - indoorCVPR_09.tar (extract it there: manual_dir/Images/<class>/<image>.jpg)
  - TrainImages.txt and TestImages.txt (the official 80/20 images-per-class split)
Then: python evaluate.py ... --config.eval.manual_dir=<manual_dir>
"""

_AIRCRAFT_INSTRUCTIONS = """\
FGVC-Aircraft must be downloaded by hand into manual_dir:
  https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/
  - fgvc-aircraft-2013b.tar.gz, extracted there: manual_dir/fgvc-aircraft-2013b/data/...
    (images/, variants.txt, images_variant_{train,val,test}.txt)
Then: python evaluate.py ... --config.eval.manual_dir=<manual_dir>
"""


def _require(paths: list[str], instructions: str) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise ConfigError(f"manual download missing: {missing[0]}\n{instructions}")


def _rgb(path: str) -> np.ndarray:
    """Decoded RGB pixels: some MIT-67 files are GIF or grayscale, so re-encode them all."""
    import PIL.Image

    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class _ManualImageBuilder(tfds.core.GeneratorBasedBuilder):
    """Labelled JPEG images from files the user downloaded by hand."""

    VERSION = tfds.core.Version("1.0.0")
    NUM_CLASSES: int
    HOMEPAGE: str

    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls):
        # Nothing is downloaded, so there is nothing to check; TFDS would otherwise look for
        # a checksums file through importlib_resources, which is not a requirement.
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE)


class Mit67(_ManualImageBuilder):
    """MIT Indoor Scenes (67 classes), the official split, from a manual download."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _MIT67_INSTRUCTIONS
    NUM_CLASSES = 67
    HOMEPAGE = "https://web.mit.edu/torralba/www/indoor.html"

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        files = {s: os.path.join(root, f"{s.capitalize()}Images.txt") for s in ("train", "test")}
        _require([os.path.join(root, "Images"), *files.values()], _MIT67_INSTRUCTIONS)
        classes = sorted(os.listdir(os.path.join(root, "Images")))
        return {s: self._generate_examples(root, f, classes) for s, f in files.items()}

    def _generate_examples(self, root, list_file, classes):
        with open(list_file) as f:
            names = [line.strip() for line in f if line.strip()]
        for name in names:
            yield name, {"image": _rgb(os.path.join(root, "Images", name)),
                         "label": classes.index(name.split("/")[0]), "file_name": name}


class FgvcAircraft(_ManualImageBuilder):
    """FGVC-Aircraft 2013b, 100 variants, official train / val / test, from a manual download."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _AIRCRAFT_INSTRUCTIONS
    NUM_CLASSES = 100
    HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"

    def _split_generators(self, dl_manager):
        data = os.path.join(str(dl_manager.manual_dir), "fgvc-aircraft-2013b", "data")
        lists = {"train": "train", "validation": "val", "test": "test"}
        lists = {s: os.path.join(data, f"images_variant_{v}.txt") for s, v in lists.items()}
        _require([os.path.join(data, "variants.txt"), *lists.values()], _AIRCRAFT_INSTRUCTIONS)
        with open(os.path.join(data, "variants.txt")) as f:
            variants = [line.strip() for line in f if line.strip()]
        return {s: self._generate_examples(data, f, variants) for s, f in lists.items()}

    def _generate_examples(self, data, list_file, variants):
        with open(list_file) as f:
            for line in f:
                if not line.strip():
                    continue
                image_id, variant = line.strip().split(" ", 1)
                yield image_id, {"image": _rgb(os.path.join(data, "images", f"{image_id}.jpg")),
                                 "label": variants.index(variant), "file_name": image_id}

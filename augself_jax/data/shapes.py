"""The built-in dataset: one coloured shape on a plain dark background (TFDS `augself_shapes`).

Generated locally and deterministically (NumPy, vectorised) on first use, stored as
ArrayRecord (see data/source.py); no download.
Labels: `shape` (4 classes, augmentation-invariant), `hue` (8 bins of the shape's hue,
colour-sensitive), `position` (3x3 grid cell of the centre, row-major, within the range the
centre can take at the shape's size) and `size` (3 bins), each balanced; the exact values
behind them are stored too: `hue_angle` (degrees in [0, 360)), `center_x`, `center_y`
(fractions of the width and height), `size_value` (shape radius as a fraction of the side).

Version 2 is built so that the objectives can learn the task (why each choice, measured):
- shapes are large (radius 0.20 to 0.38 of the side) and lie wholly inside the image, so
  most views of the reference crop (scale 0.2 to 1) hold enough of the shape to tell which
  it is; in version 1 (radius 0.12 to 0.27, centres anywhere) the crop alone took a
  supervised network's shape accuracy from 61% to 27%;
- the background is the same dark gray for every image with gray pixel noise, so the only
  content two views of one image share is the shape (its form, size, position and hue);
  version 1 gave each image its own background colour and stripes, a per-image cue that
  survives cropping and that contrastive objectives used instead of the shape;
- the shape's saturation and value are fixed, so its hue is the only colour signal; every
  hue's luma stays well above the background's, so the shape shows in grayscale views.
"""

import dataclasses
import io
from collections.abc import Iterator

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

SHAPES = ("circle", "square", "triangle", "plus")
NUM_HUES = 8
NUM_POSITIONS = 9
SIZE_BINS = (0.20, 0.26, 0.32, 0.38)  # radius as a fraction of the side: 3 bins
MARGIN = 0.02  # gap between the shape's extent and the image border, fraction of the side
BACKGROUND_GRAY = 0.12  # the background's level for every image ...
NOISE_STD = 0.03  # ... plus i.i.d. gray pixel noise: no cue that two crops share
SHAPE_SATURATION = 0.8  # fixed, so hue is the shape's only colour property;
SHAPE_VALUE = 1.0  # the darkest hue (blue) then has luma 0.29, above the background
_CHUNK = 2048  # examples rendered at once (bounds memory at large sizes)


# The `32px_hue72` config's hue band: the 8 hue classes share 72 degrees, the span of the
# reference's hue jitter (+-0.1 turn), so that the reference's own jitter moves a shape across
# most of the classes and colour stops telling two images apart. Magenta to red, where the
# luma of S = 0.8, V = 1 barely changes (0.53 to 0.44), so the band's hue is not a
# brightness cue.
NARROW_HUE_START = 288.0
NARROW_HUE_SPAN = 72.0


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    image_size: int = 32
    num_train: int = 20_000
    num_test: int = 5_000
    hue_start: float = 0.0  # degrees: the hue classes split [hue_start, hue_start + hue_span)
    hue_span: float = 360.0


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels in [0, k) whose class counts differ by at most one, in random order."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    choices = [np.stack(c, -1) for c in
               ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = np.zeros(h.shape + (3,), np.float64)
    for k, c in enumerate(choices):
        out = np.where((i == k)[..., None], c, out)
    return out


def centre_from_cell(v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """A centre coordinate from its place `v` in [0, 1] of the range a shape of `radius`
    can take while staying inside the image with MARGIN to spare."""
    reach = radius + MARGIN
    return reach + v * (1.0 - 2.0 * reach)


def sample_labels(n: int, seed: int, hue_start: float = 0.0,
                  hue_span: float = 360.0) -> dict[str, np.ndarray]:
    """Balanced labels and the exact continuous values behind them; the hue classes split
    the band [hue_start, hue_start + hue_span) degrees into NUM_HUES equal bins."""
    rng = np.random.default_rng(seed)
    shape = _balanced(rng, n, len(SHAPES))
    hue = _balanced(rng, n, NUM_HUES)
    position = _balanced(rng, n, NUM_POSITIONS)
    size = _balanced(rng, n, len(SIZE_BINS) - 1)
    # Keep continuous values away from bin edges so every label is unambiguous.
    u = rng.uniform(0.1, 0.9, size=(n, 4))
    hue_angle = (hue_start + (hue + u[:, 0]) * (hue_span / NUM_HUES)) % 360.0
    lo, hi = np.asarray(SIZE_BINS[:-1])[size], np.asarray(SIZE_BINS[1:])[size]
    size_value = lo + u[:, 3] * (hi - lo)
    # Every shape lies within `size_value` of its centre: the centre's range shrinks with
    # the size so that the whole shape stays inside the image; `position` is the 3x3 cell
    # of the centre within that range.
    center_y = centre_from_cell((position // 3 + u[:, 1]) / 3.0, size_value)
    center_x = centre_from_cell((position % 3 + u[:, 2]) / 3.0, size_value)
    return {
        "shape": shape, "hue": hue, "position": position, "size": size,
        "hue_angle": hue_angle.astype(np.float32), "center_x": center_x.astype(np.float32),
        "center_y": center_y.astype(np.float32), "size_value": size_value.astype(np.float32),
    }


def _shape_mask(labels: dict[str, np.ndarray], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """bool [n, S, S]: the pixels (centres at xx, yy) that each example's shape covers."""
    dx = xx[None] - labels["center_x"][:, None, None]
    dy = yy[None] - labels["center_y"][:, None, None]
    r = labels["size_value"][:, None, None]
    ax, ay = np.abs(dx), np.abs(dy)
    masks = (
        dx**2 + dy**2 <= r**2,  # circle
        np.maximum(ax, ay) <= 0.85 * r,  # square (about the circle's area)
        (dy <= 0.6 * r) & (ax <= 0.6 * (dy + r)),  # triangle, apex up
        ((ax <= 0.33 * r) & (ay <= r)) | ((ay <= 0.33 * r) & (ax <= r)),  # plus
    )
    shape = labels["shape"][:, None, None]
    mask = np.zeros_like(masks[0])
    for k, mk in enumerate(masks):
        mask |= (shape == k) & mk
    return mask


# Each kind's extent around its centre in units of the radius r, read off `_shape_mask`:
# (left, top, right, bottom) reach, with y growing downwards as in the image.
# circle and plus: r every way; square: its half-side 0.85 r; triangle: apex at dy = -r,
# base at dy = 0.6 r where the half-width is 0.6 (0.6 r + r) = 0.96 r.
_BOX_REACH = np.array([(1.0, 1.0, 1.0, 1.0), (0.85, 0.85, 0.85, 0.85),
                       (0.96, 1.0, 0.96, 0.6), (1.0, 1.0, 1.0, 1.0)])


def bounding_box(labels: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [n, 4]: each shape's exact bounding box (x_min, y_min, x_max, y_max) as
    fractions of the side, from the stored `shape`, `center_x`, `center_y`, `size_value`
    (the continuous region `render` fills; its pixels' centres lie inside it)."""
    reach = _BOX_REACH[np.asarray(labels["shape"], np.int64)] * np.asarray(
        labels["size_value"], np.float64)[:, None]
    cx = np.asarray(labels["center_x"], np.float64)
    cy = np.asarray(labels["center_y"], np.float64)
    return np.stack([cx - reach[:, 0], cy - reach[:, 1], cx + reach[:, 2], cy + reach[:, 3]],
                    1).astype(np.float32)


def shape_mask(labels: dict[str, np.ndarray], image_size: int) -> np.ndarray:
    """bool [n, S, S]: where `render` draws each example's shape."""
    coords = (np.arange(image_size) + 0.5) / image_size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return _shape_mask(labels, xx, yy)


def render_chunks(labels: dict[str, np.ndarray], image_size: int, seed: int
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 [m, S, S, 3]) images for the given labels, _CHUNK at a time, so that
    generating a large split holds one chunk; background noise drawn from `seed`."""
    n = len(labels["shape"])
    rng = np.random.default_rng(seed)
    fg_rgb = _hsv_to_rgb(labels["hue_angle"].astype(np.float64) / 360.0,
                         np.full(n, SHAPE_SATURATION), np.full(n, SHAPE_VALUE))
    noise_seed = rng.integers(0, 2**31)
    coords = (np.arange(image_size) + 0.5) / image_size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        m = sl.stop - sl.start
        bg = BACKGROUND_GRAY + np.random.default_rng(noise_seed + start).normal(
            0, NOISE_STD, (m, image_size, image_size, 1))
        mask = _shape_mask({k: v[sl] for k, v in labels.items()}, xx, yy)
        img = np.where(mask[..., None], fg_rgb[sl, None, None, :], bg)
        yield start, np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def render(labels: dict[str, np.ndarray], image_size: int, seed: int) -> np.ndarray:
    """uint8 [n, S, S, 3] images for the given labels; background noise drawn from `seed`."""
    chunks = [images for _, images in render_chunks(labels, image_size, seed)]
    return np.concatenate(chunks) if chunks else np.zeros((0, image_size, image_size, 3),
                                                          np.uint8)


class AugselfShapes(tfds.core.GeneratorBasedBuilder):
    """One coloured shape on a plain dark background; labels shape, hue, position, size."""

    # 2.1.0 holds the examples of 2.0.0, stored as ArrayRecord. A new version rather than a
    # rewrite: a TFRecord copy of 2.0.0 prepared earlier stays as it is, unread.
    VERSION = tfds.core.Version("2.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": "Shapes that survive the crop and lie inside the image; a plain gray "
                 "background with no per-image cue; fixed saturation and value.",
        "2.1.0": "The same examples, stored as ArrayRecord (random access).",
    }
    BUILDER_CONFIGS = [
        ShapesConfig(name="32px", description="32x32 images (default)", image_size=32),
        ShapesConfig(name="64px", description="64x64 images", image_size=64),
        ShapesConfig(name="96px", description="96x96 images (STL-10 size)", image_size=96),
        # Ten times the examples, same distribution: the data-path benchmark's large size.
        ShapesConfig(name="64px_200k", description="64x64 images, 200,000 for training",
                     image_size=64, num_train=200_000),
        ShapesConfig(name="32px_hue72", description="32x32 images, the 8 hue classes within "
                     "the reference hue jitter's 72 degrees", image_size=32,
                     hue_start=NARROW_HUE_START, hue_span=NARROW_HUE_SPAN),
    ]
    DEFAULT_CONFIG_NAME = "32px"

    # Nothing is downloaded, so there are no checksums. Overridden because TFDS's lookup of
    # the checksum file needs the `importlib_resources` backport, absent from requirements.
    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls):
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        f = tfds.features
        return self.dataset_info_from_configs(
            features=f.FeaturesDict({
                "image": f.Image(shape=(s, s, 3)),
                "shape": f.ClassLabel(names=list(SHAPES)),
                "hue": f.ClassLabel(num_classes=NUM_HUES),
                "position": f.ClassLabel(num_classes=NUM_POSITIONS),
                "size": f.ClassLabel(num_classes=len(SIZE_BINS) - 1),
                "hue_angle": f.Scalar(np.float32),
                "center_x": f.Scalar(np.float32),
                "center_y": f.Scalar(np.float32),
                "size_value": f.Scalar(np.float32),
            }),
            supervised_keys=("image", "shape"),
            homepage="https://github.com/augself-jax",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        c = self.builder_config
        return {"train": self._generate_examples(c.num_train, seed=0),
                "test": self._generate_examples(c.num_test, seed=1)}

    def _generate_examples(self, n: int, seed: int):
        c = self.builder_config
        labels = sample_labels(n, seed, c.hue_start, c.hue_span)
        for start, images in render_chunks(labels, self.builder_config.image_size,
                                           seed + 1000):
            for i, image in enumerate(images, start):
                # Encoded here with PIL: several times faster than TFDS's per-example TF call.
                buffer = io.BytesIO()
                PIL.Image.fromarray(image).save(buffer, format="png")
                yield i, {"image": buffer.getvalue(), **{k: v[i] for k, v in labels.items()}}

"""Sensitivity analysis: how much each augmentation alone moves the features.

For each augmentation at the pretraining config's strengths: the mean cosine similarity
between the features of a clean image and of its transformed copy, against the same
figure for unrelated image pairs, at the backbone output and after each ResNet stage
(global-average-pooled). A similarity near the unrelated level means the representation
is sensitive to (keeps information about) the augmentation.

The transformed copy is made by the TRAINING chain (the registry's host ops in
TensorFlow, then its device ops in JAX) with that one augmentation always applied and
every other one neutral, its parameters drawn by the training sampler from a seed per
image: the analysis measures sensitivity to exactly what the model was trained with.

Sensitivity over strength (the CASSLE reference's augmentation interpolation): the same
similarity as one augmentation's strength s goes from 0 (the identity) to 1 (the pretraining
config's), `STRENGTH` saying what s scales: the colour jitter's factors, the blur's sigma
range, the crop's smallest area and its aspect-ratio range (both from 1).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from augself_jax import augs
from augself_jax.evaluation import common

AUGMENTATIONS = augs.names()


def _toward_one(pair: Sequence[float], s: float) -> tuple[float, float]:
    return tuple(1.0 - s * (1.0 - float(v)) for v in pair)


# What strength s in [0, 1] does to an augmentation's fields: 0 makes the op the identity,
# 1 leaves the pretraining config's values (ratios are interpolated in log space).
STRENGTH: dict[str, Callable[[ml_collections.ConfigDict, float], dict]] = {
    "color": lambda aug, s: {"color_strength": float(aug.color_strength) * s},
    "blur": lambda aug, s: {"blur_sigma": tuple(float(v) * s for v in aug.blur_sigma)},
    "crop": lambda aug, s: {"crop_scale": _toward_one(aug.crop_scale, s),
                            "crop_ratio": tuple(float(v) ** s for v in aug.crop_ratio)},
}


def controlled_config(aug: ml_collections.ConfigDict, name: str,
                      strength: float = 1.0) -> ml_collections.ConfigDict:
    """`aug` with augmentation `name` always applied and every other one neutral; `name`'s
    fields scaled to `strength` (STRENGTH) when it is not 1."""
    out = ml_collections.ConfigDict(aug.to_dict())
    for entry in augs.entries().values():
        if entry.name != name:
            out.update(entry.neutral_overrides())
    out.update(augs.get(name).always_overrides())
    if strength != 1.0:
        if name not in STRENGTH:
            raise ValueError(f"sensitivity strength: '{name}' has none; allowed: "
                             f"{', '.join(STRENGTH)}")
        out.update(STRENGTH[name](aug, float(strength)))
    return out


def controlled_views(images: np.ndarray, aug: ml_collections.ConfigDict, name: str,
                     seed: int = 0, strength: float = 1.0
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The training chain's host part on square uint8 images [N, S, S, 3] with only
    `name` applied (at `strength`): (uint8 views [N, S, S, 3], their records). Image i's
    parameters are drawn by the training sampler from view_seed(seed, 0, i, 1), whatever
    the strength: the same uniforms, scaled ranges."""
    import tensorflow as tf

    from augself_jax.data import augment

    if name not in AUGMENTATIONS:
        raise ValueError(f"sensitivity augmentation: unknown '{name}'; allowed: "
                         f"{', '.join(AUGMENTATIONS)}")
    n, h, w = images.shape[:3]
    if h != w:
        raise ValueError(f"sensitivity images must be square; got {h}x{w}")
    settings = controlled_config(aug, name, strength)

    def one(image, index):
        u = tf.random.stateless_uniform([1, augment.NUM_UNIFORMS],
                                        augment.view_seed(seed, 0, index, 1), dtype=tf.float64)
        pixels, params = augment.views(image, u, settings, h)
        return pixels[0], augment.pack(params)[0]

    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))
    ds = ds.map(augment.traced_as_written(one)).batch(max(n, 1))  # sequential: deterministic
    pixels, packed = next(ds.as_numpy_iterator())
    return pixels, augment.unpack(packed)


def augmented(images: np.ndarray, aug: ml_collections.ConfigDict, name: str,
              seed: int = 0, strength: float = 1.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`controlled_views` then the training chain's device part: (float views in [0, 1],
    their records with the device-filled keys filled)."""
    from augself_jax.augs import StaticSettings
    from augself_jax.data.photometric import apply_photometric

    pixels, params = controlled_views(images, aug, name, seed, strength)
    settings = StaticSettings.from_aug(aug)
    out, params = jax.jit(lambda v, p: apply_photometric(v, p, settings))(pixels, params)
    return np.asarray(out), jax.tree.map(np.asarray, params)


def stage_outputs(backbone: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
    """Pooled features after each ResNet stage but the last (`stage1`...) and `output`
    (the last stage, = backbone(x)).

    Walks the ResNet's own layers (conv1, bn1, blocks); other backbones give `output` only.
    """
    if not all(hasattr(backbone, a) for a in ("conv1", "bn1", "blocks", "stem")):
        return {"output": backbone(x)}
    h = x.astype(backbone.dtype)
    h = nnx.relu(backbone.bn1(backbone.conv1(h)))
    if backbone.stem == "imagenet":
        h = nnx.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outs, blocks = {}, list(backbone.blocks)
    for i, block in enumerate(blocks):
        h = block(h)
        # A block with a projection shortcut opens a new stage (stride 2 / more channels).
        if i + 1 < len(blocks) and getattr(blocks[i + 1], "downsample", None) is not None:
            outs[f"stage{len(outs) + 1}"] = jnp.mean(h, axis=(1, 2))
    outs["output"] = jnp.mean(h, axis=(1, 2))  # the last stage
    return outs


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return jnp.sum(a * b, axis=-1)


def similarities(backbone: nnx.Module, images: np.ndarray,
                 variants: dict[str, tuple[str, ml_collections.ConfigDict, float]],
                 mean: Sequence[float], std: Sequence[float], *, mesh: jax.sharding.Mesh,
                 seed: int = 0, batch_size: int = 256, progress: common.Progress | None = None
                 ) -> dict[str, dict[str, float]]:
    """{stage: {'unrelated': cos, <label>: cos, ...}}: mean cosine similarity of each
    image's clean features with those of its view under each variant (label -> (the one
    augmentation applied, the aug config, its strength)), and with another image's."""
    from augself_jax.augs import StaticSettings
    from augself_jax.data.photometric import apply_photometric, normalize

    graphdef, state = nnx.split(backbone)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    rows = NamedSharding(mesh, P("data"))
    n = len(images)
    batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    partner = np.random.default_rng(seed).permutation(n)
    partner = np.where(partner == np.arange(n), (partner + 1) % n, partner)  # never itself
    starts = range(0, n, batch_size)
    idx = [np.arange(b, b + batch_size) % n for b in starts]  # wrap: fixed shape, then cut
    put = lambda x: jax.device_put(x, rows)

    def features(state, x):
        return stage_outputs(nnx.merge(graphdef, state), normalize(x, mean, std))

    @jax.jit
    def clean_features(state, imgs):
        return features(state, imgs / 255.0)

    # One compiled step for every variant: they share the pretraining config's `aug` (the
    # one augmentation and its strength are in each view's record, not in the settings).
    found = {StaticSettings.from_aug(aug) for _, aug, _ in variants.values()}
    if len(found) > 1:
        raise ValueError(f"sensitivity variants: one aug config expected; got {len(found)}")
    settings = found.pop() if found else StaticSettings.of()

    @jax.jit
    def cosines(state, pixels, params, clean):
        x, _ = apply_photometric(pixels, params, settings)
        return jax.tree.map(_cosine, clean, features(state, x))

    clean = [clean_features(state, put(images[i])) for i in idx]
    # Clean features of every image on the host: the unrelated pairs cross batches.
    host = jax.device_get(clean)
    stacked = {k: np.concatenate([h[k] for h in host])[:n].astype(np.float64)
               for k in host[0]}
    out: dict[str, dict[str, float]] = {}
    for stage, f in stacked.items():
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        out[stage] = {"unrelated": float(np.mean(np.sum(unit * unit[partner], axis=1)))}
    for label, (name, aug, strength) in variants.items():
        pixels, params = controlled_views(images, aug, name, seed, strength)
        sums: dict[str, float] = {}
        for i, c in zip(idx, clean, strict=True):
            valid = (np.arange(i[0], i[0] + batch_size) < n).astype(np.float64)
            cos = jax.device_get(cosines(state, put(pixels[i]),
                                         {k: put(v[i]) for k, v in params.items()}, c))
            for stage, v in cos.items():
                sums[stage] = sums.get(stage, 0.0) + float(np.sum(np.asarray(v) * valid))
        for stage, total in sums.items():
            out[stage][label] = total / n
        if progress is not None:
            progress.add(1, label)
    order = sorted(out, key=lambda s: (s == "output", s))  # stage1, stage2, ..., output
    return {stage: out[stage] for stage in order}


def sensitivity(backbone: nnx.Module, images: np.ndarray, aug: ml_collections.ConfigDict,
                mean: Sequence[float], std: Sequence[float], *, mesh: jax.sharding.Mesh,
                augmentations: Sequence[str] = AUGMENTATIONS, seed: int = 0,
                batch_size: int = 256, log: Callable[[str], None] | None = None
                ) -> dict[str, dict[str, float]]:
    """{stage: {'unrelated': cos, <aug>: cos, ...}} mean cosine similarities, uint8 images
    in, each augmentation at the pretraining config's strength."""
    variants = {name: (name, aug, 1.0) for name in augmentations}
    return similarities(backbone, images, variants, mean, std, mesh=mesh, seed=seed,
                        batch_size=batch_size,
                        progress=common.Progress("sensitivity", len(variants), log,
                                                 "variants"))


def strength_label(name: str, strength: float) -> str:
    return f"{name}_s{strength:g}"


def strength_sweep(backbone: nnx.Module, images: np.ndarray, aug: ml_collections.ConfigDict,
                   mean: Sequence[float], std: Sequence[float], *, mesh: jax.sharding.Mesh,
                   augmentations: Sequence[str] = ("color", "blur", "crop"),
                   strengths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), seed: int = 0,
                   batch_size: int = 256, log: Callable[[str], None] | None = None
                   ) -> dict[str, dict[str, float]]:
    """{stage: {'unrelated': cos, '<aug>_s<strength>': cos, ...}}: sensitivity as each
    augmentation's strength is interpolated (STRENGTH), the same draws at every strength."""
    variants = {strength_label(name, s): (name, aug, float(s))
                for name in augmentations for s in strengths}
    return similarities(backbone, images, variants, mean, std, mesh=mesh, seed=seed,
                        batch_size=batch_size,
                        progress=common.Progress("sensitivity over strength",
                                                 len(variants), log, "variants"))


def y_range(values: Sequence[float]) -> tuple[float, float]:
    """An axis range around `values` that shows their differences (not 0 to 1: the values
    of a trained network often lie within a few hundredths)."""
    lo, hi = float(min(values)), float(max(values))
    pad = max(0.08 * (hi - lo), 0.004)
    return lo - pad, hi + pad


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    png = io.BytesIO()  # rendered in memory, written through epath: a gs:// workdir keeps it
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def _write(png: bytes, path: str) -> str:
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LEGEND_WIDTH = 1.7  # inches to the right of the axes: the legend covers no data


def plot_size(num_stages: int) -> tuple[float, float]:
    """(width, height) in inches of `plot`'s figure."""
    return 2.2 + 1.1 * num_stages + LEGEND_WIDTH, 3.6


def plot(result: dict[str, dict[str, float]], path: str, title: str = "") -> str:
    """`plot_png` written to `path` (local or gs://); returns the path."""
    return _write(plot_png(result, title), path)


def plot_png(result: dict[str, dict[str, float]], title: str = "") -> bytes:
    """One column per stage, one marker per augmentation (the cosine similarity of clean and
    augmented features), the unrelated-pairs level dashed; the y-axis spans the values."""
    plt = _pyplot()
    stages = list(result)
    kinds = [k for k in result[stages[0]] if k != "unrelated"]
    fig, ax = plt.subplots(figsize=plot_size(len(stages)), layout="constrained")
    width = 0.7 / max(len(kinds), 1)
    offsets = (np.arange(len(kinds)) - (len(kinds) - 1) / 2) * width
    markers = "osD^vP*X"
    for j, kind in enumerate(kinds):
        ax.plot(np.arange(len(stages)) + offsets[j], [result[s][kind] for s in stages],
                markers[j % len(markers)], markersize=7, label=kind, linestyle="none")
    for i, s in enumerate(stages):
        ax.hlines(result[s]["unrelated"], i - 0.42, i + 0.42, colors="k",
                  linestyles="dashed", label="unrelated pairs" if i == 0 else None)
    ax.set_xticks(np.arange(len(stages)), stages)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    ax.set_ylim(*y_range([v for r in result.values() for v in r.values()]))
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel("cosine similarity, clean vs augmented\n(higher: more invariant)")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return _png(fig)


def plot_strength(result: dict[str, dict[str, float]], title: str = "") -> bytes:
    """One panel per stage: the cosine similarity against each augmentation's strength
    (labels '<aug>_s<strength>' of `strength_sweep`), the unrelated-pairs level dashed."""
    plt = _pyplot()
    stages = list(result)
    curves: dict[str, list[tuple[float, str]]] = {}
    for label in result[stages[0]]:
        if label != "unrelated":
            name, _, s = label.rpartition("_s")
            curves.setdefault(name, []).append((float(s), label))
    fig, axes = plt.subplots(1, len(stages), squeeze=False, layout="constrained",
                             figsize=(2.6 * len(stages) + LEGEND_WIDTH, 3.4))
    for ax, stage in zip(axes[0], stages, strict=True):
        for j, (name, points) in enumerate(curves.items()):
            points.sort()
            ax.plot([p for p, _ in points], [result[stage][k] for _, k in points], "-o",
                    markersize=4, color=f"C{j}", label=name if stage == stages[0] else None)
        ax.axhline(result[stage]["unrelated"], color="k", linestyle="dashed",
                   label="unrelated pairs" if stage == stages[0] else None)
        ax.set_ylim(*y_range(list(result[stage].values())))
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("strength (0: none, 1: as pretrained)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cosine similarity, clean vs augmented")
    fig.suptitle(title, fontsize=9)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return _png(fig)


def method_label(config: ml_collections.ConfigDict) -> str:
    """'simclr + AugSelf (crop, color)', 'barlow + CASSLE', ...: what was pretrained."""
    from augself_jax.aware.augself import enabled_augs

    label = str(config.method.name)
    heads = [a for a, _ in enabled_augs(config.augself)]
    if heads:
        only = " only" if config.augself.get("ss_only", False) else ""
        label += f" + AugSelf{only} ({', '.join(heads)})"
    if config.cassle.enabled:
        label += " + CASSLE"
    return label


def _strengths(config: ml_collections.ConfigDict) -> list[float]:
    field = "eval.sensitivity.strengths"
    out = []
    for item in common.split_list(config.eval.sensitivity.strengths):
        try:
            value = float(item)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise common.ConfigError(f"{field}: '{item}' is not allowed; allowed: numbers "
                                     "from 0 (no augmentation) to 1 (the pretraining strength)")
        out.append(value)
    return out


class SensitivityEvaluator(common.Evaluator):
    """The `sensitivity` protocol: the analysis above on a dataset's first test images, as
    percent cosine per stage and augmentation, then over strength (eval.sensitivity.
    strength_augmentations; none when empty), plus the plots (process 0)."""

    name = "sensitivity"

    def __init__(self, context: common.Context, aug: ml_collections.ConfigDict,
                 augmentations: Sequence[str], num_images: int, seed: int,
                 strength_augmentations: Sequence[str] = (),
                 strengths: Sequence[float] = (), method: str = ""):
        self.context, self.aug, self.seed = context, aug, seed
        self.augmentations, self.num_images = tuple(augmentations), num_images
        self.strength_augmentations = tuple(strength_augmentations)
        self.strengths, self.method = tuple(strengths), method

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        s = config.eval.sensitivity
        for a in common.split_list(s.augmentations):
            if a not in AUGMENTATIONS:
                raise common.ConfigError(f"eval.sensitivity.augmentations: unknown '{a}'; "
                                         f"allowed: {', '.join(AUGMENTATIONS)}")
        for a in common.split_list(s.strength_augmentations):
            if a not in STRENGTH:
                raise common.ConfigError(f"eval.sensitivity.strength_augmentations: '{a}' "
                                         f"has no strength; allowed: {', '.join(STRENGTH)}")
        if common.split_list(s.strength_augmentations) and not _strengths(config):
            raise common.ConfigError("eval.sensitivity.strengths: empty; allowed: numbers "
                                     "from 0 to 1, e.g. 0,0.5,1")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> SensitivityEvaluator:
        s = config.eval.sensitivity
        return cls(context, config.aug, common.split_list(s.augmentations), int(s.num_images),
                   int(config.seed), common.split_list(s.strength_augmentations),
                   _strengths(config), method_label(config))

    def images_needed(self) -> int:
        return self.num_images

    def _title(self, dataset: str, what: str) -> str:
        ctx = self.context
        run = ctx.run_name or "run"
        return (f"{run} | {self.method} | step {ctx.step}\n{what} on {dataset} "
                f"({self.num_images} test images)")

    def run(self, features: common.Features) -> list[common.Result]:
        images, ctx = features.images, self.context
        if images is None or not len(images):
            return []
        kw = dict(mesh=ctx.mesh, seed=self.seed, log=ctx.log)
        name = features.name
        results = []
        sens = sensitivity(ctx.backbone, images, self.aug, ctx.mean, ctx.std,
                           augmentations=self.augmentations, **kw)
        if jax.process_index() == 0:
            path = common.publish_png(ctx, f"sensitivity_{name}.png", plot_png(
                sens, self._title(name, "sensitivity to each augmentation")))
            ctx.log(f"{name}: sensitivity plot {path}")
        results += [common.Result(name, f"cos_{kind}@{stage}", 100.0 * cos,
                                  extra={"n_images": len(images)})
                    for stage, kinds in sens.items() for kind, cos in kinds.items()]
        if not self.strength_augmentations:
            return results
        sweep = strength_sweep(ctx.backbone, images, self.aug, ctx.mean, ctx.std,
                               augmentations=self.strength_augmentations,
                               strengths=self.strengths, **kw)
        if jax.process_index() == 0:
            path = common.publish_png(ctx, f"sensitivity_strength_{name}.png", plot_strength(
                sweep, self._title(name, "sensitivity over augmentation strength")))
            ctx.log(f"{name}: sensitivity-over-strength plot {path}")
        results += [common.Result(name, f"cos_{kind}@{stage}", 100.0 * cos,
                                  extra={"n_images": len(images)})
                    for stage, kinds in sweep.items() for kind, cos in kinds.items()
                    if kind != "unrelated"]  # the same pairs as above
        return results


PROTOCOL = SensitivityEvaluator

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
"""

from __future__ import annotations

import io
from collections.abc import Sequence

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

AUGMENTATIONS = tuple(e.name for e in augs.entries())


def controlled_config(aug: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """`aug` with augmentation `name` always applied and every other one neutral."""
    out = ml_collections.ConfigDict(aug.to_dict())
    for entry in augs.entries():
        if entry.name != name:
            out.update(entry.neutral_overrides())
    out.update(augs.get(name).always_overrides())
    return out


def controlled_views(images: np.ndarray, aug: ml_collections.ConfigDict, name: str,
                     seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The training chain's host part on square uint8 images [N, S, S, 3] with only
    `name` applied: (uint8 views [N, S, S, 3], their records). Image i's parameters are
    drawn by the training sampler from view_seed(seed, 0, i, 1)."""
    import tensorflow as tf

    from augself_jax.data import augment

    if name not in AUGMENTATIONS:
        raise ValueError(f"sensitivity augmentation: unknown '{name}'; allowed: "
                         f"{', '.join(AUGMENTATIONS)}")
    n, h, w = images.shape[:3]
    if h != w:
        raise ValueError(f"sensitivity images must be square; got {h}x{w}")
    settings = controlled_config(aug, name)

    def one(image, index):
        u = tf.random.stateless_uniform([1, augment.NUM_UNIFORMS],
                                        augment.view_seed(seed, 0, index, 1), dtype=tf.float64)
        pixels, params = augment.views(image, u, settings, h)
        return pixels[0], augment.pack(params)[0]

    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))
    ds = ds.map(one).batch(max(n, 1))  # sequential map: deterministic
    pixels, packed = next(ds.as_numpy_iterator())
    return pixels, augment.unpack(packed)


def augmented(images: np.ndarray, aug: ml_collections.ConfigDict, name: str,
              seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`controlled_views` then the training chain's device part: (float views in [0, 1],
    their records with the device-filled keys filled)."""
    from augself_jax.data.photometric import apply_photometric

    pixels, params = controlled_views(images, aug, name, seed)
    out, params = jax.jit(lambda v, p: apply_photometric(
        v, p, blur_kernel=int(aug.blur_kernel)))(pixels, params)
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


def sensitivity(backbone: nnx.Module, images: np.ndarray, aug: ml_collections.ConfigDict,
                mean: Sequence[float], std: Sequence[float], *, mesh: jax.sharding.Mesh,
                augmentations: Sequence[str] = AUGMENTATIONS, seed: int = 0,
                batch_size: int = 256) -> dict[str, dict[str, float]]:
    """{stage: {'unrelated': cos, <aug>: cos, ...}} mean cosine similarities, uint8 images in."""
    from augself_jax.data.photometric import apply_photometric, normalize

    graphdef, state = nnx.split(backbone)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    rows = NamedSharding(mesh, P("data"))
    n = len(images)
    batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    partner = np.random.default_rng(seed).permutation(n)
    partner = np.where(partner == np.arange(n), (partner + 1) % n, partner)  # never itself
    # The host part of the training chain, once per augmentation, for every image.
    host = {name: controlled_views(images, aug, name, seed) for name in augmentations}
    kernel = int(aug.blur_kernel)

    @jax.jit
    def run(state, imgs, partner_imgs, transformed):
        model = nnx.merge(graphdef, state)
        feats = lambda x: stage_outputs(model, x)
        clean = feats(normalize(imgs / 255.0, mean, std))
        other = feats(normalize(partner_imgs / 255.0, mean, std))
        out = {"unrelated": jax.tree.map(_cosine, clean, other)}
        for name, (pixels, params) in transformed.items():
            x, _ = apply_photometric(pixels, params, blur_kernel=kernel)
            out[name] = jax.tree.map(_cosine, clean, feats(normalize(x, mean, std)))
        return out

    sums: dict = {}
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n  # wrap: fixed shape, weights below
        valid = (np.arange(start, start + batch_size) < n).astype(np.float64)
        put = lambda x: jax.device_put(x, rows)
        transformed = {name: (put(pixels[idx]), {k: put(v[idx]) for k, v in params.items()})
                       for name, (pixels, params) in host.items()}
        out = jax.device_get(run(state, put(images[idx]), put(images[partner[idx]]),
                                 transformed))
        for kind, per_stage in out.items():
            for stage, cos in per_stage.items():
                acc = sums.setdefault(stage, {}).setdefault(kind, 0.0)
                sums[stage][kind] = acc + float(np.sum(np.asarray(cos) * valid))
    order = sorted(sums, key=lambda s: (s == "output", s))  # stage1, stage2, ..., output
    return {stage: {k: v / n for k, v in sums[stage].items()} for stage in order}


def plot(result: dict[str, dict[str, float]], path: str, title: str = "") -> str:
    """Grouped bars: one group per stage, one bar per augmentation, the unrelated level dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(result)
    kinds = [k for k in result[stages[0]] if k != "unrelated"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(stages), 3.2))
    width = 0.8 / max(len(kinds), 1)
    for j, kind in enumerate(kinds):
        ax.bar(np.arange(len(stages)) + j * width, [result[s][kind] for s in stages], width,
               label=kind)
    for i, s in enumerate(stages):
        ax.hlines(result[s]["unrelated"], i - width / 2, i + 0.8 - width / 2, colors="k",
                  linestyles="dashed", label="unrelated pairs" if i == 0 else None)
    ax.set_xticks(np.arange(len(stages)) + 0.4 - width / 2, stages)
    ax.set_ylabel("cosine similarity (clean vs augmented)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png = io.BytesIO()  # rendered in memory, written through epath: a gs:// workdir keeps it
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png.getvalue())
    return path


class SensitivityEvaluator(common.Evaluator):
    """The `sensitivity` protocol: the analysis above on a dataset's first test images, as
    percent cosine per stage and augmentation, plus the plot (process 0)."""

    name = "sensitivity"

    def __init__(self, context: common.Context, aug: ml_collections.ConfigDict,
                 augmentations: Sequence[str], num_images: int, seed: int):
        self.context, self.aug, self.seed = context, aug, seed
        self.augmentations, self.num_images = tuple(augmentations), num_images

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        for a in common.split_list(config.eval.sensitivity.augmentations):
            if a not in AUGMENTATIONS:
                raise common.ConfigError(f"eval.sensitivity.augmentations: unknown '{a}'; "
                                         f"allowed: {', '.join(AUGMENTATIONS)}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> SensitivityEvaluator:
        s = config.eval.sensitivity
        return cls(context, config.aug, common.split_list(s.augmentations), int(s.num_images),
                   int(config.seed))

    def images_needed(self) -> int:
        return self.num_images

    def run(self, features: common.Features) -> list[common.Result]:
        images, ctx = features.images, self.context
        if images is None or not len(images):
            return []
        sens = sensitivity(ctx.backbone, images, self.aug, ctx.mean, ctx.std, mesh=ctx.mesh,
                           augmentations=self.augmentations, seed=self.seed)
        if jax.process_index() == 0:
            path = plot(sens, str(epath.Path(ctx.eval_dir) / f"sensitivity_{features.name}.png"),
                        title=f"{features.name}, step {ctx.step}")
            ctx.log(f"{features.name}: sensitivity plot {path}")
        return [common.Result(features.name, f"cos_{kind}@{stage}", 100.0 * cos,
                              extra={"n_images": len(images)})
                for stage, kinds in sens.items() for kind, cos in kinds.items()]


PROTOCOL = SensitivityEvaluator

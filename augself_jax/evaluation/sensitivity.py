"""Sensitivity analysis: how much each augmentation alone moves the features.

For each augmentation (flip, colour jitter, grayscale, blur, crop) at the pretraining
config's strengths: the mean cosine similarity between the features of a clean image and of
its transformed copy, against the same figure for unrelated image pairs, at the backbone
output and after each ResNet stage (global-average-pooled). A similarity near the unrelated
level means the representation is sensitive to (keeps information about) the augmentation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AUGMENTATIONS = ("flip", "color", "gray", "blur", "crop")


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


def _color_jitter(img, key, aug):
    kb, kc, ks, kh = jax.random.split(key, 4)
    s = aug.color_strength
    u = lambda k, m: jax.random.uniform(k, (), minval=1 - m * s, maxval=1 + m * s)
    img = jnp.clip(img * u(kb, aug.brightness), 0, 1)  # multiplicative brightness
    img = jnp.clip(pix.adjust_contrast(img, u(kc, aug.contrast)), 0, 1)
    img = jnp.clip(pix.adjust_saturation(img, u(ks, aug.saturation)), 0, 1)
    delta = jax.random.uniform(kh, (), minval=-aug.hue * s, maxval=aug.hue * s)
    return jnp.clip(pix.adjust_hue(img, delta), 0, 1)


def _crop(img, key, aug):
    """A random resized crop (area in aug.crop_scale, log-uniform aspect) resized back."""
    size = img.shape[0]
    ka, kr, ky, kx = jax.random.split(key, 4)
    area = jax.random.uniform(ka, (), minval=aug.crop_scale[0], maxval=aug.crop_scale[1])
    log_r = jax.random.uniform(kr, (), minval=np.log(aug.crop_ratio[0]),
                               maxval=np.log(aug.crop_ratio[1]))
    w = jnp.clip(jnp.sqrt(area * jnp.exp(log_r)), 0.05, 1.0)
    h = jnp.clip(jnp.sqrt(area / jnp.exp(log_r)), 0.05, 1.0)
    top = jax.random.uniform(ky, ()) * (1 - h)
    left = jax.random.uniform(kx, ()) * (1 - w)
    scale = jnp.stack([1 / h, 1 / w])
    translation = -jnp.stack([top, left]) * size * scale
    return jax.image.scale_and_translate(img, img.shape, (0, 1), scale, translation, "linear")


def _gaussian_blur(images: jax.Array, sigma: jax.Array, kernel: int) -> jax.Array:
    """Separable Gaussian blur, one sigma per image, reflect padding (torchvision's)."""
    r = kernel // 2
    taps = jnp.arange(-r, r + 1, dtype=jnp.float32)
    w = jnp.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    w = (w / w.sum(1, keepdims=True))[:, :, None, None, None]  # [B, K, 1, 1, 1]
    h, wd = images.shape[1:3]
    x = jnp.pad(images, ((0, 0), (r, r), (0, 0), (0, 0)), mode="reflect")
    x = sum(w[:, k] * x[:, k:k + h] for k in range(kernel))
    x = jnp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    return sum(w[:, k] * x[:, :, k:k + wd] for k in range(kernel))


def augment(name: str, images: jax.Array, key: jax.Array,
            aug: ml_collections.ConfigDict) -> jax.Array:
    """One augmentation, always applied, to float images in [0, 1] [B, H, W, 3]."""
    keys = jax.random.split(key, images.shape[0])
    if name == "flip":
        return images[:, :, ::-1]
    if name == "gray":
        return pix.rgb_to_grayscale(images, keep_dims=True)  # keep_dims: 3 equal channels
    if name == "color":
        return jax.vmap(lambda i, k: _color_jitter(i, k, aug))(images, keys)
    if name == "blur":
        sig = jax.vmap(lambda k: jax.random.uniform(k, (), minval=aug.blur_sigma[0],
                                                    maxval=aug.blur_sigma[1]))(keys)
        return _gaussian_blur(images, sig, int(aug.blur_kernel))
    if name == "crop":
        return jax.vmap(lambda i, k: _crop(i, k, aug))(images, keys)
    raise ValueError(f"sensitivity augmentation: unknown '{name}'; allowed: "
                     f"{', '.join(AUGMENTATIONS)}")


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return jnp.sum(a * b, axis=-1)


def sensitivity(backbone: nnx.Module, images: np.ndarray, aug: ml_collections.ConfigDict,
                mean: Sequence[float], std: Sequence[float], *, mesh: jax.sharding.Mesh,
                augmentations: Sequence[str] = AUGMENTATIONS, seed: int = 0,
                batch_size: int = 256) -> dict[str, dict[str, float]]:
    """{stage: {'unrelated': cos, <aug>: cos, ...}} mean cosine similarities, uint8 images in."""
    graphdef, state = nnx.split(backbone)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    rows = NamedSharding(mesh, P("data"))
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    n = len(images)
    batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    partner = np.random.default_rng(seed).permutation(n)
    partner = np.where(partner == np.arange(n), (partner + 1) % n, partner)  # never itself

    @jax.jit
    def run(state, imgs, partner_imgs, key):
        model = nnx.merge(graphdef, state)
        feats = lambda x: stage_outputs(model, (x - mean) / std)
        x = imgs.astype(jnp.float32) / 255.0
        clean = feats(x)
        other = feats(partner_imgs.astype(jnp.float32) / 255.0)
        out = {"unrelated": jax.tree.map(_cosine, clean, other)}
        for i, name in enumerate(augmentations):
            t = feats(augment(name, x, jax.random.fold_in(key, i), aug))
            out[name] = jax.tree.map(_cosine, clean, t)
        return out

    sums: dict = {}
    key = jax.random.key(seed)
    for b, start in enumerate(range(0, n, batch_size)):
        idx = np.arange(start, start + batch_size) % n  # wrap: fixed shape, weights below
        valid = (np.arange(start, start + batch_size) < n).astype(np.float64)
        out = jax.device_get(run(state, jax.device_put(images[idx], rows),
                                 jax.device_put(images[partner[idx]], rows),
                                 jax.random.fold_in(key, b)))
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

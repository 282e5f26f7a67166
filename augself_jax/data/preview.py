"""See what the pipeline makes: a PNG grid (source, view 1, view 2, each captioned with its
parameters) and DIR/views.npz with every array and every recorded parameter.

    python -m augself_jax.cli.preview --config=configs/simclr_augself.py:shapes --out=/tmp/pv
    [--seed=3] [--num_images=16] [--config.aug.color_strength=2.0]

The same config and seed write identical arrays. The command line is
`augself_jax.cli.preview`; this module only draws and writes.
"""

import os

import numpy as np

_TILE = 128  # displayed pixels per image side


def _caption(rec: dict, i: int) -> list[str]:
    """Each registered augmentation's caption, one per line."""
    from augself_jax import augs

    return [e.caption(rec, i) for e in augs.entries()]


def _grid(sources: np.ndarray, hw: np.ndarray, views: list[np.ndarray], records: list[dict],
          labels: np.ndarray, indices: np.ndarray):
    from PIL import Image, ImageDraw

    from augself_jax import augs

    text_h = 11 * len(augs.entries()) + 4  # one caption line per augmentation
    n = len(sources)
    canvas = Image.new("RGB", (3 * (_TILE + 8), n * (_TILE + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        y = i * (_TILE + text_h)
        src = sources[i, :hw[i, 0], :hw[i, 1]]
        tiles = [src] + [np.clip(np.round(v[i] * 255), 0, 255).astype(np.uint8) for v in views]
        captions = [[f"#{indices[i]} label {labels[i]}", f"{hw[i, 0]}x{hw[i, 1]} px"]]
        captions += [_caption(r, i) for r in records]
        for col, (tile, lines) in enumerate(zip(tiles, captions, strict=True)):
            x = col * (_TILE + 8)
            img = Image.fromarray(tile).resize((_TILE, _TILE), Image.NEAREST)
            canvas.paste(img, (x, y))
            draw.multiline_text((x, y + _TILE + 1), "\n".join(lines), fill="black", spacing=1)
    return canvas


def write_preview(config, out_dir: str, num_images: int = 16) -> dict[str, np.ndarray]:
    """Run the pipeline (host + device parts) on the first batch and write the files."""
    import jax
    import tensorflow as tf

    from augself_jax.data import augment, photometric, pipeline, validate

    tf.config.set_visible_devices([], "GPU")
    if num_images < 16:
        raise ValueError(f"num_images: {num_images} must be >= 16")
    config.batch_size = num_images
    validate.validate_data_config(config, process_count=1, device_count=1)
    src = pipeline.load_pretrain_source(config, 0, 1)
    ds = pipeline.pretrain_dataset(
        src, seed=config.seed, aug=config.aug, image_size=config.data.image_size,
        local_batch=num_images, steps_per_epoch=len(src) // num_images, start_step=0)
    batch = pipeline.unpack_batch(next(ds.as_numpy_iterator()))
    encoded = src.lookup(tf.constant(src.positions_of(batch["index"])))["image"].numpy()
    decoded = [augment.decode(e).numpy() for e in encoded]
    hw = np.array([d.shape[:2] for d in decoded], np.int32)
    sources = np.zeros((num_images, hw[:, 0].max(), hw[:, 1].max(), 3), np.uint8)
    for i, d in enumerate(decoded):  # zero-padded when source sizes differ (ImageNet)
        sources[i, :d.shape[0], :d.shape[1]] = d
    apply = jax.jit(lambda v, p: photometric.apply_photometric(
        v, p, blur_kernel=config.aug.blur_kernel))
    arrays = {"source": sources, "source_hw": hw, "index": batch["index"],
              "label": batch["label"]}
    views, records = [], []
    for v in ("view1", "view2"):
        out, rec = apply(batch[v], batch["params" + v[-1]])
        views.append(np.asarray(out))
        records.append({k: np.asarray(x) for k, x in rec.items()})
        arrays[f"{v}_host"] = batch[v]
        arrays[v] = views[-1]
        arrays.update({f"{v}/{k}": x for k, x in records[-1].items()})
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "views.npz"), **arrays)
    _grid(sources, hw, views, records, batch["label"], batch["index"]).save(
        os.path.join(out_dir, "views.png"))
    return arrays

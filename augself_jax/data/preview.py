"""See what the pipeline makes: a PNG grid (source, view 1, view 2, each captioned with its
parameters) and DIR/views.npz with every array and every recorded parameter.

    python -m augself_jax.cli.preview --config=configs/simclr_augself.py:shapes --out=/tmp/pv
    [--seed=3] [--num_images=16] [--config.aug.color_strength=2.0]

The same config and seed write identical arrays. The command line is
`augself_jax.cli.preview`; this module only draws and writes.
"""

import functools
import os

import numpy as np

_TILE = 160  # displayed pixels per image side
_FONT_SIZE = 14  # caption text (pixels); the column headers are a little larger
_PAD = 10  # pixels around each cell
_HEADERS = ("source", "view 1", "view 2")
_LEGEND = ("Each row: one example, then its two views as the model sees them. Parameters are "
           "listed per augmentation; crop: top-left corner (y, x) and size (h, w) as fractions "
           "of the source; jitter: its four ops in the order applied, each with its factor "
           "(hue: its shift).")


def _caption(rec: dict, i: int) -> list[str]:
    """Each registered augmentation's caption (one or more lines each)."""
    from augself_jax import augs

    return [line for e in augs.entries().values() for line in e.caption(rec, i).split("\n")]


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels (broken at spaces)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _grid(sources: np.ndarray, hw: np.ndarray, views: list[np.ndarray], records: list[dict],
          labels: np.ndarray, indices: np.ndarray):
    """The picture: a header row naming the columns, then per example its source and two
    views, each captioned below. Every column is as wide as its widest caption, so nothing is
    clipped."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=_FONT_SIZE)
    head_font = ImageFont.load_default(size=_FONT_SIZE + 4)
    line_h = _FONT_SIZE + 4
    n = len(sources)
    tiles, captions = [], []
    for i in range(n):
        src = sources[i, :hw[i, 0], :hw[i, 1]]
        tiles.append([src] + [np.clip(np.round(v[i] * 255), 0, 255).astype(np.uint8)
                              for v in views])
        captions.append([[f"example #{indices[i]}, label {labels[i]}",
                          f"{hw[i, 0]}x{hw[i, 1]} px"]] + [_caption(r, i) for r in records])
    widths = [max([_TILE, int(head_font.getlength(_HEADERS[c]))]
                  + [int(font.getlength(line)) + 1 for row in captions for line in row[c]])
              + 2 * _PAD for c in range(len(_HEADERS))]
    total_w = sum(widths)
    legend = _wrap(_LEGEND, font, total_w - 2 * _PAD)
    header_h = _PAD + len(legend) * line_h + _PAD + line_h + 6 + _PAD
    row_h = [_TILE + 2 * _PAD + max(len(c) for c in row) * line_h for row in captions]
    canvas = Image.new("RGB", (total_w, header_h + sum(row_h)), "white")
    draw = ImageDraw.Draw(canvas)
    y = _PAD
    for line in legend:
        draw.text((_PAD, y), line, fill=(60, 60, 60), font=font)
        y += line_h
    y += _PAD
    x = 0
    for c, title in enumerate(_HEADERS):
        draw.text((x + _PAD, y), title, fill="black", font=head_font)
        x += widths[c]
    y = header_h
    draw.line([(0, y - 1), (total_w, y - 1)], fill=(120, 120, 120), width=2)
    for i in range(n):
        x = 0
        for c, (tile, lines) in enumerate(zip(tiles[i], captions[i], strict=True)):
            img = Image.fromarray(tile).resize((_TILE, _TILE), Image.NEAREST)
            canvas.paste(img, (x + _PAD, y + _PAD))
            for k, line in enumerate(lines):
                draw.text((x + _PAD, y + _PAD + _TILE + 2 + k * line_h), line, fill="black",
                          font=font)
            x += widths[c]
        y += row_h[i]
        draw.line([(0, y - 1), (total_w, y - 1)], fill=(210, 210, 210), width=1)
    return canvas


@functools.cache
def _photometric(settings):
    """The device part, jitted once per augmentations' static settings and process (the
    trainer draws the grid at the start of every new run; tests train many)."""
    import jax

    from augself_jax.data import photometric

    return jax.jit(lambda v, p: photometric.apply_photometric(v, p, settings))


def write_preview(config, out_dir: str, num_images: int = 16) -> dict[str, np.ndarray]:
    """Run the pipeline (host + device parts) on the first batch and write the files."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    arrays, image = sample_views(config, num_images)
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "views.npz"), **arrays)
    image.save(os.path.join(out_dir, "views.png"))
    return arrays


def sample_views(config, num_images: int = 16):
    """(every array and recorded parameter, the captioned grid as a PIL image) of the first
    `num_images` examples of the config's pipeline, host and device parts; writes nothing
    and leaves `config` as it was (the trainer logs the grid to TensorBoard at step 0)."""
    import tensorflow as tf

    from augself_jax.data import augment, pipeline, validate

    if num_images < 16:
        raise ValueError(f"num_images: {num_images} must be >= 16")
    config = config.copy_and_resolve_references()
    config.batch_size = num_images
    validate.validate_data_config(config)
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
    from augself_jax.augs import StaticSettings

    apply = _photometric(StaticSettings.from_aug(config.aug))
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
    return arrays, _grid(sources, hw, views, records, batch["label"], batch["index"])

"""views.png read without the code: captions that name what each number is (crop y, x, h,
w; the jitter ops spelled out in the order applied, each with its own factor), column
headers, and nothing clipped at any column's edge."""

import numpy as np

from augself_jax.data import preview
from configs.common import base_config

NAMES = ("brightness", "contrast", "saturation", "hue")  # the index order of rec["color"]


def _record(order, applied=1.0):
    from augself_jax import augs

    rec = {}
    for entry in augs.entries().values():
        for field in entry.record:
            value = np.reshape(np.array(field.identity, field.dtype), field.shape)
            rec[field.key] = value[None]
    rec["crop"] = np.array([[0.34, 0.0, 0.66, 0.78]], np.float32)
    rec["color"] = np.array([[0.88, 1.16, 0.93, 0.005]], np.float32)
    rec["color_order"] = np.array([order], np.int32)
    rec["color_applied"] = np.array([applied], np.float32)
    return rec


def test_captions_say_what_each_number_is():
    lines = preview._caption(_record((2, 3, 0, 1)), 0)
    assert "crop y=0.34 x=0.00 h=0.66 w=0.78" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("jitter"))
    text = " ".join(line.strip() for line in lines[start:start + 2])
    # In the order applied (saturation, hue, brightness, contrast), each with its own value.
    values = {"brightness": "0.88", "contrast": "1.16", "saturation": "0.93", "hue": "+0.005"}
    expected = ", ".join(f"{NAMES[k]} {values[NAMES[k]]}" for k in (2, 3, 0, 1))
    assert text == f"jitter, in order: {expected}"
    assert "jitter off" in preview._caption(_record((0, 1, 2, 3), applied=0.0), 0)


def test_grid_has_headers_and_no_caption_is_clipped(shapes_data_dir):
    config = base_config("shapes")
    config.data.data_dir = shapes_data_dir
    arrays, image = preview.sample_views(config, 16)
    pixels = np.asarray(image.convert("L"))
    ink = pixels < 128
    rules = np.flatnonzero((pixels < 250).all(axis=1))  # rows ruled across the whole width
    ink[rules] = False
    assert pixels.shape[1] >= 3 * preview._TILE
    # The rightmost strip is blank: the widest caption ends inside the picture.
    assert not ink[:, -preview._PAD // 2:].any()
    # Column starts: where a tile begins on the first example's row (its left edge).
    header_end = rules[0] + 1  # the rule under the column headers
    row = header_end + preview._PAD + preview._TILE // 2
    edges = np.flatnonzero(np.diff(np.concatenate([[0], pixels[row] < 250, [0]])))
    # Runs of non-white as wide as a tile (a shape's brightest pixels may break one up).
    tile_starts = [a for a, b in zip(edges[::2], edges[1::2], strict=True)
                   if b - a >= preview._TILE // 2]
    assert len(tile_starts) == 3  # source, view 1, view 2
    # Each column's header is ink above its tile, in the band over the rows.
    for x in tile_starts:
        assert ink[:header_end, x:x + 40].any()
    # No caption runs into the next column: nothing inked in the gap before each tile.
    for x in tile_starts[1:]:
        assert not ink[header_end:, x - preview._PAD // 2:x - 1].any()
    assert arrays["source"].shape[0] == 16

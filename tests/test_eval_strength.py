"""Sensitivity over strength: each augmentation interpolated from the identity (strength 0)
to the pretraining config (1) through the training ops, the similarity it gives per stage,
its plot, its progress line and its config fields (in-process and from the command line)."""

import io
import os
import shutil

import numpy as np
import pytest
from conftest import run_command
from flax import nnx
from PIL import Image

from augself_jax.augs import color
from augself_jax.errors import ConfigError
from augself_jax.evaluation import common, reports, sensitivity
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.features import eval_mesh
from configs.common import base_config

N, SIZE = 24, 12


@pytest.fixture(scope="module")
def images():
    # Smooth images (a colour gradient plus noise): crops and blurs change them gradually.
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, SIZE)[None, :, None, None] * rng.uniform(60, 200, (N, 1, 1, 3))
    noise = rng.normal(0, 20, (N, SIZE, SIZE, 3))
    return np.clip(ramp + 30 + noise, 0, 255).astype(np.uint8)


def _aug():
    aug = base_config("shapes").aug
    aug.blur_kernel = 5
    return aug


@pytest.mark.parametrize("name", sorted(sensitivity.STRENGTH))
def test_strength_zero_is_the_identity(images, name):
    out, _ = sensitivity.augmented(images, _aug(), name, seed=2, strength=0.0)
    np.testing.assert_allclose(out, images / 255.0, atol=2e-6)


@pytest.mark.parametrize("name", sorted(sensitivity.STRENGTH))
def test_strength_one_is_the_pretraining_config(images, name):
    aug = _aug()
    assert sensitivity.controlled_config(aug, name, 1.0) == sensitivity.controlled_config(
        aug, name)
    a, ra = sensitivity.controlled_views(images, aug, name, seed=2, strength=1.0)
    b, rb = sensitivity.controlled_views(images, aug, name, seed=2)
    np.testing.assert_array_equal(a, b)
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def test_intermediate_strengths_scale_the_same_draws(images):
    aug = _aug()
    identity = np.array(color.IDENTITY, np.float32)
    _, full = sensitivity.controlled_views(images, aug, "color", seed=5)
    _, blur_full = sensitivity.controlled_views(images, aug, "blur", seed=5)
    for s in (0.25, 0.5, 0.75):
        _, rec = sensitivity.controlled_views(images, aug, "color", seed=5, strength=s)
        # Unclamped jitter ranges (0.4 / 0.1): the factor's offset from identity scales by s.
        np.testing.assert_allclose(rec["color"] - identity, s * (full["color"] - identity),
                                   atol=1e-6)
        np.testing.assert_array_equal(rec["color_order"], full["color_order"])
        _, rec = sensitivity.controlled_views(images, aug, "blur", seed=5, strength=s)
        np.testing.assert_allclose(rec["blur"], s * blur_full["blur"], rtol=1e-6)
        _, rec = sensitivity.controlled_views(images, aug, "crop", seed=5, strength=s)
        area = rec["crop"][:, 2] * rec["crop"][:, 3]
        smallest = 1 - s * (1 - aug.crop_scale[0])
        assert area.min() >= smallest - 2.5 / SIZE  # box sides are rounded to pixels
        ratio = (rec["crop"][:, 3] / rec["crop"][:, 2])
        lo, hi = (r ** s for r in aug.crop_ratio)
        assert ratio.min() >= lo * (1 - 2.5 / SIZE) and ratio.max() <= hi * (1 + 2.5 / SIZE)


class _Pixels(nnx.Module):
    """Features = the (normalised) pixels themselves, shifted off zero."""

    def __call__(self, x):
        return x.reshape(len(x), -1) + 2.0


def test_sweep_starts_at_one_and_falls_with_strength(images):
    strengths = (0.0, 0.25, 0.5, 0.75, 1.0)
    lines = []
    out = sensitivity.strength_sweep(_Pixels(), images, _aug(), (0.5,) * 3, (0.25,) * 3,
                                     mesh=eval_mesh(), strengths=strengths, seed=1,
                                     batch_size=16, log=lines.append)
    assert list(out) == ["output"]
    row = out["output"]
    for name in sensitivity.STRENGTH:
        curve = [row[sensitivity.strength_label(name, s)] for s in strengths]
        assert curve[0] == pytest.approx(1.0, abs=1e-6), name  # strength 0: the image itself
        assert all(b <= a + 1e-6 for a, b in zip(curve, curve[1:], strict=False)), (name, curve)
        assert curve[-1] < 1.0 - 1e-4, (name, curve)
    # Strength 1 is exactly the on/off analysis at the pretraining config.
    onoff = sensitivity.sensitivity(_Pixels(), images, _aug(), (0.5,) * 3, (0.25,) * 3,
                                    mesh=eval_mesh(), augmentations=("color", "crop"),
                                    seed=1, batch_size=16)
    assert onoff["output"]["color"] == pytest.approx(row["color_s1"], abs=1e-6)
    assert onoff["output"]["crop"] == pytest.approx(row["crop_s1"], abs=1e-6)
    assert onoff["output"]["unrelated"] == pytest.approx(row["unrelated"], abs=1e-9)
    # The progress line: a count and an ETA, the first and the last at least.
    assert lines[0].startswith("sensitivity over strength: 1/15 variants (color_s0), ")
    assert "ETA" in lines[0] and lines[-1].startswith("sensitivity over strength: 15/15")


def test_y_range_shows_the_differences():
    lo, hi = sensitivity.y_range([0.91, 0.97, 0.99])
    assert 0.88 < lo < 0.91 and 0.99 < hi < 1.0
    lo, hi = sensitivity.y_range([0.5, 0.5])
    assert lo < 0.5 < hi


def _png_size(png):
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def test_plots_render_at_their_stated_sizes():
    result = {"stage1": {"unrelated": 0.80, "flip": 0.99, "color": 0.93},
              "output": {"unrelated": 0.88, "flip": 0.995, "color": 0.97}}
    w, h = sensitivity.plot_size(2)
    assert _png_size(sensitivity.plot_png(result, "run | simclr | step 3")) == (
        round(100 * w), round(100 * h))
    sweep = {"stage1": {"unrelated": 0.8, "color_s0": 1.0, "color_s1": 0.9, "crop_s0": 1.0,
                        "crop_s1": 0.85},
             "output": {"unrelated": 0.9, "color_s0": 1.0, "color_s1": 0.95, "crop_s0": 1.0,
                        "crop_s1": 0.97}}
    width, height = _png_size(sensitivity.plot_strength(sweep, "t"))
    assert (width, height) == (round(100 * (2 * 2.6 + sensitivity.LEGEND_WIDTH)), 340)


def test_method_label_names_what_was_pretrained():
    c = base_config("shapes")
    c.method.name = "byol"
    assert sensitivity.method_label(c) == "byol"
    c.augself.crop = c.augself.color = 1.0
    assert sensitivity.method_label(c) == "byol + AugSelf (crop, color)"
    c.cassle.enabled = True
    assert sensitivity.method_label(c) == "byol + AugSelf (crop, color) + CASSLE"


@pytest.mark.parametrize("fields, message", [
    ({"strength_augmentations": "color,flip"},
     "^eval.sensitivity.strength_augmentations: 'flip' has no strength; allowed: color, "
     "blur, crop$"),
    ({"strengths": "0,1.5"}, "^eval.sensitivity.strengths: '1.5' is not allowed; allowed: "
                             "numbers from 0"),
    ({"strengths": "0,half"}, "^eval.sensitivity.strengths: 'half' is not allowed"),
    ({"strengths": ""}, "^eval.sensitivity.strengths: empty"),
])
def test_bad_strength_fields_are_one_line_errors(fields, message):
    config = base_config("shapes")
    config.eval.protocols = "sensitivity"
    config.eval.sensitivity.update(fields)
    with pytest.raises(ConfigError, match=message):
        protocols.validate(config)


def test_no_strength_augmentations_skips_the_sweep():
    config = base_config("shapes")
    config.eval.protocols = "sensitivity"
    config.eval.sensitivity.strength_augmentations = ""
    protocols.validate(config)
    (ev,) = protocols.build(config, common.Context())
    assert ev.strength_augmentations == ()


def test_strength_overrides_from_the_command_line(tiny_run, shapes_data_dir, tmp_path):
    checkout, workdir, _ = tiny_run
    copy = os.path.join(checkout, "runs", "strength")
    shutil.copytree(os.path.join(checkout, workdir), copy)
    r = run_command(["evaluate.py", "--workdir=runs/strength",
                     f"--config.data.data_dir={shapes_data_dir}",
                     "--config.eval.protocols=sensitivity", "--config.eval.max_examples=64",
                     "--config.eval.sensitivity.num_images=16", "--config.eval.batch_size=64",
                     "--config.eval.sensitivity.augmentations=flip",
                     "--config.eval.sensitivity.strength_augmentations=color,crop",
                     "--config.eval.sensitivity.strengths=0,0.5,1"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sensitivity over strength: 6/6" in r.stdout + r.stderr
    rows = {x["metric"]: x["value"] for x in reports.load_results(copy)}
    for name in ("color", "crop"):
        assert rows[f"cos_{name}_s0@output"] == pytest.approx(100.0, abs=1e-3)
        assert rows[f"cos_{name}_s1@output"] < rows[f"cos_{name}_s0@output"]
        assert f"cos_{name}_s0.5@stage1" in rows
    assert "cos_blur_s1@output" not in rows  # only the listed augmentations
    found = [os.path.join(d, f) for d, _, files in os.walk(copy) for f in files
             if f == "sensitivity_strength_shapes.png"]
    assert len(found) == 1 and os.path.getsize(found[0]) > 0


"""The augmentation registry: every module reads it, so one new entry reaches the config,
validation, sampling, the packed record, the device chain, AugSelf, CASSLE, the preview
caption and the sensitivity analysis."""

import subprocess
import sys
import textwrap
from pathlib import Path

from augself_jax import augs
from configs.common import AUGSELF_KEYS, CASSLE_KEYS, base_config

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_registry_matches_method_md():
    assert [e.name for e in augs.chain(augs.HOST)] == ["crop", "flip", "rotation"]
    # docs/METHOD.md's order (section 1): jitter, solarize (right after it), grayscale, blur.
    assert [e.name for e in augs.chain(augs.DEVICE)] == ["color", "solarize", "gray", "blur"]
    assert set(augs.record_keys()) == {"crop", "flip", "color", "color_applied",
                                       "color_order", "color_mean_shift", "gray", "blur",
                                       "solarize", "rotation"}
    assert set(AUGSELF_KEYS) == {"crop", "color", "flip", "blur", "rotation", "solarize",
                                 "gray"}
    assert CASSLE_KEYS == ("blur", "color", "color_diff", "crop", "flip", "gray")
    assert set(base_config("shapes").aug.keys()) == set(augs.config_defaults())


_NEW_AUGMENTATION = '''
import jax.numpy as jnp

from augself_jax.augs.core import (DEVICE, AugSelfTarget, Augmentation, Descriptor, Field,
                                   check_probability, register)


def _sample(u, aug, height, width):
    import tensorflow as tf

    return {"invert": tf.cast(u["invert"] < aug.invert_prob, tf.float32)}


def _flag(p):
    return jnp.asarray(p["invert"], jnp.float32)[..., None]


register(Augmentation(
    name="invert", stage=DEVICE, chain=3.5, defaults={"invert_prob": 0.0},
    draws=(("invert", 1),), record=(Field("invert", (), "float32", (0.0,)),),
    sample=_sample,
    op=lambda x, p, **_: (jnp.where(p["invert"][:, None, None, None] > 0, 1.0 - x, x), {}),
    prob_field="invert_prob", caption=lambda rec, i: f"inv {int(rec['invert'][i])}",
    check=lambda aug, size: check_probability(aug, "invert_prob"),
    augself=AugSelfTarget(1, "bce", lambda pa, pb, r, ref: (_flag(pa) == _flag(pb)) * 1.0),
    cassle=(Descriptor("invert", 1, lambda p, r, ref: _flag(p)),),
))
'''

_CHECKS = '''
import augself_jax.augs
import invert  # the new module: in the package it is one import in augs/__init__.py

import numpy as np
import pytest
import tensorflow as tf

from augself_jax.aware import augself, cassle
from augself_jax.data import augment, photometric, preview, validate
from augself_jax.errors import ConfigError
from augself_jax.evaluation import sensitivity
from augself_jax.train import validate as train_validate
from configs.common import AUGSELF_KEYS, CASSLE_KEYS, base_config

config = base_config("shapes")
assert config.aug.invert_prob == 0.0 and "invert" in AUGSELF_KEYS and "invert" in CASSLE_KEYS
config.aug.invert_prob = 1.5
with pytest.raises(ConfigError, match="aug.invert_prob"):
    validate.validate_data_config(config, process_count=1, device_count=1,
                                  check_prepared=False)
config.aug.invert_prob = 0.0
config.augself.invert = 1.0
with pytest.raises(ConfigError, match="augself.invert.*aug.invert_prob"):
    train_validate.validate_train_config(config, num_devices=1)
config.aug.invert_prob = 0.5
train_validate.validate_train_config(config, num_devices=1)
assert augself.HEADS["invert"] == (1, "bce") and cassle.KEY_DIMS["invert"] == 1

u = tf.random.stateless_uniform([400, augment.NUM_UNIFORMS], [1, 2], dtype=tf.float64)
params = augment.sample_params(u, 8, 8, config.aug)
flags = params["invert"].numpy()
assert 0.4 < flags.mean() < 0.6
back = augment.unpack(augment.pack(params).numpy())
np.testing.assert_array_equal(back["invert"], flags)

x = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
rec = {k: v[:4] for k, v in back.items()}
rec.update(color_applied=np.zeros(4, np.float32), gray=np.zeros(4, np.float32),
           blur=np.zeros(4, np.float32), solarize=np.ones(4, np.float32),
           invert=np.array([1, 0, 1, 0], np.float32))
out, _ = photometric.apply_photometric(x, rec, blur_kernel=3)
np.testing.assert_allclose(np.asarray(out), np.where(rec["invert"][:, None, None, None] > 0,
                                                     1 - x / 255.0, x / 255.0), atol=1e-6)
assert "inv 1" in preview._caption(rec, 0)
views, r = sensitivity.augmented(x, config.aug, "invert")
assert np.all(r["invert"] == 1.0)
np.testing.assert_allclose(views, 1 - x / 255.0, atol=1e-6)
print("OK")
'''


def test_a_new_augmentation_reaches_every_module(tmp_path):
    (tmp_path / "invert.py").write_text(textwrap.dedent(_NEW_AUGMENTATION))
    (tmp_path / "checks.py").write_text(textwrap.dedent(_CHECKS))
    r = subprocess.run([sys.executable, str(tmp_path / "checks.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "JAX_PLATFORMS": "cpu",
                            "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]

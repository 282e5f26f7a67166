"""The augmentation registry: every module reads it, so one new entry reaches the config,
validation, sampling, the packed record, the device chain, AugSelf, CASSLE, the preview
caption and the sensitivity analysis."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from augself_jax import augs
from configs.common import AUGSELF_KEYS, CASSLE_KEYS, base_config

ROOT = Path(__file__).resolve().parents[1]


def _method_md_table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under `heading` in docs/METHOD.md."""
    text = (ROOT / "docs/METHOD.md").read_text()
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _first_code(cell: str) -> str:
    return re.search(r"`([^`]+)`", cell).group(1)


# The registry is checked against what docs/METHOD.md documents, never against a copy of
# its own lists: a newly registered augmentation adds to these, and must not break them.
def test_registry_holds_the_chain_method_md_documents():
    rows = [r for r in _method_md_table("### The chain") if r[0].isdigit()]
    assert len(rows) >= 7
    documented = []
    for position, _, where, _, fields in rows:
        field = re.search(r"`aug\.(\w+)`", fields).group(1)
        entry = next(e for e in augs.entries().values() if field in e.defaults)
        assert entry.chain == int(position), (entry.name, position)
        assert entry.stage == (augs.HOST if where.startswith("host") else augs.DEVICE), entry.name
        documented.append(entry.name)
    order = [e.name for e in sorted(augs.entries().values(), key=lambda e: e.chain)]
    assert [n for n in order if n in documented] == documented  # the documented order
    assert set(base_config("shapes").aug.keys()) == set(augs.config_defaults())


def test_registry_holds_the_record_method_md_documents():
    fields = {f.key: f for f in augs.record_fields()}
    rows = _method_md_table("### The parameter record")
    assert len(rows) >= 10
    for key_cell, shape_dtype, *_ in rows:
        key = _first_code(key_cell)
        shape, dtype = re.fullmatch(r"\[(\d*)\] (\w+)", shape_dtype).groups()
        assert fields[key].shape == ((int(shape),) if shape else ()), key
        assert fields[key].dtype == dtype, key


def test_augself_and_cassle_keys_are_those_method_md_documents():
    losses = {"MSE": "mse", "binary cross-entropy": "bce", "cross-entropy": "ce"}
    heads = {e.name: e.augself for e in augs.augself_entries()}
    rows = _method_md_table("### Targets and losses")
    assert len(rows) >= 7
    for name_cell, _, size, loss in rows:
        head = heads[_first_code(name_cell)]
        assert head.dim == int(size.split()[0]), name_cell
        assert head.loss == next(v for k, v in losses.items() if loss.startswith(k)), name_cell
    assert set(AUGSELF_KEYS) == set(heads)
    descriptors = augs.descriptors()
    rows = _method_md_table("### Descriptor")
    assert len(rows) >= 6
    for key_cell, size, _ in rows:
        assert descriptors[_first_code(key_cell)].dim == int(size), key_cell
    assert CASSLE_KEYS == tuple(sorted(descriptors))  # sorted, as docs/METHOD.md says


_NEW_AUGMENTATION = '''
import jax.numpy as jnp

from augself_jax.augs.registry import (DEVICE, AugSelfTarget, Augmentation, Descriptor, Field,
                                   check_probability)


def _sample(u, aug, height, width):
    import tensorflow as tf

    return {"invert": tf.cast(u["invert"] < aug.invert_prob, tf.float32)}


def _flag(p):
    return jnp.asarray(p["invert"], jnp.float32)[..., None]


AUGMENTATION = Augmentation(
    name="invert", stage=DEVICE, chain=3.5, draw_order=7, defaults={"invert_prob": 0.0},
    draws=(("invert", 1),), record=(Field("invert", (), "float32", (0.0,)),),
    sample=_sample,
    op=lambda x, p, **_: (jnp.where(p["invert"][:, None, None, None] > 0, 1.0 - x, x), {}),
    prob_field="invert_prob", caption=lambda rec, i: f"inv {int(rec['invert'][i])}",
    check=lambda aug, size: check_probability(aug, "invert_prob"),
    augself=AugSelfTarget(1, "bce", lambda pa, pb, r, ref: (_flag(pa) == _flag(pb)) * 1.0),
    cassle=(Descriptor("invert", 1, lambda p, r, ref: _flag(p)),),
)
'''

_CHECKS = '''
import os

import augself_jax.augs

# invert.py lies in new_augs/ beside this script: put that folder on the package's path, as
# if the module were written into augself_jax/augs/, where the registry's scan finds it.
augself_jax.augs.__path__.append(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "new_augs"))

import numpy as np
import pytest
import tensorflow as tf

from augself_jax.augs import records
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
    validate.validate_data_config(config, check_prepared=False)
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
rec = dict(records.identity_record(4), invert=np.array([1, 0, 1, 0], np.float32))
out, _ = photometric.apply_photometric(x, rec, augself_jax.augs.StaticSettings.of(blur_kernel=3))
np.testing.assert_allclose(np.asarray(out), np.where(rec["invert"][:, None, None, None] > 0,
                                                     1 - x / 255.0, x / 255.0), atol=1e-6)
assert "inv 1" in preview._caption(rec, 0)
views, r = sensitivity.augmented(x, config.aug, "invert")
assert np.all(r["invert"] == 1.0)
np.testing.assert_allclose(views, 1 - x / 255.0, atol=1e-6)
print("OK")
'''


def test_a_new_augmentation_reaches_every_module(tmp_path):
    (tmp_path / "new_augs").mkdir()
    (tmp_path / "new_augs" / "invert.py").write_text(textwrap.dedent(_NEW_AUGMENTATION))
    (tmp_path / "checks.py").write_text(textwrap.dedent(_CHECKS))
    r = subprocess.run([sys.executable, str(tmp_path / "checks.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "JAX_PLATFORMS": "cpu",
                            "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]

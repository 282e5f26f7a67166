"""The AugSelf reference's STL-10 variants are real presets: `stl10_sol` and `stl10_rot` are
STL-10 with solarize / rotation at probability 0.5 (the reference's datasets.py), every other
field as `stl10`, and they validate with the heads that predict the extra augmentation."""

import pytest
from test_train_support import load_config

from augself_jax.data.validate import validate_data_config
from augself_jax.errors import ConfigError
from augself_jax.methods import validate_model_config
from augself_jax.train.validate import validate_train_config

VARIANTS = {"stl10_sol": ("solarize_prob", "solarize"), "stl10_rot": ("rotation_prob", "rotation")}


def _flat(config) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if hasattr(value, "items"):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(config.to_dict(), "")
    return out


def _validate(config) -> None:
    validate_train_config(config, 8)
    validate_data_config(config, check_prepared=False)
    validate_model_config(config)


@pytest.mark.parametrize("preset", sorted(VARIANTS))
def test_variant_is_stl10_with_one_probability_at_one_half(preset):
    prob, _ = VARIANTS[preset]
    base, variant = _flat(load_config("simclr_augself", "stl10")), \
        _flat(load_config("simclr_augself", preset))
    differing = {k for k in base if base[k] != variant[k]}
    assert differing == {"preset", f"aug.{prob}"}
    assert base[f"aug.{prob}"] == 0.0 and variant[f"aug.{prob}"] == 0.5
    assert variant["data.dataset"] == "stl10" and variant["data.image_size"] == 96


@pytest.mark.parametrize("preset", sorted(VARIANTS))
def test_variant_validates_with_its_augself_head(preset):
    _, head = VARIANTS[preset]
    config = load_config("simclr_augself", preset)
    config.augself[head] = 1.0
    _validate(config)
    plain = load_config("simclr_augself", "stl10")
    plain.augself[head] = 1.0  # the head of an augmentation that stl10 never applies
    with pytest.raises(ConfigError, match=f"augself.{head}"):
        _validate(plain)


@pytest.mark.parametrize("name", ["simclr", "byol_augself", "barlow_cassle"])
def test_every_experiment_builds_each_variant(name):
    for preset in VARIANTS:
        config = load_config(name, preset)
        assert config.preset == preset
        _validate(config)

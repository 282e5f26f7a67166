"""Every experiment config loads for every preset, and bad configs fail validation with one
line before anything is compiled or written."""

import os
import subprocess
import sys

import pytest
from test_train_experiments import EXPERIMENTS  # every configs/*.py
from test_train_support import ROOT, load_config

from augself_jax.app import validate_config
from augself_jax.data.validate import validate_data_config
from augself_jax.errors import ConfigError
from augself_jax.methods import validate_model_config
from augself_jax.train.validate import validate_train_config
from configs.common import PRESETS  # every preset, so a new one is checked too


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_loads_and_validates(name):
    for preset in PRESETS:
        c = load_config(name, preset)
        assert c.preset == preset
        for field in ("seed", "batch_size", "total_steps", "checkpoint_every", "log_every"):
            assert field in c
        assert "eval" in c
        method = name.split("_")[0]
        assert c.method.name == method
        assert (c.augself.crop > 0) == name.endswith("augself")
        assert c.cassle.enabled == name.endswith("cassle")
        if c.data.dataset == "shapes":  # the built-in dataset, generated on first use
            validate_config(c)  # conftest: 8 devices
            continue
        # Every check but the dataset being prepared, which needs the download: the same
        # owners' checks validate_config runs, the data one told not to look on disk.
        validate_train_config(c, 8)
        validate_data_config(c, check_prepared=False)
        validate_model_config(c)
        with pytest.raises(ConfigError, match=r"^data\.dataset: .*not prepared"):
            validate_config(c)  # and only that: the first error it meets is the dataset's


@pytest.mark.parametrize("preset", ["stl10", "imagenet100", "cifar10"])
def test_presets_without_data_still_reject_a_bad_field(preset):
    c = load_config("simclr_augself", preset)
    c.batch_size = 250  # not a multiple of the 8 devices
    with pytest.raises(ConfigError, match="^batch_size"):
        validate_train_config(c, 8)
    c = load_config("moco_augself", preset)
    c.method.queue_size = c.batch_size - 8  # smaller than one batch of keys
    with pytest.raises(ConfigError, match="^method.queue_size"):
        validate_model_config(c)


def test_presets_match_the_reference():
    stl = load_config("simclr_augself", "stl10")
    assert (stl.data.image_size, stl.model.backbone, stl.batch_size, stl.num_epochs) == (
        96, "resnet18", 256, 200)
    assert (stl.optimizer.name, stl.optimizer.base_lr, stl.optimizer.weight_decay) == (
        "sgd", 0.03, 5e-4)
    assert stl.augself.crop == stl.augself.color == 1.0
    inet = load_config("simclr_augself", "imagenet100")
    assert (inet.model.backbone, inet.data.image_size, inet.num_epochs) == ("resnet50", 224, 500)
    assert inet.augself.crop == inet.augself.color == 0.5
    assert inet.optimizer.base_lr == 0.05 and inet.optimizer.weight_decay == 1e-4
    assert load_config("simclr", "cifar10").model.stem == "cifar"
    shapes = load_config("simclr_augself", "shapes")
    assert shapes.data.dataset == "shapes" and shapes.total_steps is not None


def _shapes():
    return load_config("simclr_augself", "shapes")


@pytest.mark.parametrize("edit,field", [
    (lambda c: setattr(c.optimizer, "name", "rmsprop"), "optimizer.name"),
    (lambda c: setattr(c.optimizer, "schedule", "step"), "optimizer.schedule"),
    (lambda c: setattr(c.augself, "color", -1.0), "augself.color"),
    (lambda c: setattr(c.augself, "rotation", 0.5), "augself.rotation"),
    (lambda c: setattr(c.augself, "solarize", 0.5), "augself.solarize"),
    (lambda c: setattr(c, "batch_size", 12), "batch_size"),
    (lambda c: setattr(c.optimizer, "weight_decay", -1e-4), "optimizer.weight_decay"),
    (lambda c: setattr(c, "total_steps", 0), "total_steps"),
    (lambda c: setattr(c.mesh, "model", 3), "mesh"),
    (lambda c: setattr(c.method, "name", "dino"), "method.name"),
    (lambda c: setattr(c.data, "dataset", "mnist"), "data.dataset"),
])
def test_bad_config_raises_one_line(edit, field):
    c = _shapes()
    edit(c)
    with pytest.raises(ConfigError) as e:
        validate_config(c)
    message = str(e.value)
    assert message.startswith(field) and "\n" not in message


def test_batch_size_must_split_over_processes_and_the_data_axis():
    c = _shapes()
    c.batch_size = 256
    validate_train_config(c, num_devices=8, process_count=2)
    with pytest.raises(ConfigError, match=r"^batch_size: 256 does not divide over 3 processes"):
        validate_train_config(c, num_devices=3, process_count=3)
    with pytest.raises(ConfigError, match=r"^batch_size: 256 does not divide over the 12 "):
        validate_train_config(c, num_devices=12, process_count=1)
    c.mesh.data, c.mesh.model = 2, -1  # the data axis, not the device count, must divide it
    validate_train_config(c, num_devices=12, process_count=1)


def test_rotation_head_is_fine_when_the_pipeline_rotates():
    c = _shapes()
    c.augself.rotation = 0.5
    c.aug.rotation_prob = 0.5
    validate_config(c)


@pytest.mark.slow  # the command line's one-line errors are tested in test_reliability
def test_cli_config_error_exits_before_writing(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "main.py", "--config=configs/simclr_augself.py:shapes",
         f"--workdir={workdir}", "--config.augself.rotation=1.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and "augself.rotation" in errors[0] and "rotation_prob" in errors[0]
    assert not workdir.exists()

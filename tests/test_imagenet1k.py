"""The `imagenet1k` preset: ResNet-50 at 224 px, LARS at batch 4096 with 10 warm-up epochs,
bfloat16 compute; and `main.py` with it stops at the data step with one line when ImageNet
is not prepared."""

import os

from conftest import run_command
from test_train_support import ROOT, load_config

from augself_jax.data import registry as datasets
from augself_jax.data.validate import validate_data_config
from augself_jax.methods import validate_model_config
from augself_jax.train.validate import validate_train_config


def test_imagenet1k_preset_builds_and_validates():
    c = load_config("simclr_augself", "imagenet1k")
    assert (c.data.dataset, c.data.image_size, c.model.backbone, c.model.stem) == (
        "imagenet1k", 224, "resnet50", "imagenet")
    assert c.model.dtype == "bfloat16"
    assert (c.batch_size, c.optimizer.name, c.optimizer.warmup_epochs) == (4096, "lars", 10.0)
    assert c.optimizer.base_lr * c.batch_size / 256 == 4.8  # SimCLR's large-batch LARS lr
    assert c.aug.blur_kernel == 23 and c.augself.crop == c.augself.color == 0.5
    info = datasets.get("imagenet1k")
    assert (info.tfds_name, info.num_classes, info.train_split, info.test_split) == (
        "imagenet2012", 1000, "train", "validation")
    assert not info.class_subset  # all 1,000 classes, unlike imagenet100
    validate_train_config(c, 8)
    validate_data_config(c, check_prepared=False)
    validate_model_config(c)
    assert load_config("byol_augself", "imagenet100").model.dtype == "bfloat16"


def test_main_with_imagenet1k_stops_at_the_missing_dataset(tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    r = run_command(["main.py", "--config=configs/simclr_augself.py:imagenet1k",
                     f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={data_dir}"],
                    cwd=ROOT, timeout=300)
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    last = lines[-1]
    assert "imagenet2012" in last and "not prepared" in last and "Traceback" not in r.stderr
    assert "ILSVRC2012_img_train.tar" in last  # says how to prepare it
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # nothing was trained

"""The preview tool as the README runs it (`python -m augself_jax.cli.preview --config=...
--out=... --seed=1 --config.aug.rotation_prob=0.5`): the grid and views.npz, the flags
applied, and identical arrays for the same config and seed."""

import os

import numpy as np
from conftest import copy_checkout, run_command

from augself_jax.augs import records
from augself_jax.data import preview
from configs.common import base_config

KEYS = tuple(records.record_spec())  # every record key the augmentation registry declares


def test_preview_command_line_and_determinism(shapes_data_dir, tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    r = run_command(["-m", "augself_jax.cli.preview",
                     "--config=configs/simclr_augself.py:shapes", "--out=preview", "--seed=1",
                     "--config.aug.rotation_prob=0.5",
                     f"--config.data.data_dir={shapes_data_dir}"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    out = os.path.join(checkout, "preview")
    assert "views.png" in r.stdout
    assert os.path.getsize(os.path.join(out, "views.png")) > 0
    cli = np.load(os.path.join(out, "views.npz"))

    def in_process(seed, rotation_prob):
        config = base_config("shapes")
        config.data.data_dir = shapes_data_dir
        config.seed = seed
        config.aug.rotation_prob = rotation_prob
        return preview.write_preview(config, str(tmp_path / f"s{seed}r{rotation_prob}"))

    same = in_process(1, 0.5)
    assert cli["source"].shape[0] == 16 and cli["source"].dtype == np.uint8
    for v in ("view1", "view2"):
        assert cli[f"{v}_host"].dtype == np.uint8 and cli[v].dtype == np.float32
        assert 0.0 <= cli[v].min() and cli[v].max() <= 1.0
        for k in KEYS:
            assert f"{v}/{k}" in cli.files
        # --config.aug.rotation_prob=0.5 reached the pipeline: some views are rotated.
        assert np.any(cli[f"{v}/rotation"] != 0)
    # The command line wrote exactly what the same config and seed give in-process.
    assert set(cli.files) == set(same)
    for k in cli.files:
        np.testing.assert_array_equal(cli[k], same[k], err_msg=k)
    # --seed=1 and the rotation flag changed the draw: the defaults give other views.
    default = in_process(0, 0.0)
    assert not np.array_equal(cli["view1_host"], default["view1_host"])
    assert np.all(default["view1/rotation"] == 0)

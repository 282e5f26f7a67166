"""The preview writes the grid and views.npz, identically for the same seed."""

import os

import numpy as np

from augself_jax.data import preview
from configs.common import base_config

KEYS = ("crop", "flip", "color", "color_applied", "color_order", "color_mean_shift", "gray",
        "blur", "solarize", "rotation")


def test_preview_files_and_determinism(shapes_data_dir, tmp_path):
    def run(out, seed):
        config = base_config("shapes")
        config.data.data_dir = shapes_data_dir
        config.seed = seed
        preview.write_preview(config, str(out))
        return np.load(os.path.join(out, "views.npz"))

    a, b, c = run(tmp_path / "a", 0), run(tmp_path / "b", 0), run(tmp_path / "c", 1)
    assert os.path.getsize(tmp_path / "a" / "views.png") > 0
    assert a["source"].shape == (16, 32, 32, 3) and a["source"].dtype == np.uint8
    for v in ("view1", "view2"):
        assert a[f"{v}_host"].dtype == np.uint8 and a[v].dtype == np.float32
        assert 0.0 <= a[v].min() and a[v].max() <= 1.0
        for k in KEYS:
            assert f"{v}/{k}" in a.files
    assert set(a.files) == set(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["view1_host"], c["view1_host"])

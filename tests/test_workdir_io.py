"""A gs:// workdir keeps the run's files: the resolved config.json, the results (which
--compare reads back), the features and the sensitivity plot are written through epath,
checked against an in-memory filesystem standing in for Cloud Storage. os.makedirs("gs://b/x")
would instead make a local ./gs:/b/x, which is lost with the TPU VM."""

import io
import json

import ml_collections
import numpy as np
import pytest
from etils.epath import backend, gpath
from fsspec.implementations.memory import MemoryFileSystem

from augself_jax.errors import ConfigError
from augself_jax.evaluation import reports, run, sensitivity
from augself_jax.workdir import write_resolved_config


class _FakeGCS(MemoryFileSystem):
    """Memory filesystem answering gs:// paths; its own store, not fsspec's shared one."""

    protocol = ("gs",)
    store: dict = {}
    pseudo_dirs: list = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("gs://"):
            path = "memory://gs/" + path[len("gs://"):]
        return super()._strip_protocol(path)


class _FakeGCSBackend(backend._FileSystemSpecBackend):
    def __init__(self, fs: MemoryFileSystem):
        self._fs = fs

    def fs(self, path):
        return self._fs


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    """gs:// paths go to a fresh in-memory filesystem; the cwd is an empty directory, so that
    anything written to the local disk by mistake shows up there."""
    fs_class = type("FakeGCS", (_FakeGCS,), {"store": {}, "pseudo_dirs": [""]})
    fs = fs_class(skip_instance_cache=True)
    # Else epath hands gs:// to TensorFlow's GCS client. Its check is cached for the process
    # (functools.cache), so an earlier test's gs:// path would outlive an env override.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", _FakeGCSBackend(fs))
    monkeypatch.chdir(tmp_path)
    yield fs
    assert list(tmp_path.iterdir()) == [], "something was written to the local disk"


RECORDS = [reports.record("cifar10", "linear", "top1", 71.234, l2=1e-4, step=100,
                          config_hash="abc"),
           reports.record("shapes", "probe", "hue_err_deg", 12.5, unit="deg", step=100,
                          config_hash="abc")]


def test_results_written_to_and_compared_from_gs(fake_gcs):
    json_path, md_path = reports.write_results(RECORDS, "gs://bkt/runs/a/eval")
    assert (json_path, md_path) == ("gs://bkt/runs/a/eval/results.json",
                                    "gs://bkt/runs/a/eval/results.md")
    assert json.loads(fake_gcs.cat("gs://bkt/runs/a/eval/results.json")) == RECORDS
    table = fake_gcs.cat("gs://bkt/runs/a/eval/results.md").decode()
    assert "| cifar10 | linear | top1 | 71.23 | l2=0.0001 |" in table
    assert "| shapes | probe | hue_err_deg | 12.50° |" in table
    assert reports.load_results("gs://bkt/runs/a") == RECORDS  # what --compare reads
    with pytest.raises(ConfigError, match="gs://bkt/runs/b/eval/results.json"):
        reports.load_results("gs://bkt/runs/b")


def test_features_written_to_gs(fake_gcs):
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.normal(size=(6, 4)).astype(np.float32),
              "train_y": np.arange(6), "test_x": rng.normal(size=(3, 4)).astype(np.float32),
              "test_y": np.arange(3)}
    path = run.write_features("gs://bkt/runs/a/eval", "cifar10", **arrays)
    assert path == "gs://bkt/runs/a/eval/cifar10/features.npz"
    with np.load(io.BytesIO(fake_gcs.cat(path))) as saved:
        assert sorted(saved.files) == sorted(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(saved[name], value)


def test_sensitivity_plot_written_to_gs(fake_gcs):
    from PIL import Image

    result = {"stage1": {"flip": 0.9, "color": 0.5, "unrelated": 0.2},
              "output": {"flip": 0.95, "color": 0.3, "unrelated": 0.1}}
    path = sensitivity.plot(result, "gs://bkt/runs/a/eval/sensitivity_shapes.png", title="t")
    assert path == "gs://bkt/runs/a/eval/sensitivity_shapes.png"
    png = fake_gcs.cat(path)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        # plot_size(2 stages) inches at 100 dpi
        width, height = sensitivity.plot_size(2)
        assert image.size == (round(100 * width), round(100 * height))


def test_resolved_config_written_to_gs(fake_gcs):
    config = ml_collections.ConfigDict({"seed": 3, "data": {"data_dir": "gs://bkt/tfds"},
                                        "optimizer": {"base_lr": 0.05}})
    path = write_resolved_config(config, "gs://bkt/runs/a", "config.json")
    assert str(path) == "gs://bkt/runs/a/config.json"
    assert json.loads(fake_gcs.cat("gs://bkt/runs/a/config.json")) == {
        "seed": 3, "data": {"data_dir": "gs://bkt/tfds"}, "optimizer": {"base_lr": 0.05}}
    assert fake_gcs.ls("gs://bkt/runs/a", detail=False) == ["/gs/bkt/runs/a/config.json"]

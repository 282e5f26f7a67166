"""Device prefetch (train/prefetch.py): the batches, in order, already on the devices; and a
run with it ends with the bits of a run without it, also when stopped and resumed."""

import shutil

import jax
import numpy as np
import pytest
from test_train_support import config_with, host_leaves

from augself_jax import checkpoints
from augself_jax.data.validate import validate_data_config
from augself_jax.errors import ConfigError
from augself_jax.train import loop
from augself_jax.train import mesh as mesh_lib
from augself_jax.train.prefetch import device_batches


class _Counted:
    """Host batches {'x': [8, 2] holding i, 'skip': ...} for i < n, counting how many left."""

    def __init__(self, n: int):
        self.n, self.taken = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.taken += 1
            yield {"x": np.full((8, 2), i, np.float32), "skip": np.zeros(3)}


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_device_batches_are_the_host_batches_in_order_fetched_ahead(depth):
    mesh = jax.make_mesh((8, 1), mesh_lib.AXES)  # conftest: 8 CPU devices
    host = _Counted(4)
    out = device_batches(host, mesh, ("x",), depth)
    for i in range(4):
        batch = next(out)
        assert set(batch) == {"x"}  # only the keys asked for travel
        assert isinstance(batch["x"], jax.Array)
        assert batch["x"].sharding.spec == mesh_lib.data_sharded(mesh).spec
        np.testing.assert_array_equal(np.asarray(batch["x"]), np.full((8, 2), i))
        # Batch i and `depth` more (as far as there are any) have left the host.
        assert host.taken == min(i + 1 + depth, 4)
    assert next(out, None) is None


OVERRIDES = {
    "total_steps": 4, "batch_size": 16, "log_every": 2, "checkpoint_every": 2,
    "knn_every": 0, "xla_fast_compile": True, "data.image_size": 16, "model.width": 4,
    "augself.hidden": 16, "method.proj_hidden": 32, "method.proj_out": 16,
}


def _train(data_dir, workdir, prefetch: int):
    config = config_with({**OVERRIDES, "data.device_prefetch": prefetch}, data_dir)
    return loop.train(config, str(workdir))


def _bits(result) -> list[bytes]:
    return [x.tobytes() for x in host_leaves((result.state.params, result.state.rest))]


# ~30 s. The default suite checks the same through tests/test_reliability.py: a run
# stopped without prefetch and resumed with it ends with the prefetching reference's bits.
@pytest.mark.slow
def test_prefetch_keeps_the_bits_and_the_resume_exact(shapes_data_dir, tmp_path):
    """A run with prefetch, stopped after its step-2 checkpoint (the batches it had fetched
    ahead are lost) and resumed without prefetch, ends with the uninterrupted run's bits:
    had prefetch skipped, repeated or reordered a batch, the resumed steps 3 and 4, which
    read theirs one at a time, would train on others."""
    ahead = _train(shapes_data_dir, tmp_path / "ahead", prefetch=2)
    assert int(ahead.state.step) == 4
    shutil.copytree(tmp_path / "ahead", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    assert checkpoints.all_steps(tmp_path / "resumed") == [2]
    resumed = _train(shapes_data_dir, tmp_path / "resumed", prefetch=0)
    assert int(resumed.state.step) == 4
    assert _bits(resumed) == _bits(ahead)


def test_a_negative_device_prefetch_is_one_line():
    config = config_with({"data.device_prefetch": -1}, None)
    with pytest.raises(ConfigError, match=r"^data\.device_prefetch: .* must be an integer >= 0"):
        validate_data_config(config, check_prepared=False)

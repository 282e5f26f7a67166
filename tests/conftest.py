"""Test-session set-up: eight simulated CPU devices, TensorFlow off the accelerator,
and the built-in dataset prepared once per session."""

import os

# Must happen before jax is imported anywhere: sharding tests need 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding the prepared built-in `shapes` dataset."""
    import tensorflow_datasets as tfds

    from augself_jax.data import shapes  # noqa: F401  (registers the builder)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("augself_shapes", data_dir=data_dir).download_and_prepare()
    return data_dir

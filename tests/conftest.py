"""Test-session set-up: eight simulated CPU devices, TensorFlow off the accelerator,
and the built-in dataset prepared once per session."""

import os

# Must happen before jax is imported anywhere: sharding tests need 8 devices. Appended, so
# a user's own XLA_FLAGS are kept and the device count is still the one the tests assume.
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT_FLAG)]
    + [f"{_DEVICE_COUNT_FLAG}=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding the prepared built-in `shapes` dataset."""
    from augself_jax.data import source

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    source.prepared_builder("augself_shapes/32px", data_dir=data_dir)  # as ArrayRecord
    return data_dir


# The README's commands are run as a user runs them: from a copy of the checkout, with
# relative paths. What the copy leaves out is what a clean clone does not have.
_NOT_COPIED = (".git", "__pycache__", ".pytest_cache", ".ruff_cache", "*.pyc", ".venv",
               ".whl")
_NOT_COPIED_AT_TOP = ("runs", "workdir")  # .gitignore's /runs/ and /workdir*/

# The smallest pretraining that still exercises every part a user sees: MoCo + AugSelf
# (momentum targets and a queue: the most state to resume), two steps of batch 16
# (checkpoints at steps 1 and 2), a 24-row queue (2 x 16 keys wrap around it), the kNN
# monitor on 200 images at the last step.
TINY_RUN_CONFIG = "configs/moco_augself.py:shapes"
TINY_RUN_FLAGS = ("--config.total_steps=2", "--config.batch_size=16",
                  "--config.checkpoint_every=1", "--config.log_every=1",
                  "--config.knn_every=2", "--config.knn_max_examples=200",
                  "--config.method.queue_size=24")


def copy_checkout(dest) -> str:
    """A copy of the checkout at `dest` (for commands run with a relative --workdir)."""
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    anywhere = shutil.ignore_patterns(*_NOT_COPIED)

    def ignore(directory, names):
        skip = set(anywhere(directory, names))
        if os.path.samefile(directory, root):
            skip |= {n for n in names if n.startswith(_NOT_COPIED_AT_TOP)
                     and os.path.isdir(os.path.join(directory, n))}
        return skip

    shutil.copytree(root, dest, ignore=ignore)
    return str(dest)


def run_command(args, cwd, timeout=600):
    """`python <args>` in `cwd`, as typed in a shell there; the completed process."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def tiny_run_command(workdir, data_dir):
    """The tiny run's `python main.py` arguments, for `workdir` (relative)."""
    return ["main.py", f"--config={TINY_RUN_CONFIG}", f"--workdir={workdir}", *TINY_RUN_FLAGS,
            f"--config.data.data_dir={data_dir}"]


@pytest.fixture(scope="session")
def tiny_run(shapes_data_dir, tmp_path_factory):
    """One tiny `python main.py` run shared by the end-to-end tests: (checkout copy, the
    relative workdir, the completed process). Tests must not write into its workdir except
    through evaluate.py (each test that needs results of its own copies it)."""
    checkout = copy_checkout(tmp_path_factory.mktemp("tiny_run") / "checkout")
    r = run_command(tiny_run_command("runs/tiny", shapes_data_dir), cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    return checkout, "runs/tiny", r

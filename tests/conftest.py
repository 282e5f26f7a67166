"""Test-session set-up: eight simulated CPU devices in the test processes (one, as for a user,
in the commands they start), the order the xdist workers take the files in, and the
built-in dataset prepared once per run."""

import functools
import os
import re

# Eight simulated CPU devices for the tests run in this process (sharding tests need them):
# the flag is set, JAX's CPU backend made with it (below), and the user's own XLA_FLAGS put
# back. The commands the tests start (main.py, evaluate.py, the launch scripts) inherit the
# user's environment, so they see the one CPU device a user's machine gives them, not 8:
# the tiny run took 59 s over 8 simulated devices against 32 s over 1.
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_USERS_XLA_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in (_USERS_XLA_FLAGS or "").split() if not f.startswith(_DEVICE_COUNT_FLAG)]
    + [f"{_DEVICE_COUNT_FLAG}=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One persistent XLA compilation cache for the whole run, shared by the pytest workers and
# every command the tests start (they inherit the environment): the suite compiles the same
# train steps and evaluations in many processes. JAX's own threshold is kept: only programs
# that took a second or more to compile are written (writing every small one was measured
# to cost more than it saves). A fresh directory per run, made by the first process (the
# controller) and removed when it ends, so no run reads another run's programs. A user's
# own JAX_COMPILATION_CACHE_DIR is kept (and not removed).
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_CACHE_MADE_HERE = ""
if _CACHE_ENV not in os.environ:
    import tempfile

    _CACHE_MADE_HERE = os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="augself-jax-tests-xla-")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.devices()  # the backend reads XLA_FLAGS once, now
if _USERS_XLA_FLAGS is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _USERS_XLA_FLAGS


def pytest_unconfigure(config) -> None:
    if _CACHE_MADE_HERE:  # only the process that made it (workers inherit the variable)
        import shutil

        shutil.rmtree(_CACHE_MADE_HERE, ignore_errors=True)


# Scheduling over the pytest-xdist workers (`-n 2`, pyproject.toml). Each file is one unit of
# work, so its module fixtures are built once; the files that use the shared tiny run are one
# unit, so it is trained once. The longest units are handed out first, so none is left to
# run alone at the end (xdist's own order, most tests first, started the one-test quick
# start last). Only the schedule depends on this list: a file missing from it, or a stale
# order, costs time, never a result.
TINY_RUN_GROUP = "tiny_run"
LONGEST_FIRST = ("test_quickstart.py", TINY_RUN_GROUP, "test_launch.py", "test_reliability.py",
                 "test_train_experiments.py", "test_methods_new.py", "test_train_feedback.py",
                 "test_methods_model.py", "test_bf16.py")


@functools.cache
def _work_unit(file_name: str) -> str:
    """The unit a test file is scheduled in: the tiny run's group for a file that names the
    fixture (read from its source, since xdist's scheduler sees test ids only), else itself."""
    path = os.path.join(os.path.dirname(__file__), file_name)
    if not os.path.isfile(path):
        return file_name
    with open(path) as f:
        return TINY_RUN_GROUP if re.search(r"\btiny_run\b", f.read()) else file_name


def pytest_collection_modifyitems(config, items) -> None:
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    # A stable sort: each file's tests stay together and in order.
    items.sort(key=lambda item: rank.get(_work_unit(item.path.name), len(rank)))


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs the suite in one process
def pytest_xdist_make_scheduler(config, log):
    """xdist's file scheduling over `_work_unit`s, in the collection's order (sorted above)."""
    from xdist.scheduler import LoadScopeScheduling

    class LongestUnitFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(os.path.basename(nodeid.split("::", 1)[0]))

    config.option.loadscopereorder = False  # keep the collection's order
    return LongestUnitFirst(config, log)


def _shared_by_workers(tmp_path_factory):
    """The directory above every xdist worker's own temporary one (the session's own
    without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding the prepared built-in `shapes` dataset (read only). It is
    generated once per test run: the first worker to ask prepares it under a file lock, the
    others find it prepared."""
    import fcntl

    from augself_jax.data import source

    shared = _shared_by_workers(tmp_path_factory)
    data_dir = str(shared / "tfds_shapes")
    with open(shared / "tfds_shapes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
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


# Runs a script as `python script flags...` does (sys.argv[1:] is the script and its
# flags), printing as it ends whether it imported TensorFlow (only a command that reads
# data needs it), scikit-learn (which Keras would load with the metric writers:
# app.import_metric_writers) and IPython (which Flax would load: app._FLAX_ASKS). The
# binaries end with os._exit after their last line (app.exit_now), so the report is made
# there.
_REPORT_IMPORTS = (
    "import os, runpy, sys; end = os._exit; os._exit = lambda code: (print("
    "'tensorflow imported:', 'tensorflow' in sys.modules), print('sklearn imported:', "
    "'sklearn' in sys.modules), print('IPython imported:', 'IPython' in sys.modules, "
    "flush=True), end(code)); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def reporting_imports(script_and_flags: list[str]) -> list[str]:
    """`python` arguments running `script_and_flags` that print, as the script ends,
    `tensorflow imported: True` (or False), then `sklearn imported: ...` and
    `IPython imported: ...` on the next lines."""
    return ["-c", _REPORT_IMPORTS, *script_and_flags]


def fresh_interpreter_json(program: str, *args: str) -> dict:
    """Runs `python -c program args...` from the checkout's root in a new interpreter (for
    what the test process has already imported) and returns the JSON of its last line."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", program, *args], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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

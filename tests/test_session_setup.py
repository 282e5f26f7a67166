"""The test session's set-up (tests/conftest.py): 8 simulated devices in the test process and
the user's own device count in the commands it starts; the schedule over the xdist workers,
checked against pytest's own collection (the list of longest files names real files, every
file whose tests use the shared tiny run is in its unit, the collection is in the list's
order)."""

import os
import subprocess
import sys

import conftest
import jax

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_longest_first_list_names_test_files():
    files = set(os.listdir(HERE))
    for unit in conftest.LONGEST_FIRST:
        assert unit == conftest.TINY_RUN_GROUP or unit in files, unit


def test_every_file_using_the_tiny_run_is_in_its_unit(request):
    # pytest resolves each test's fixtures itself, through module fixtures too.
    users = {item.path.name for item in request.session.items
             if "tiny_run" in item.fixturenames}
    for name in users:
        assert conftest._work_unit(name) == conftest.TINY_RUN_GROUP, name
    assert conftest._work_unit("test_eval_knn.py") == "test_eval_knn.py"


def test_the_collection_runs_longest_first(request):
    rank = {unit: i for i, unit in enumerate(conftest.LONGEST_FIRST)}
    order = [rank.get(conftest._work_unit(item.path.name), len(rank))
             for item in request.session.items]
    assert order == sorted(order)
    files = [item.path.name for item in request.session.items]
    # each file's tests are contiguous (one unit of work, module fixtures built once)
    runs = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    assert len(runs) == len(set(runs))


def test_eight_devices_here_and_the_users_own_in_a_started_command():
    assert jax.device_count() == 8
    assert os.environ.get("XLA_FLAGS") == conftest._USERS_XLA_FLAGS
    flags = (conftest._USERS_XLA_FLAGS or "").split()
    counts = [f.split("=")[1] for f in flags if f.startswith(conftest._DEVICE_COUNT_FLAG + "=")]
    expected = int(counts[-1]) if counts else 1  # a CPU's one device unless the user said
    started = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert int(started.stdout) == expected

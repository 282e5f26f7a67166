"""The package as a user installs it: a wheel built from a clean copy of the checkout,
installed into a fresh virtual environment, its console scripts run from a directory that
is not a checkout.

The default tests stay offline and fast: the virtual environment sees the already installed
dependencies (`--system-site-packages`) and pip installs only this package (`--no-deps
--no-build-isolation`). The slow tests install in editable mode, and with every dependency
from the package index into a bare environment (the network and several minutes)."""

import os
import re
import subprocess
import sys

import pytest
from conftest import copy_checkout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("augself-train", "augself-evaluate", "augself-preview", "augself-export")
# The flags each program's --help must list (its own and the shared ones it reads).
HELP_FLAGS = {
    "augself-train": ("--config", "--workdir", "--verbose", "--distributed"),
    "augself-evaluate": ("--config", "--workdir", "--step", "--save_features", "--compare"),
    "augself-preview": ("--config", "--out", "--seed", "--num_images"),
    "augself-export": ("--workdir", "--step", "--format", "--out", "--momentum_encoder"),
}
# A user's own experiment file outside any checkout, built on the shipped presets.
USER_CONFIG = '''
from configs import common


def get_config(arg=None):
    return common.experiment(arg, "simclr", augself=True)
'''


def _environment() -> dict:
    """The user's shell: no PYTHONPATH pointing into this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _run(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_environment(), capture_output=True, text=True,
                          timeout=timeout)


def _make_venv(path, system_site_packages: bool) -> str:
    """A new virtual environment at `path`; returns its bin directory. Without pip of its
    own when it sees the system's (pip then installs into the environment that runs it)."""
    args = [sys.executable, "-m", "venv", str(path)]
    args += ["--system-site-packages", "--without-pip"] if system_site_packages else []
    r = _run(args, cwd=str(path.parent))
    assert r.returncode == 0, r.stderr
    return str(path / "bin")


def _pip_install(bin_dir: str, *args: str, cwd: str, timeout=600) -> None:
    r = _run([os.path.join(bin_dir, "python"), "-m", "pip", "install", "-q", *args], cwd=cwd,
             timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """(bin directory of a venv holding the wheel, an empty directory outside any
    checkout)."""
    base = tmp_path_factory.mktemp("package")
    source = copy_checkout(base / "checkout")
    r = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
              "-q", "-w", str(base / "dist")], cwd=source)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (wheel,) = os.listdir(base / "dist")
    assert wheel.startswith("augself_jax-") and wheel.endswith("-py3-none-any.whl"), wheel
    bin_dir = _make_venv(base / "venv", system_site_packages=True)
    _pip_install(bin_dir, "--no-deps", "--no-build-isolation", str(base / "dist" / wheel),
                 cwd=str(base))
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return bin_dir, str(elsewhere)


def _expected_classes() -> list[str]:
    with open(os.path.join(ROOT, "augself_jax", "data", "imagenet100_classes.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def test_wheel_holds_the_packages_and_their_data(installed_wheel):
    bin_dir, elsewhere = installed_wheel
    venv = os.path.dirname(bin_dir)
    r = _run([os.path.join(bin_dir, "python"), "-c",
              "import augself_jax, configs, configs.common\n"
              "from augself_jax.data.registry import imagenet100_classes\n"
              "print(augself_jax.__file__); print(configs.common.__file__)\n"
              "print(','.join(imagenet100_classes()))"], cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    package_file, configs_file, classes = r.stdout.strip().splitlines()
    # Imported from the environment, not from the checkout the wheel was built from.
    assert package_file.startswith(venv) and configs_file.startswith(venv), r.stdout
    assert classes.split(",") == _expected_classes()


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_help_lists_its_flags(installed_wheel, script):
    bin_dir, elsewhere = installed_wheel
    r = _run([os.path.join(bin_dir, script), "--help"], cwd=elsewhere)
    assert r.returncode in (0, 1) and not r.stderr, r.stderr[-3000:]  # absl's --help exits 1
    for flag in HELP_FLAGS[script]:
        # absl lists `  --flag: help`, argparse (the export command) `  --flag [VALUE]  help`.
        assert re.search(rf"^  ({re.escape(flag)}[: ]|--\[no\]{flag[2:]}:)", r.stdout, re.M), (
            flag, r.stdout)


@pytest.mark.parametrize("script,flags", [
    ("main.py", HELP_FLAGS["augself-train"]), ("evaluate.py", HELP_FLAGS["augself-evaluate"])])
def test_checkout_script_help_lists_its_flags(script, flags):
    """`python main.py --help` in a checkout lists the flags, not only the docstring."""
    r = _run([sys.executable, script, "--help"], cwd=ROOT)
    assert r.returncode in (0, 1) and not r.stderr, r.stderr[-3000:]
    assert r.stdout.startswith(("Pretraining", "Transfer evaluation")), r.stdout[:200]
    for flag in flags:
        assert f"  {flag}:" in r.stdout or f"  --[no]{flag[2:]}:" in r.stdout, (flag, r.stdout)


def test_installed_train_refuses_a_bad_value_outside_a_checkout(installed_wheel):
    """The README's config name, found in the installed package, validated before anything
    is compiled or written."""
    bin_dir, elsewhere = installed_wheel
    r = _run([os.path.join(bin_dir, "augself-train"), "--config=configs/simclr_augself.py:shapes",
              "--workdir=runs/x", "--config.optimizer.name=bogus"], cwd=elsewhere)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("config error: optimizer.name:") and "sgd" in last, last
    assert not os.path.exists(os.path.join(elsewhere, "runs")), "nothing may be written"


def test_installed_evaluate_refuses_a_misspelt_field(installed_wheel):
    bin_dir, elsewhere = installed_wheel
    r = _run([os.path.join(bin_dir, "augself-evaluate"), "--config=configs/simclr.py:shapes",
              "--workdir=runs/x", "--config.aug.colour_strength=2"], cwd=elsewhere)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("config error: config.aug.colour_strength: no such field"), line
    assert os.listdir(elsewhere) == []


def test_installed_export_refuses_a_missing_workdir(installed_wheel):
    bin_dir, elsewhere = installed_wheel
    r = _run([os.path.join(bin_dir, "augself-export"), "--workdir=runs/none",
              "--format=torchvision", "--out=backbone.safetensors"], cwd=elsewhere)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("config error: workdir:") and "runs/none" in line, line
    assert os.listdir(elsewhere) == []


def test_installed_preview_reads_a_user_config_built_on_the_presets(installed_wheel, tmp_path):
    """A config file of the user's own, outside any checkout, imports `configs.common` from
    the installed package; its override of a missing field is refused once it has loaded."""
    bin_dir, _ = installed_wheel
    (tmp_path / "mine.py").write_text(USER_CONFIG)
    r = _run([os.path.join(bin_dir, "augself-preview"), "--config=mine.py:shapes",
              "--out=preview", "--config.augself.colour=1"], cwd=str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("config error: config.augself.colour: no such field"), line
    assert sorted(os.listdir(tmp_path)) == ["mine.py"]


def test_config_name_falls_back_to_the_importable_configs(tmp_path, monkeypatch):
    """`--config=configs/<file>.py:preset` from a directory without that file names the
    `configs` package Python imports (here this checkout's; installed, the package's); a
    file that exists where the user is, and any other path, stay as given."""
    from augself_jax.app import installed_config

    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(ROOT, "configs", "simclr.py")
    assert installed_config("configs/simclr.py:shapes,vit_small") == shipped + ":shapes,vit_small"
    assert installed_config("configs/simclr.py") == shipped
    assert installed_config("configs/nope.py:shapes") == "configs/nope.py:shapes"
    assert installed_config("mine/simclr.py:shapes") == "mine/simclr.py:shapes"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "simclr.py").write_text(USER_CONFIG)
    assert installed_config("configs/simclr.py:shapes") == "configs/simclr.py:shapes"


@pytest.mark.slow
def test_editable_install_runs_the_checkout(tmp_path):
    """`pip install -e .`: the scripts run the copy's own files, so an edit there is live."""
    source = copy_checkout(tmp_path / "checkout")
    bin_dir = _make_venv(tmp_path / "venv", system_site_packages=True)
    _pip_install(bin_dir, "--no-deps", "--no-build-isolation", "-e", ".", cwd=source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = _run([os.path.join(bin_dir, "python"), "-c",
              "import augself_jax, configs; print(augself_jax.__file__); "
              "print(list(configs.__path__)[0])"], cwd=str(elsewhere))
    assert r.returncode == 0, r.stderr[-3000:]
    package_file, configs_dir = r.stdout.strip().splitlines()
    assert os.path.realpath(package_file) == os.path.realpath(
        os.path.join(source, "augself_jax", "__init__.py"))
    assert os.path.realpath(configs_dir) == os.path.realpath(os.path.join(source, "configs"))
    r = _run([os.path.join(bin_dir, "augself-train"), "--help"], cwd=str(elsewhere))
    assert r.returncode in (0, 1) and "  --workdir:" in r.stdout, r.stderr[-3000:]
    r = _run([os.path.join(bin_dir, "augself-train"), "--config=configs/simclr.py:shapes",
              "--workdir=runs/x", "--config.batch_size=0"], cwd=str(elsewhere))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "config error: batch_size"), r.stderr[-3000:]


@pytest.mark.slow
def test_pip_install_with_dependencies_in_a_bare_venv(tmp_path, shapes_data_dir):
    """`pip install .` into an environment that has nothing: every dependency comes from
    the package index (network, several minutes), then the installed `augself-train` trains
    two steps outside any checkout and `augself-evaluate` evaluates them, and the README's
    `python main.py` trains in the checkout with that environment's Python."""
    source = copy_checkout(tmp_path / "checkout")
    bin_dir = _make_venv(tmp_path / "venv", system_site_packages=False)
    _pip_install(bin_dir, ".", cwd=source, timeout=1800)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = ["--config=configs/simclr_augself.py:shapes", "--workdir=runs/installed",
           f"--config.data.data_dir={shapes_data_dir}", "--config.total_steps=2",
           "--config.batch_size=16", "--config.knn_every=0", "--config.eval.protocols=knn",
           "--config.eval.max_examples=200"]
    r = _run([os.path.join(bin_dir, "augself-train"), *run], cwd=str(elsewhere), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert os.path.isdir(os.path.join(elsewhere, "runs", "installed", "checkpoints", "2"))
    r = _run([os.path.join(bin_dir, "augself-evaluate"), *run], cwd=str(elsewhere), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    row = r"\| shapes/shape \| knn \| top1_k1 \| \d+\.\d+ \|"
    assert re.search(row, r.stdout), r.stdout[-2000:]
    run[1] = "--workdir=runs/checkout"
    r = _run([os.path.join(bin_dir, "python"), "main.py", *run], cwd=source, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert os.path.isdir(os.path.join(source, "runs", "checkout", "checkpoints", "2"))

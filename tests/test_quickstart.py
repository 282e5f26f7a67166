"""The README's quick start, run as a new user runs it: its commands parsed from the README
and run as written from a fresh copy of the checkout (relative --workdir, the preset's own
kNN monitor and every evaluation protocol, the dataset generated on first use), with one
change only, a shorter schedule (`--config.total_steps`). The install step is the same
command `.ci/run` has already run, so it is skipped here."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from test_train_support import load_config

from augself_jax.data.eval_datasets import LINEAR
from augself_jax.evaluation.common import split_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The built-in dataset's label tasks, from the evaluation datasets' registry.
SHAPES_TASKS = {LINEAR["shapes"].task_name(k) for k in LINEAR["shapes"].label_keys}
STEPS = 3  # the one override: a shorter schedule
IGNORED = shutil.ignore_patterns(".git", "runs", "__pycache__", ".pytest_cache", ".*cache")


def readme_block(heading: str) -> str:
    """The first ```bash block after `heading` in the README."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def quickstart_commands() -> list[list[str]]:
    """The quick start's python commands, split on '&&', without the install."""
    block = readme_block("## Quick start")
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").split("&&")]
    assert commands[0][:4] == ["python", "-m", "pip", "install"], commands[0]
    return commands[1:]


def _run(cmd: list[str], cwd: str, env: dict) -> subprocess.CompletedProcess:
    assert cmd[0] == "python"
    r = subprocess.run([sys.executable, *cmd[1:], f"--config.total_steps={STEPS}"], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"{shlex.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _results(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        return json.load(f)


def test_readme_quickstart_as_written(tmp_path):
    commands = quickstart_commands()
    # SimCLR + AugSelf first (the block begins with it), then plain SimCLR, then the
    # side-by-side of the two runs' results.
    assert [c[1] for c in commands] == ["main.py", "evaluate.py", "main.py", "evaluate.py",
                                        "evaluate.py"]
    assert commands[0][2].startswith("--config=configs/simclr_augself.py:")
    assert any(a.startswith("--compare=") for a in commands[-1])
    checkout = str(tmp_path / "checkout")
    shutil.copytree(ROOT, checkout, ignore=IGNORED)
    # A fresh TFDS directory: the built-in dataset is generated on first use, as on a new
    # machine (TFDS reads its default directory from this variable).
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tensorflow_datasets")}

    train = _run(commands[0], checkout, env)
    out = train.stdout + train.stderr
    assert f"step {STEPS}/{STEPS}" in out
    assert re.search(rf"step {STEPS}/{STEPS} kNN \(1-NN cosine\) top-1: \d+\.\d\d% \(monitor: ",
                     out), out[-2000:]
    workdir = os.path.join(checkout, "runs", "quickstart")  # the README's relative workdir
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))
    with open(os.path.join(workdir, "config.json")) as f:
        trained = json.load(f)
    assert trained["aug"]["hue"] == 0.5 and trained["augself"]["color"] > 0

    evaluation = _run(commands[1], checkout, env)
    # evaluate.py ends by printing the results table.
    assert "| shapes/shape | linear | top1 |" in evaluation.stdout
    records = _results(workdir)
    for protocol in ("linear", "knn"):
        assert {x["dataset"] for x in records if x["protocol"] == protocol} == SHAPES_TASKS
    # Every protocol of the evaluated config's default, localization and retrieval among them.
    config_flag = next(a for a in commands[1] if a.startswith("--config="))
    name, _, preset = config_flag.removeprefix("--config=configs/").partition(".py:")
    protocols = set(split_list(load_config(name, preset).eval.protocols))
    assert {"linear", "knn", "probe", "localization", "retrieval"} <= protocols
    assert {x["protocol"] for x in records} == protocols
    assert {("shapes", "mean_iou"), ("shapes/hue", "p@10"), ("shapes/position", "p@10")} <= {
        (x["dataset"], x["metric"]) for x in records}
    probes = {x["metric"] for x in records if x["protocol"] == "probe"}
    assert {"hue_err_deg", "position_r2", "size_r2", "color_hist_r2"} <= probes
    assert all(x["step"] == STEPS for x in records)
    assert os.path.isfile(os.path.join(workdir, "eval", "results.md"))

    # The plain run: the same recipe without the AugSelf heads.
    _run(commands[2], checkout, env)
    plain = os.path.join(checkout, "runs", "quickstart_plain")
    with open(os.path.join(plain, "config.json")) as f:
        plain_config = json.load(f)
    assert plain_config["augself"]["color"] == 0 and plain_config["aug"]["hue"] == 0.5
    _run(commands[3], checkout, env)

    # The side-by-side: both runs' values for shape, hue and position, and the difference.
    side = _run(commands[4], checkout, env).stdout
    assert "| dataset | protocol | metric | quickstart_plain | quickstart | delta |" in side
    for task in ("shapes/shape", "shapes/hue", "shapes/position"):
        assert f"| {task} | linear | top1 |" in side, side
    assert "| shapes | localization | mean_iou |" in side
    assert "| shapes/hue | retrieval | p@10 |" in side
    plain_shape = next(x["value"] for x in _results(plain)
                       if x["dataset"] == "shapes/shape" and x["protocol"] == "linear")
    aware_shape = next(x["value"] for x in records
                       if x["dataset"] == "shapes/shape" and x["protocol"] == "linear")
    row = next(line for line in side.splitlines() if line.startswith("| shapes/shape | linear"))
    assert f"{aware_shape - plain_shape:+.2f}" in row, row

    # The same command again finds the finished run and trains nothing.
    again = _run(commands[0], checkout, env)
    out = again.stdout + again.stderr
    assert "nothing to do" in out and f"step {STEPS}/{STEPS} grad_norm" not in out

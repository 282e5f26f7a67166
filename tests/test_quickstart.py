"""The README's quick start in a reduced form: the same two commands on the built-in
dataset (a few steps, a small evaluation) leave a results.json with every task."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_TASKS = {"shapes/shape", "shapes/hue", "shapes/position", "shapes/size"}


def _readme_quickstart() -> list[list[str]]:
    """The python commands of the README's first code block, split on '&&'."""
    with open(os.path.join(ROOT, "README.md")) as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    commands = [c.split() for c in block.replace("\n", " ").split("&&")]
    return [c for c in commands if c[1] in ("main.py", "evaluate.py")]


def test_readme_quickstart_reduced(shapes_data_dir, tmp_path):
    commands = _readme_quickstart()
    assert [c[1] for c in commands] == ["main.py", "evaluate.py"]
    workdir = str(tmp_path / "quickstart")
    reduced = {
        "main.py": ["--config.total_steps=3", "--config.batch_size=16",
                    "--config.checkpoint_every=3", "--config.knn_every=0"],
        "evaluate.py": ["--config.eval.max_examples=200", "--config.eval.linear.l2_num=3",
                        "--config.eval.protocols=linear,knn,probe"],
    }
    for cmd in commands:
        args = [a for a in cmd[2:] if not a.startswith("--workdir=")]
        full = [sys.executable, cmd[1], *args, f"--workdir={workdir}",
                f"--config.data.data_dir={shapes_data_dir}", *reduced[cmd[1]]]
        r = subprocess.run(full, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        if cmd[1] == "main.py":
            assert "step 3/3" in r.stdout + r.stderr
    # evaluate.py ends by printing the results table.
    assert "| shapes/hue | linear | top1 |" in r.stdout
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        records = json.load(f)
    assert {x["dataset"] for x in records if x["protocol"] == "linear"} == SHAPES_TASKS
    assert {x["dataset"] for x in records if x["protocol"] == "knn"} == SHAPES_TASKS
    probes = {x["metric"] for x in records if x["protocol"] == "probe"}
    assert {"hue_err_deg", "position_r2", "size_r2", "color_hist_r2"} <= probes
    assert all(x["step"] == 3 for x in records)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))

"""A short run on the built-in dataset learns shape by a clear margin over the untrained
network (slow: a few CPU minutes). Run through the comparison script, as a user would."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shape_top1(workdir: str) -> float:
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        records = json.load(f)
    return next(r["value"] for r in records
                if r["dataset"] == "shapes/shape" and r["protocol"] == "linear")


@pytest.mark.slow
def test_a_short_simclr_run_learns_shape(shapes_data_dir, tmp_path):
    out = tmp_path / "compare"
    cmd = [sys.executable, "benchmarks/compare_aware.py", f"--out={out}",
           "--arms=simclr,untrained", "--seeds=0", "--colours=hue_circle", "--steps=150",
           "--workers=1", "--eval_max_examples=2000", "--l2_num=5",
           f"--data_dir={shapes_data_dir}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = _shape_top1(str(out / "hue_circle" / "simclr" / "seed0"))
    untrained = _shape_top1(str(out / "untrained" / "seed0"))
    # Chance is 25% (4 balanced classes); the untrained network gets about 30-40%.
    assert trained > untrained + 20.0, (trained, untrained)
    assert (out / "comparison.md").exists()

"""benchmarks/bench_linear.py from the command line: paired, interleaved runs with the
median and range of their ratios, each solver's iterations, and the sweep's progress lines
(the README's --repeats and --progress)."""

import os
import re

import numpy as np
from conftest import run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_repeats_pair_the_solvers_and_summarise_the_ratios():
    proc = run_command(["benchmarks/bench_linear.py", "--n=200", "--d=6", "--classes=3",
                        "--num_l2=3", "--repeats=2", "--progress"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    runs = re.findall(r"^run (\d): (.*) \| ratio ([\d.]+)x$", out, flags=re.M)
    assert [r[0] for r in runs] == ["1", "2"]
    # Interleaved, alternating which solver goes first.
    assert runs[0][1].startswith("jax") and runs[1][1].startswith("sklearn")
    for _, line, ratio in runs:
        assert float(ratio) > 0
        assert re.search(r"jax .*\((\d+) iterations, [\d.]+ ms each\)", line)
        assert re.search(r"sklearn .*\((\d+) iterations, [\d.]+ ms each\)", line)
    ratios = [float(r[2]) for r in runs]
    summary = re.search(r"over 2 paired runs: median ([\d.]+)x, range ([\d.]+)-([\d.]+)x", out)
    assert summary, out
    assert abs(float(summary.group(1)) - np.median(ratios)) <= 0.011
    assert abs(float(summary.group(2)) - min(ratios)) <= 0.011
    assert abs(float(summary.group(3)) - max(ratios)) <= 0.011
    # --progress: the sweep's lines, three fits and the refit, in each of the two runs.
    assert len(re.findall(r"^linear bench: fit 4/4 \(w=.*, refit, \d+ iterations\), "
                          r"\d+ s, ETA 0 s$", out, flags=re.M)) == 2

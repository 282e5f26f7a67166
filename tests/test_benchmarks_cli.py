"""The benchmarks as a user runs them: every script answers --helpshort from any directory
(bench_linear lacked the path set-up and crashed), with one flag library (absl) and help
text for every flag; bench_cost prints the photometric share in percent, as the README
quotes it; bench_pipeline warns when too few batches make its rates meaningless."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)
# The scripts a user runs (the folder also holds libraries they import).
SCRIPTS = sorted(f for f in os.listdir(BENCHMARKS)
                 if f.endswith(".py") and (f.startswith("bench_") or f == "compare_aware.py"))


def _own_flags(help_text: str, script: str) -> dict[str, str]:
    """{flag: its help text} of the section absl prints for the script's own flags."""
    section = help_text.split(f"{os.path.join(BENCHMARKS, script)}:", 1)[1]
    section = section.split("\n\n", 1)[0]
    return dict(re.findall(r"^  --(?:\[no\])?(\w+):(.*)$", section, flags=re.M))


def test_every_benchmark_answers_help_with_help_text_for_every_flag(tmp_path):
    # From a directory outside the checkout, all at once (each start-up imports JAX).
    env = {**os.environ, "PYTHONPATH": ""}
    runs = {s: subprocess.Popen([sys.executable, os.path.join(BENCHMARKS, s), "--helpshort"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for s in SCRIPTS}
    assert {"bench_linear.py", "bench_cost.py", "bench_pipeline.py"} <= set(runs)
    for script, p in runs.items():
        out, err = p.communicate(timeout=300)
        # absl's help exits with status 1 by design; a crash is a traceback.
        assert p.returncode in (0, 1) and "Traceback" not in err, (script, err[-2000:])
        own = _own_flags(out, script)
        assert own, (script, out)
        missing = [name for name, text in own.items()
                   if not text.strip() or "no help available" in text]
        assert not missing, (script, missing)
        source = open(os.path.join(BENCHMARKS, script)).read()
        assert "argparse" not in source, script  # one flag library for every benchmark


def test_bench_cost_prints_the_photometric_share_in_percent():
    import bench_cost

    photo = bench_cost.Cost(flops=2.7e9, bytes_accessed=3.0e9)
    plain = bench_cost.Cost(flops=842e9, bytes_accessed=150e9)
    row = bench_cost.photometric_row("resnet18/96", "simclr", photo, plain)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 2.7 / 842 = 0.32%; 3 / 150 = 2.00%
    assert cells == ["resnet18/96", "photometric ops (both views)", "share of plain simclr",
                     "0.0027", "3.00", "0.32%", "2.00%"]


def test_bench_pipeline_warns_when_too_few_batches_per_measurement():
    import bench_pipeline

    assert bench_pipeline.few_batches_warning(256, 64) is None  # the default: 4 batches
    line = bench_pipeline.few_batches_warning(8, 8)
    assert line.startswith("warning: 8 examples are 1 batch(es) of 8")
    assert "not meaningful" in line and "--num_examples=32" in line
    assert bench_pipeline.few_batches_warning(31, 8) is not None
    assert bench_pipeline.few_batches_warning(32, 8) is None


@pytest.mark.slow
def test_bench_pipeline_prints_the_warning_on_a_short_run(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "bench_pipeline.py"),
                        "--num_examples=8", "--batch=8", "--rounds=1", "--sources=stl10",
                        "--nodevice_part"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: 8 examples"))
    assert lines[warning + 1].startswith("source")  # before the table it qualifies

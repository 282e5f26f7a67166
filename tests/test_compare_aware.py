"""The comparison benchmark's bookkeeping: which runs it trains and how it summarises them.

The runs themselves are the trainer and the evaluation, tested elsewhere; the full sweep is a
benchmark, not a test.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import compare_aware  # noqa: E402


def _records(shape: float, hue_err: float) -> list[dict]:
    values = {("shapes/shape", "top1"): shape, ("shapes/hue", "top1"): 50.0,
              ("shapes/position", "top1"): 20.0, ("shapes/size", "top1"): 40.0,
              ("shapes", "hue_err_deg"): hue_err, ("shapes", "position_r2"): 10.0}
    return [{"dataset": d, "metric": m, "value": v} for (d, m), v in values.items()]


def test_grid_covers_every_arm_strength_and_seed_once():
    grid = compare_aware.run_grid(["simclr", "simclr+augself"], [1.0, 2.0], [0, 1, 2])
    assert len(grid) == 2 * 2 * 3 == len(set(grid))
    assert grid[0] == ("simclr", 1.0, 0) and grid[-1] == ("simclr+augself", 2.0, 2)


def test_untrained_runs_once_per_seed_whatever_the_strengths():
    grid = compare_aware.run_grid(["untrained", "byol"], [1.0, 2.0], [0, 1])
    assert [g for g in grid if g[0] == "untrained"] == [("untrained", 1.0, 0),
                                                       ("untrained", 1.0, 1)]
    assert sum(g[0] == "byol" for g in grid) == 4


def test_table_reports_mean_and_sample_spread_over_seeds():
    # Shape 30, 33, 36: mean 33, sample std 3; hue error 10, 20, 30: mean 20, sample std 10.
    runs = {("simclr", 2.0): [_records(30, 10), _records(33, 20), _records(36, 30)],
            ("untrained", 1.0): [_records(25, 50)]}
    lines = compare_aware.table(runs).splitlines()
    assert lines[0].startswith("| colour s | arm | shape % | hue % |")
    assert lines[2] == ("| 2 | simclr | 33.0 ± 3.0 | 50.0 ± 0.0 | 20.0 ± 0.0 | 40.0 ± 0.0 | "
                        "20.0 ± 10.0 | 10.0 ± 0.0 |")
    assert lines[3].startswith("| any | untrained | 25.0 ± 0.0 |")


def test_every_arm_maps_to_a_known_method_and_variant():
    from augself_jax.methods import METHODS

    for method, variant in compare_aware.ARMS.values():
        assert method in METHODS and variant in ("plain", "augself", "cassle", "untrained")

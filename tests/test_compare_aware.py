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


def test_grid_covers_every_arm_colour_and_seed_once():
    grid = compare_aware.run_grid(["simclr", "simclr+augself"], ["reference", "hue_circle"],
                                  [0, 1, 2])
    assert len(grid) == 2 * 2 * 3 == len(set(grid))
    assert grid[0] == ("simclr", "reference", 0)
    assert grid[-1] == ("simclr+augself", "hue_circle", 2)


def test_untrained_runs_once_per_seed_whatever_the_colours():
    grid = compare_aware.run_grid(["untrained", "byol"], ["reference", "strong"], [0, 1])
    assert [g for g in grid if g[0] == "untrained"] == [("untrained", "reference", 0),
                                                       ("untrained", "reference", 1)]
    assert sum(g[0] == "byol" for g in grid) == 4


def test_a_colour_setting_with_its_own_dataset_gets_its_own_untrained_runs(tmp_path):
    grid = compare_aware.run_grid(["simclr", "untrained"], ["hue_circle", "hue72"], [0])
    assert grid == [("simclr", "hue_circle", 0), ("untrained", "hue_circle", 0),
                    ("simclr", "hue72", 0), ("untrained", "hue72", 0)]
    compare_aware.FLAGS(["compare_aware.py", f"--out={tmp_path}"])
    try:
        config = compare_aware.arm_config("simclr", 0, "hue72")
    finally:
        compare_aware.FLAGS.unparse_flags()
    assert config.data.dataset == config.eval.datasets == "shapes_hue72"
    assert config.aug.hue == 0.1  # the reference's jitter: the data moved, not the jitter


def test_the_narrow_hue_dataset_fills_the_same_columns():
    records = [{"dataset": d.replace("shapes", "shapes_hue72", 1), "metric": m, "value": v}
               for d, m, v in ((r["dataset"], r["metric"], r["value"])
                               for r in _records(30, 10))]
    runs = {("untrained", "hue72"): [records]}
    assert compare_aware.table(runs).splitlines()[2].startswith(
        "| hue72 | untrained | 30.0 ± 0.0 | 50.0 ± 0.0 | 20.0 ± 0.0 | 40.0 ± 0.0 | 10.0 ± 0.0 |")


def test_table_reports_mean_and_sample_spread_over_seeds():
    # Shape 30, 33, 36: mean 33, sample std 3; hue error 10, 20, 30: mean 20, sample std 10.
    runs = {("simclr", "strong"): [_records(30, 10), _records(33, 20), _records(36, 30)],
            ("untrained", "reference"): [_records(25, 50)]}
    lines = compare_aware.table(runs).splitlines()
    assert lines[0].startswith("| colour | arm | shape % | hue % |")
    # The analyses' columns: these records predate them.
    assert lines[2] == ("| strong | simclr | 33.0 ± 3.0 | 50.0 ± 0.0 | 20.0 ± 0.0 | "
                        "40.0 ± 0.0 | 20.0 ± 10.0 | 10.0 ± 0.0 | – | – | – | – |")
    assert lines[3].startswith("| any | untrained | 25.0 ± 0.0 |")


def test_analysis_columns_when_measured():
    def with_analyses(mi: float) -> list[dict]:
        return _records(30, 10) + [
            {"dataset": "shapes", "metric": "mean_iou", "value": 61.0},
            {"dataset": "shapes/hue", "metric": "p@10", "value": 40.0},
            {"dataset": "shapes/position", "metric": "p@10", "value": 70.0},
            {"dataset": "shapes", "metric": "mi_nats", "value": mi}]

    runs = {("simclr", "hue_circle"): [with_analyses(0.5), with_analyses(0.7)],
            ("simclr+augself", "hue_circle"): [with_analyses(0.9), with_analyses(1.5)]}
    head, _, row = compare_aware.table(runs).splitlines()[:3]
    assert head.endswith("| localization IoU % | hue p@10 % | position p@10 % | I(C;Z) nats |")
    # I(C;Z) 0.5, 0.7: mean 0.6, sample sd 0.1414 (two decimals for nats)
    assert row.endswith("| 61.0 ± 0.0 | 40.0 ± 0.0 | 70.0 ± 0.0 | 0.60 ± 0.14 |")
    diff = compare_aware.differences_table(runs).splitlines()[2]
    # paired differences 0.4, 0.8: mean 0.6, sd 0.283, half width 12.706 * 0.283 / sqrt(2)
    assert diff.endswith("| +0.60 [-1.94, +3.14] |"), diff


def test_differences_are_paired_by_seed_with_a_t_interval():
    # Per-seed shape differences (aware - plain): 2, 4, 6 -> mean 4, sample sd 2, 95% half
    # width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.968. Unpaired, the arms' spreads
    # (sd 15 each) would swamp it: the pairing is what the interval must use.
    plain = [_records(30, 10), _records(60, 10), _records(45, 10)]
    aware = [_records(32, 11), _records(64, 12), _records(51, 13)]
    runs = {("simclr", "hue_circle"): plain, ("simclr+augself", "hue_circle"): aware,
            ("untrained", "hue_circle"): [_records(25, 50)] * 3}
    lines = compare_aware.differences_table(runs).splitlines()
    assert len(lines) == 3  # header, rule, one aware arm; plain and untrained have no row
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:2] == ["hue_circle", "simclr+augself − simclr"]
    assert cells[2] == "+4.0 [-1.0, +9.0]"
    # Hue error differences 1, 2, 3: mean 2, sd 1, half width 4.303 / sqrt(3) = 2.484.
    assert cells[6] == "+2.0 [-0.5, +4.5]"


def test_arm_config_uses_one_recipe_for_every_arm(tmp_path):
    compare_aware.FLAGS(["compare_aware.py", f"--out={tmp_path}"])  # the defaults
    try:
        _check_arm_configs()
    finally:
        compare_aware.FLAGS.unparse_flags()


def _check_arm_configs():
    plain = compare_aware.arm_config("simclr", 1, "hue_circle")
    aware = compare_aware.arm_config("supervised+augself", 1, "hue_circle")
    assert plain.optimizer.to_dict() == aware.optimizer.to_dict()
    assert (plain.total_steps, plain.batch_size) == (aware.total_steps, aware.batch_size)
    assert plain.aug.hue == 0.5 and plain.aug.color_strength == 1.0
    assert plain.seed == 1 and aware.augself.crop > 0 and plain.augself.crop == 0
    assert plain.total_steps == 150 and plain.batch_size == 128
    assert compare_aware.arm_config("simclr", 0, "strong").aug.color_strength == 2.0
    # The default grid: the quick start's setting, 5 seeds, SimCLR plain / AugSelf / CASSLE.
    grid = compare_aware.run_grid(compare_aware.FLAGS.arms, compare_aware.FLAGS.colours,
                                  [int(s) for s in compare_aware.FLAGS.seeds])
    assert len(grid) == 4 * 5 and {g[1] for g in grid} == {"hue_circle"}


def test_every_arm_maps_to_a_known_method_and_variant():
    from augself_jax.methods.registry import names

    for method, variant, *_ in compare_aware.ARMS.values():
        assert method in names() and variant in ("plain", "augself", "cassle", "untrained")


def test_variant_arms_change_only_their_override(tmp_path):
    compare_aware.FLAGS(["compare_aware.py", f"--out={tmp_path}", "--steps=150"])
    try:
        default = compare_aware.arm_config("simclr+cassle", 0, "hue_circle")
        assert default.cassle.descriptor_keys == "blur,color,color_diff,crop,gray"
        for arm, field, expected in (
                ("simclr+cassle_no_color_diff", "descriptor_keys", "blur,color,crop,gray"),
                ("simclr+cassle_no_colour", "descriptor_keys", "blur,crop,gray"),
                ("simclr+cassle_crop", "descriptor_keys", "crop"),
                ("simclr+cassle_raw", "mode", "raw")):
            c = compare_aware.arm_config(arm, 0, "hue_circle")
            assert c.cassle[field] == expected and c.cassle.enabled
            c.cassle[field] = default.cassle[field]
            assert c.to_dict() == default.to_dict(), arm  # nothing else differs
        circular = compare_aware.arm_config("simclr+augself_circular", 0, "hue_circle")
        assert circular.augself.color_target == "circular" and circular.total_steps == 150
    finally:
        compare_aware.FLAGS.unparse_flags()


def test_a_variant_arm_is_paired_with_its_methods_plain_arm():
    plain = [_records(90, 60), _records(80, 50)]
    variant = [_records(60, 10), _records(70, 30)]
    runs = {("simclr", "hue_circle"): plain, ("simclr+cassle_crop", "hue_circle"): variant}
    rows = compare_aware.differences_table(runs).splitlines()[2:]
    assert len(rows) == 1 and "simclr+cassle_crop − simclr" in rows[0]
    # shape differences -30, -10: mean -20
    assert "| -20.0 [" in rows[0]

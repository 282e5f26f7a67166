"""Evaluation results kept per checkpoint: WORKDIR/eval/step_<N>/results.{json,md} (figures
and features beside them), a re-evaluation of a step replacing only what it recomputes,
eval/results.{json,md} the latest; --step best named in the table; --compare states its
direction and names the rows found in one run only; few-shot progress lines."""

import json
import os
import shutil

from augself_jax.evaluation import reports
from augself_jax.evaluation.common import Progress
from augself_jax.evaluation.fewshot import FewShotEvaluator


def _rec(dataset, protocol, metric, value, step=40, config_hash="abc", **extra):
    return reports.record(dataset, protocol, metric, value, step=step,
                          config_hash=config_hash, **extra)


LINEAR = [_rec("shapes/hue", "linear", "top1", 70.0), _rec("shapes/size", "linear", "top1", 60.0)]
KNN = [_rec("shapes/hue", "knn", "top1_k1", 50.0)]


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_each_step_keeps_its_results_and_a_rerun_replaces_only_what_it_recomputes(tmp_path):
    eval_dir = str(tmp_path / "eval")
    reports.save_step_results([*LINEAR, *KNN], eval_dir, 40)
    # A kNN-only rerun of the same checkpoint and config: the linear numbers stay.
    knn_again = [_rec("shapes/hue", "knn", "top1_k1", 51.0, checkpoint="best")]
    merged, path, kept = reports.save_step_results(knn_again, eval_dir, 40)
    assert path == os.path.join(eval_dir, "step_40", "results.json") and kept == 2
    on_disk = _load(path)
    assert on_disk == merged and len(on_disk) == 3
    values = {(r["dataset"], r["protocol"]): r["value"] for r in on_disk}
    assert values == {("shapes/hue", "linear"): 70.0, ("shapes/size", "linear"): 60.0,
                      ("shapes/hue", "knn"): 51.0}
    assert os.path.exists(os.path.join(eval_dir, "step_40", "results.md"))
    # Another step: its own folder; step 40's is untouched; eval/results.json is the latest.
    reports.save_step_results([_rec("shapes/hue", "knn", "top1_k1", 40.0, step=20)], eval_dir,
                              20)
    assert len(_load(os.path.join(eval_dir, "step_40", "results.json"))) == 3
    latest = _load(os.path.join(eval_dir, "results.json"))
    assert [r["step"] for r in latest] == [20]
    assert sorted(os.listdir(eval_dir)) == ["results.json", "results.md", "step_20", "step_40"]


def test_a_rerun_with_another_config_drops_the_old_numbers(tmp_path):
    eval_dir = str(tmp_path / "eval")
    reports.save_step_results(LINEAR, eval_dir, 40)
    other = [_rec("shapes/hue", "knn", "top1_k1", 10.0, config_hash="zzz")]
    merged, _, kept = reports.save_step_results(other, eval_dir, 40)
    assert kept == 0 and merged == other


def test_step_best_is_named_in_the_table():
    best = [_rec("shapes/hue", "knn", "top1_k1", 50.0, checkpoint="best")]
    head = reports.markdown_table(best).splitlines()[0]
    assert head.startswith("Checkpoint step 40 (--step best: the checkpoint of the best "
                           "kNN-monitor accuracy)")
    assert "best" not in reports.markdown_table(
        [_rec("a", "knn", "top1_k1", 1.0, checkpoint="latest")]).splitlines()[0]


def test_compare_states_b_minus_a_and_lists_rows_found_in_one_run_only():
    a = [*LINEAR, _rec("shapes/hue", "probe", "hue_err_deg", 20.0, unit="deg")]
    b = [_rec("shapes/hue", "linear", "top1", 72.5, step=20),
         _rec("shapes/hue", "probe", "hue_err_deg", 25.0, step=20, unit="deg"),
         _rec("shapes/hue", "knn", "top1_k1", 50.0, step=20)]
    text = reports.compare_table(a, b, "run_a", "run_b")
    lines = text.splitlines()
    assert lines[0].startswith("delta = B - A, A = run_a (Checkpoint step 40), "
                               "B = run_b (Checkpoint step 20)")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]):
            [c.strip() for c in line.strip("|").split("|")[3:]]
            for line in lines if line.startswith("| shapes")}
    assert rows[("shapes/hue", "linear", "top1")] == ["70.00", "72.50", "+2.50 ↑"]
    assert rows[("shapes/hue", "probe", "hue_err_deg")] == ["20.00°", "25.00°", "+5.00"]
    assert len(rows) == 2
    assert "only in run_a (1 rows, not compared): shapes/size linear top1" in lines
    assert "only in run_b (1 rows, not compared): shapes/hue knn top1_k1" in lines


def test_fewshot_progress_lines_count_and_estimate():
    now = [0.0]
    lines = []
    progress = Progress("fewshot shapes", 1500, lines.append, "episodes", every=10.0,
                        clock=lambda: now[0])
    for _ in range(6):  # 6 chunks of 250 episodes, 4 s each
        now[0] += 4.0
        progress.add(250, "shapes/hue 5-way 1-shot")
    # After the first chunk (4 s for 250: 20 s left for 1250), then at 16 s (10 s after the
    # last line; 1000 done in 16 s: 8 s left), then after the last.
    assert lines == [
        "fewshot shapes: 250/1500 episodes (shapes/hue 5-way 1-shot), 4 s, ETA 20 s",
        "fewshot shapes: 1000/1500 episodes (shapes/hue 5-way 1-shot), 16 s, ETA 8 s",
        "fewshot shapes: 1500/1500 episodes (shapes/hue 5-way 1-shot), 24 s, ETA 0 s"]


def test_fewshot_evaluator_reports_progress_over_all_its_episodes():
    import numpy as np

    from augself_jax.evaluation import common

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    pool = {"features": rng.normal(size=(30, 4)).astype(np.float32), "label": labels}
    lines = []
    ev = FewShotEvaluator(ways=3, shots=(1, 2), queries=2, episodes=6, log=lines.append)
    features = common.Features("toy", ("label",), {"pool": pool})
    ev.run(features)
    assert lines[0].startswith("fewshot toy: 6/12 episodes (") and "1-shot" in lines[0]
    assert lines[-1].startswith("fewshot toy: 12/12 episodes (") and "2-shot" in lines[-1]


def test_evaluate_step_best_names_itself_and_keeps_each_step(tiny_run, shapes_data_dir,
                                                              tmp_path):
    # The tiny run (conftest) checkpoints steps 1 and 2; its monitor ran once, at step 2,
    # so the best checkpoint is step 2's.
    from test_eval_end_to_end import _tiny_config

    from augself_jax.checkpoints import BEST
    from augself_jax.evaluation.run import evaluate

    checkout, workdir, _ = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(os.path.join(checkout, workdir), run_dir)
    config = _tiny_config(shapes_data_dir)
    config.eval.protocols = "knn"
    config.eval.max_examples = 200
    config.eval.batch_size = 64
    lines = []
    records = evaluate(config, str(run_dir), step=BEST, save_features=True, log=lines.append)
    eval_dir = run_dir / "eval"
    assert any(line.startswith("evaluating Checkpoint step 2 (--step best: ") for line in lines)
    assert {r["checkpoint"] for r in records} == {"best"} and {r["step"] for r in records} == {2}
    assert _load(eval_dir / "step_2" / "results.json") == records
    assert reports.markdown_table(records).startswith("Checkpoint step 2 (--step best")
    # The features once for the dataset (not once per label task), every task's labels.
    saved = [os.path.relpath(os.path.join(d, f), eval_dir)
             for d, _, files in os.walk(eval_dir) for f in files if f.endswith(".npz")]
    assert saved == [os.path.join("step_2", "shapes", "features.npz")]
    # Step 1 next: its own folder; step 2's stays; the top-level copy is the latest.
    evaluate(config, str(run_dir), step=1, log=lines.append)
    assert {r["step"] for r in _load(eval_dir / "step_2" / "results.json")} == {2}
    assert {r["step"] for r in _load(eval_dir / "results.json")} == {1}
    assert {r["checkpoint"] for r in _load(eval_dir / "results.json")} == {"step"}

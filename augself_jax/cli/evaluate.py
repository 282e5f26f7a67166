"""Transfer evaluation of a pretraining run (`python evaluate.py`, `augself-evaluate`).

  python evaluate.py --config=configs/simclr_augself.py:shapes --workdir=/tmp/run
      [--step N | --step best] [--save_features] [--compare /tmp/other_run]

Reads the SAME config as pretraining (its `eval` section; override fields with
`--config.eval.protocols=linear,knn`), restores the backbone of WORKDIR's latest checkpoint
(or --step N, or --step best: the checkpoint of the best kNN-monitor accuracy, kept when
the run had knn_every > 0), runs the protocols and writes WORKDIR/eval/results.{json,md}
(and each number to TensorBoard as eval/<dataset>/<protocol>/<metric> at the checkpoint's
step). With --compare DIR2 it only prints the delta table of WORKDIR's and DIR2's existing
results.

A missing workdir, a checkpoint that cannot be read or holds NaN/Inf, a config that does
not fit it: one line on stderr, exit status 2 (augself_jax/app.py), nothing evaluated.
"""

import os

from absl import flags

from augself_jax import app

_STEP = flags.DEFINE_string(
    "step", None, "Checkpoint to evaluate: a step number, or 'best' (the best kNN-monitor "
    "checkpoint); default: the latest.")
_SAVE_FEATURES = flags.DEFINE_bool(
    "save_features", False, "Write WORKDIR/eval/<task>/features.npz (train/val/test x and y).")
_COMPARE = flags.DEFINE_string(
    "compare", None, "Another workdir: print the delta table of the two runs' results.")


def main(config, workdir: str, writer) -> None:
    from augself_jax.checkpoints import parse_step
    from augself_jax.evaluation import reports

    step = parse_step(_STEP.value)  # a typo is one line before anything is read

    if _COMPARE.value:
        a, b = reports.load_results(workdir), reports.load_results(_COMPARE.value)
        print(reports.compare_table(a, b, os.path.basename(os.path.normpath(workdir)),
                                    os.path.basename(os.path.normpath(_COMPARE.value))))
        return
    from augself_jax.evaluation.run import evaluate

    records = evaluate(config, workdir, step=step, save_features=_SAVE_FEATURES.value,
                       writer=writer)
    print(reports.markdown_table(records), flush=True)


def run() -> None:
    """The `augself-evaluate` entry point (also `python evaluate.py`)."""
    app.run(main, resolved_config_name="eval_config.json", workdir_must_exist=True)


if __name__ == "__main__":
    run()

"""Transfer evaluation of a pretraining run.

  python evaluate.py --config=configs/simclr_augself.py:shapes --workdir=/tmp/run
      [--step N] [--save_features] [--compare /tmp/other_run]

Reads the SAME config as pretraining (its `eval` section; override fields with
`--config.eval.protocols=linear,knn`), restores the backbone of WORKDIR's latest checkpoint
(or --step N), runs the protocols and writes WORKDIR/eval/results.{json,md}. With --compare
DIR2 it only prints the delta table of WORKDIR's and DIR2's existing results.

A missing workdir, a checkpoint that cannot be read or holds NaN/Inf, a config that does
not fit it: one line on stderr, exit status 2 (augself_jax/app.py), nothing evaluated.
"""

import os

from absl import flags

from augself_jax import app

_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_SAVE_FEATURES = flags.DEFINE_bool(
    "save_features", False, "Write WORKDIR/eval/<task>/features.npz (train/val/test x and y).")
_COMPARE = flags.DEFINE_string(
    "compare", None, "Another workdir: print the delta table of the two runs' results.")


def main(config, workdir: str) -> None:
    from augself_jax.evaluation import reports

    if _COMPARE.value:
        a, b = reports.load_results(workdir), reports.load_results(_COMPARE.value)
        print(reports.compare_table(a, b, os.path.basename(os.path.normpath(workdir)),
                                    os.path.basename(os.path.normpath(_COMPARE.value))))
        return
    from augself_jax.evaluation.run import evaluate

    records = evaluate(config, workdir, step=_STEP.value, save_features=_SAVE_FEATURES.value)
    print(reports.markdown_table(records), flush=True)


if __name__ == "__main__":
    app.run(main, resolved_config_name="eval_config.json", workdir_must_exist=True)

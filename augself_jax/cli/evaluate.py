"""Transfer evaluation of a pretraining run (`python evaluate.py`, `augself-evaluate`).

  python evaluate.py --workdir=/tmp/run
      [--step N | --step best] [--save_features] [--compare /tmp/other_run]

Reads the config the run was trained with, WORKDIR/config.json (override its `eval` fields
with `--config.eval.protocols=linear,knn`); a given --config may change only the `eval`
section and where data is read: a field that changes what was trained (method, model,
dataset, augmentation, AugSelf, CASSLE) must match the checkpoint's, the rest is the
training's (augself_jax/trained_config.py). It restores the backbone of WORKDIR's latest
checkpoint (or --step N, or --step best: the checkpoint of the best kNN-monitor accuracy,
kept when the run had knn_every > 0), runs the protocols and writes
WORKDIR/eval/step_<N>/results.{json,md}, copied to WORKDIR/eval/results.{json,md} as the
latest (and each number to TensorBoard as eval/<dataset>/<protocol>/<metric> at the
checkpoint's step). With --compare DIR2 it only prints the delta table (B - A, A = WORKDIR)
of WORKDIR's and DIR2's latest results, and the rows found in only one of them.

A missing workdir, a checkpoint that cannot be read or holds NaN/Inf, a config that does
not fit it, a workdir that main.py is training in: one line on stderr, exit status 2
(augself_jax/app.py), nothing evaluated and nothing written.
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


def _evaluation_config(config, workdir: str, step):
    """The config to evaluate with: the workdir's config.json when --config was left out;
    else the given one checked against the checkpoint's record (augself_jax/trained_config.py:
    what was trained must match, the eval section is free, the rest is the training's)."""
    from augself_jax import checkpoints, trained_config

    if app.config_is_the_workdirs():
        return config
    where, meta = checkpoints.step_record(workdir, step)
    contract = meta.get("contract")
    config, overridden = trained_config.for_evaluation(
        config, trained_config.load_if_present(workdir),
        contract if isinstance(contract, dict) else None, str(where.parent))
    if overridden:
        print(f"evaluate: kept the training's {trained_config.shown(overridden)} (from "
              f"{trained_config.CONFIG_FILE}; the evaluation reads only the backbone)",
              flush=True)
    return config


def main(config, workdir: str, writer) -> None:
    from augself_jax.checkpoints.restore import parse_step
    from augself_jax.evaluation import reports

    step = parse_step(_STEP.value)  # a typo is one line before anything is read

    if _COMPARE.value:
        a, b = reports.load_results(workdir), reports.load_results(_COMPARE.value)
        print(reports.compare_table(a, b, os.path.basename(os.path.normpath(workdir)),
                                    os.path.basename(os.path.normpath(_COMPARE.value))))
        return
    from augself_jax.evaluation.run import EvaluationRun, validate_eval_config
    from augself_jax.workdir import write_resolved_config

    validate_eval_config(config)  # the eval section's own mistakes first, as before any read
    config = _evaluation_config(config, workdir, step)
    evaluation = EvaluationRun(config, workdir, step=step, save_features=_SAVE_FEATURES.value,
                               writer=writer)
    evaluation.prepare()  # every check: the protocols, the datasets, the checkpoint
    write_resolved_config(config, workdir, "eval_config.json")  # only once they passed
    records = evaluation.run()
    print(reports.markdown_table(records), flush=True)


def run() -> None:
    """The `augself-evaluate` entry point (also `python evaluate.py`)."""
    app.run(main, workdir_must_exist=True, config_from_workdir=True,
            only_reads=lambda: bool(_COMPARE.value),
            interrupted="nothing was evaluated or written; rerun the command to evaluate")


if __name__ == "__main__":
    run()

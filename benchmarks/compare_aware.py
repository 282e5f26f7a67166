"""The papers' claim in miniature: plain vs +AugSelf vs +CASSLE on the built-in dataset.

Pretrains every arm (SimCLR, BYOL, MoCo v2 each plain / +AugSelf / +CASSLE; supervised
on the shape label plain / +AugSelf) for every seed and colour strength, with equal
steps and equal batches, evaluates each backbone (linear probes on shape, hue, position
and size; continuous probes: hue angle error in degrees, position R^2), and writes one
table of mean and spread over seeds:

    python benchmarks/compare_aware.py --out=/tmp/compare            # the README table
    python benchmarks/compare_aware.py --out=/tmp/compare --steps=5000 --batch_size=256

Finished runs are reused (each run's results.json), so an interrupted sweep resumes.
The schedule length is `--steps`. Measured on 2 CPU cores, one run at the default (300
steps of batch 128, then the linear and probe evaluation) takes about 4.5 minutes, so the
full grid (11 arms x 3 seeds x 2 strengths) takes about 5 hours there; far longer
schedules belong on an accelerator.
"""

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import common  # noqa: E402

ARMS = {  # name: (method, variant)
    "simclr": ("simclr", "plain"),
    "simclr+augself": ("simclr", "augself"),
    "simclr+cassle": ("simclr", "cassle"),
    "byol": ("byol", "plain"),
    "byol+augself": ("byol", "augself"),
    "byol+cassle": ("byol", "cassle"),
    "moco": ("moco", "plain"),
    "moco+augself": ("moco", "augself"),
    "moco+cassle": ("moco", "cassle"),
    "supervised": ("supervised", "plain"),
    "supervised+augself": ("supervised", "augself"),
}

# (column title, results.json dataset, metric)
COLUMNS = (
    ("shape %", "shapes/shape", "top1"),
    ("hue %", "shapes/hue", "top1"),
    ("position %", "shapes/position", "top1"),
    ("size %", "shapes/size", "top1"),
    ("hue err °", "shapes", "hue_err_deg"),
    ("position R² %", "shapes", "position_r2"),
)

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder for every run's workdir and the table.", required=True)
flags.DEFINE_list("arms", list(ARMS), f"Arms to run, from: {', '.join(ARMS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Pretraining seeds.")
flags.DEFINE_list("strengths", ["1", "2"], "Colour strengths s (1: reference default; 2: the "
                  "reference's strong setting, hue +-0.2 and grayscale p = 0.4).")
flags.DEFINE_integer("steps", 300, "Pretraining steps of every run (equal for all arms).")
flags.DEFINE_integer("batch_size", 128, "Global batch of every run (equal for all arms).")
flags.DEFINE_integer("width", None, "Base width of the ResNet-18 backbone (None: the preset's).")
flags.DEFINE_integer("eval_max_examples", 0, "0: every image; else the first N of each split.")
flags.DEFINE_integer("l2_num", 45, "Values in the linear probe's L2 sweep (the protocol: 45).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (None: the TFDS default).")


def arm_config(arm: str, seed: int, strength: float):
    """The shapes-preset config of one run; arms differ only in method and variant."""
    method, variant = ARMS[arm]
    c = common.experiment("shapes", method, augself=variant == "augself",
                          cassle=variant == "cassle")
    c.seed = seed
    c.aug.color_strength = strength
    c.total_steps = FLAGS.steps
    c.batch_size = FLAGS.batch_size
    c.model.width = FLAGS.width or c.model.width
    c.checkpoint_every = FLAGS.steps
    c.knn_every = 0
    c.data.data_dir = FLAGS.data_dir
    c.eval.protocols = "linear,probe"
    c.eval.datasets = "shapes"
    c.eval.max_examples = FLAGS.eval_max_examples
    c.eval.linear.l2_num = FLAGS.l2_num
    return c


def run_one(arm: str, seed: int, strength: float) -> list[dict]:
    from augself_jax.evaluation import run as eval_run
    from augself_jax.train import loop

    workdir = os.path.join(FLAGS.out, f"s{strength:g}", arm, f"seed{seed}")
    results = os.path.join(workdir, "eval", "results.json")
    if os.path.exists(results):
        with open(results) as f:
            return json.load(f)
    config = arm_config(arm, seed, strength)
    t0 = time.time()
    loop.train_and_evaluate(config, workdir)
    records = eval_run.evaluate(config, workdir, log=lambda *_: None)
    print(f"{arm:>20} s={strength:g} seed={seed}: {time.time() - t0:.0f}s", flush=True)
    return records


def value(records: list[dict], dataset: str, metric: str) -> float:
    for r in records:
        if r["dataset"] == dataset and r["metric"] == metric:
            return float(r["value"])
    raise KeyError(f"{dataset} {metric} not in results")


def table(runs: dict[tuple[str, float], list[list[dict]]]) -> str:
    import numpy as np

    head = "| colour s | arm | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for (arm, strength), per_seed in runs.items():
        cells = []
        for _, dataset, metric in COLUMNS:
            v = np.array([value(r, dataset, metric) for r in per_seed])
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        lines.append(f"| {strength:g} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    from augself_jax import app as app_lib

    app_lib.hide_accelerators_from_tensorflow()
    app_lib.quiet_library_logs()
    unknown = sorted(set(FLAGS.arms) - set(ARMS))
    if unknown:
        raise app.UsageError(f"--arms: unknown {', '.join(unknown)}; allowed: {', '.join(ARMS)}")
    os.makedirs(FLAGS.out, exist_ok=True)
    t0 = time.time()
    runs = {}
    for strength in (float(s) for s in FLAGS.strengths):
        for arm in FLAGS.arms:
            runs[(arm, strength)] = [run_one(arm, int(seed), strength) for seed in FLAGS.seeds]
    width = FLAGS.width or "preset"
    text = (f"{FLAGS.steps} steps of batch {FLAGS.batch_size}, ResNet-18 width {width}, "
            f"seeds {','.join(FLAGS.seeds)}; mean ± std over seeds; linear probes top-1 %, "
            f"hue error in degrees (lower is better), position R² in %.\n\n" + table(runs))
    with open(os.path.join(FLAGS.out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{len(runs) * len(FLAGS.seeds)} runs in {(time.time() - t0) / 60:.1f} min; "
          f"table in {os.path.join(FLAGS.out, 'comparison.md')}")


if __name__ == "__main__":
    app.run(main)

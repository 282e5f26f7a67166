"""The papers' claim in miniature: plain vs +AugSelf vs +CASSLE on the built-in dataset.

Pretrains every arm (SimCLR, BYOL, MoCo v2 each plain / +AugSelf / +CASSLE; supervised
on the shape label plain / +AugSelf) for every seed and colour strength, with equal
steps and equal batches, evaluates each backbone (linear probes on shape, hue, position
and size; continuous probes: hue angle error in degrees, position R^2), and writes one
table of mean and spread over seeds. An `untrained` row (the backbone as initialised) is
the reference that shows what each objective kept or threw away:

    python benchmarks/compare_aware.py --out=runs/compare            # the README table
    python benchmarks/compare_aware.py --out=runs/compare_long --steps=5000 --batch_size=256 \
        --workers=1 --eval_max_examples=0 --l2_num=45                  # on an accelerator

Finished runs are reused (each run's results.json), so an interrupted sweep resumes.
The defaults are sized for 90 minutes on a 2-core CPU: 80 steps of batch 128 per run,
two worker processes, a 9-value L2 sweep on 5,000 images per split, and XLA's on-disk
compilation cache so that each arm compiles once. The schedule length is `--steps`.
"""

import functools
import json
import os
import subprocess
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
    # The reference point: the same backbone as initialised, never trained (the colour
    # strength does not touch it). What an objective keeps or discards shows against it.
    "untrained": ("simclr", "untrained"),
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
flags.DEFINE_integer("steps", 80, "Pretraining steps of every run (equal for all arms).")
flags.DEFINE_integer("batch_size", 128, "Global batch of every run (equal for all arms).")
flags.DEFINE_integer("width", None, "Base width of the ResNet-18 backbone (None: the preset's).")
flags.DEFINE_enum("stem", None, ["cifar", "imagenet"], "ResNet stem (None: the preset's, cifar). "
                  "The imagenet stem (stride-2 conv and max-pool) is about twice as fast at 32 px, "
                  "but in a 150-step trial kept far less hue (27% against 75%).")
flags.DEFINE_integer("workers", 2, "Runs trained at once, each in its own process pinned to "
                     "one core; their start-up and evaluation overlap the other's training.")
flags.DEFINE_integer("worker", None, "Internal: this process trains every `workers`-th run.")
flags.DEFINE_integer("eval_max_examples", 5000, "0: every image; else the first N of each split.")
flags.DEFINE_integer("l2_num", 9, "Values in the linear probe's L2 sweep (the protocol: 45; "
                     "9 keeps the sweep within the CPU budget).")
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
    c.model.stem = FLAGS.stem or c.model.stem
    c.checkpoint_every = FLAGS.steps
    c.knn_every = 0
    c.data.data_dir = FLAGS.data_dir
    c.eval.protocols = "linear,probe"
    c.eval.datasets = "shapes"
    c.eval.max_examples = FLAGS.eval_max_examples
    c.eval.linear.l2_num = FLAGS.l2_num
    return c


def save_untrained(config, workdir: str) -> None:
    """Writes the initial state as the step-0 checkpoint, for the evaluation to read."""
    from augself_jax import checkpoints
    from augself_jax.train import loop
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib

    setup = state_lib.make_setup(config, mesh_lib.make_mesh(config))
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=1, async_save=False)
    ckpt.save(0, state_lib.init_state(config, setup),
              loop.checkpoint_meta(config, 0, setup.num_steps))
    ckpt.close()


def run_one(arm: str, seed: int, strength: float) -> list[dict]:
    from augself_jax import checkpoints
    from augself_jax.evaluation import run as eval_run
    from augself_jax.train import loop

    # `untrained` does not depend on the strength: one folder per seed serves them all.
    strength_dir = () if arm == "untrained" else (f"s{strength:g}",)
    workdir = os.path.join(FLAGS.out, *strength_dir, arm, f"seed{seed}")
    results = os.path.join(workdir, "eval", "results.json")
    if os.path.exists(results):
        with open(results) as f:
            return json.load(f)
    config = arm_config(arm, seed, strength)
    t0 = time.time()
    if arm == "untrained":
        if checkpoints.latest_step(workdir) is None:  # else an interrupted evaluation
            save_untrained(config, workdir)
    else:
        loop.train_and_evaluate(config, workdir)
    t1 = time.time()
    records = eval_run.evaluate(config, workdir, log=lambda *_: None)
    print(f"{arm:>20} s={strength:g} seed={seed}: train {t1 - t0:.0f}s, evaluation "
          f"{time.time() - t1:.0f}s", flush=True)
    return records


def run_grid(arms: list[str], strengths: list[float],
             seeds: list[int]) -> list[tuple[str, float, int]]:
    """Every (arm, strength, seed) to run, in table order; `untrained` once per seed, under
    the first strength, since the colour strength plays no part in it."""
    return [(arm, s, seed) for s in strengths for arm in arms for seed in seeds
            if arm != "untrained" or s == strengths[0]]


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
            spread = v.std(ddof=1) if len(v) > 1 else 0.0  # the sample standard deviation
            cells.append(f"{v.mean():.1f} ± {spread:.1f}")
        colour = "any" if arm == "untrained" else f"{strength:g}"
        lines.append(f"| {colour} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spawn_workers() -> None:
    """Trains the grid in `--workers` child processes, each pinned to one core."""
    procs = []
    for i in range(FLAGS.workers):
        pin = None
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            pin = functools.partial(os.sched_setaffinity, 0, {cores[i % len(cores)]})
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:],
                                       f"--worker={i}"], preexec_fn=pin))
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise SystemExit(f"compare_aware: worker(s) {failed} failed; finished runs are kept, "
                         "run the same command again to resume")


def main(argv) -> None:
    del argv
    from augself_jax import app as app_lib

    app_lib.hide_accelerators_from_tensorflow()
    app_lib.quiet_library_logs()
    unknown = sorted(set(FLAGS.arms) - set(ARMS))
    if unknown:
        raise app.UsageError(f"--arms: unknown {', '.join(unknown)}; allowed: {', '.join(ARMS)}")
    if FLAGS.workers < 1:
        raise app.UsageError(f"--workers: {FLAGS.workers}; allowed: 1 or more")
    os.makedirs(FLAGS.out, exist_ok=True)
    import jax

    # Runs of one arm differ only in seed and colour strength, which are data, not program:
    # with XLA's on-disk cache every arm's train step and every probe compile once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(FLAGS.out, "xla_cache"))
    grid = run_grid(FLAGS.arms, [float(s) for s in FLAGS.strengths],
                    [int(seed) for seed in FLAGS.seeds])
    if FLAGS.worker is not None:  # a child: train its share, the parent writes the table
        for arm, strength, seed in grid[FLAGS.worker::FLAGS.workers]:
            run_one(arm, seed, strength)
        return
    t0 = time.time()
    if FLAGS.workers > 1:
        spawn_workers()
    runs = {}
    for arm, strength, seed in grid:
        runs.setdefault((arm, strength), []).append(run_one(arm, seed, strength))
    model = arm_config(FLAGS.arms[0], 0, 1.0).model
    text = (f"{FLAGS.steps} steps of batch {FLAGS.batch_size}, ResNet-18 width {model.width} "
            f"({model.stem} stem), "
            f"seeds {','.join(FLAGS.seeds)}; mean ± std over seeds; linear probes top-1 %, "
            f"hue error in degrees (lower is better), position R² in %.\n\n" + table(runs))
    with open(os.path.join(FLAGS.out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{len(runs) * len(FLAGS.seeds)} runs in {(time.time() - t0) / 60:.1f} min; "
          f"table in {os.path.join(FLAGS.out, 'comparison.md')}")


if __name__ == "__main__":
    app.run(main)

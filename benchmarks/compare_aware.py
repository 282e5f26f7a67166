"""The papers' claim in miniature: plain vs +AugSelf vs +CASSLE on the built-in dataset.

Pretrains every arm (by default SimCLR plain / +AugSelf / +CASSLE over 5 seeds at
`hue_circle`, the quick start's setting; supervised learning on the shape label plain /
+AugSelf by name; `--arms=all` adds them, BYOL and MoCo v2 each plain / +AugSelf /
+CASSLE; VARIANT_ARMS, named one by one, change one setting of an aware arm) for every
seed and colour setting, with the `shapes` preset's recipe, equal steps and equal
batches (`hue_circle` at the default 150 steps is the quick start's `shapes_hue`),
evaluates each backbone (linear probes on shape, hue, position and size; continuous
probes: hue angle error in degrees, position R^2; localization IoU, retrieval p@10 by hue
and by position, I(C; Z)), and writes two tables: mean and sample spread over seeds, and
for each aware arm its difference from its plain counterpart, paired by seed, with a 95%
t-interval. An `untrained` row (the backbone as initialised) is the reference that shows
what each objective kept or threw away:

    python benchmarks/compare_aware.py --out=runs/compare            # the README table
    python benchmarks/compare_aware.py --out=runs/compare_gpu --arms=all --steps=3000 \
        --batch_size=256 --width=64 --image_size=64 --workers=1 --eval_max_examples=0 \
        --l2_num=45                                                    # on an accelerator

Finished runs are reused (each run's results.json), so an interrupted sweep resumes.
The defaults: the preset's recipe over 150 steps of batch 128 per run (as the quick start),
two worker processes, a 9-value L2 sweep on 5,000 images per split, and XLA's on-disk
compilation cache so that each arm compiles once.
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

ARMS = {  # name: (method, variant[, config overrides]); an arm's plain counterpart is its
    # method's plain arm
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
    # setting does not touch it). What an objective keeps or discards shows against it.
    "untrained": ("simclr", "untrained"),
    # AugSelf's colour head regressing (sin, cos) of the hue difference instead of the line.
    "simclr+augself_circular": ("simclr", "augself", {"augself.color_target": "circular"}),
    # CASSLE with fewer descriptor keys or another conditioning mode (the default keys are
    # blur, color, color_diff, crop, gray in proj-cat): which key carries colour back in.
    "simclr+cassle_no_color_diff": ("simclr", "cassle",
                                    {"cassle.descriptor_keys": "blur,color,crop,gray"}),
    "simclr+cassle_no_colour": ("simclr", "cassle", {"cassle.descriptor_keys": "blur,crop,gray"}),
    "simclr+cassle_crop": ("simclr", "cassle", {"cassle.descriptor_keys": "crop"}),
    "simclr+cassle_raw": ("simclr", "cassle", {"cassle.mode": "raw"}),
}
VARIANT_ARMS = ("simclr+augself_circular", "simclr+cassle_no_color_diff",
                "simclr+cassle_no_colour", "simclr+cassle_crop", "simclr+cassle_raw")

DEFAULT_ARMS = ("simclr", "simclr+augself", "simclr+cassle", "untrained")

# Named colour settings: overrides of `config.aug`. `reference` is the reference's default
# jitter (hue +-0.1 turn); at it colour stays a cue that two views share, so plain SimCLR
# keeps hue. `hue_circle` draws the hue shift over the full circle (+-0.5 turn), which
# makes colour useless for telling images apart: plain training then throws hue away,
# and what AugSelf and CASSLE keep of it shows. `strong` is the reference's s = 2.
# `hue72` keeps the reference's jitter and moves the data instead: the built-in dataset's
# `shapes_hue72` version puts its 8 hue classes within the 72 degrees that jitter spans.
COLOURS = {
    "reference": {"color_strength": 1.0},
    "hue_circle": {"hue": 0.5},
    "strong": {"color_strength": 2.0},
    "hue72": {"color_strength": 1.0},
}
COLOUR_DATASETS = {"hue72": "shapes_hue72"}  # a colour setting's own dataset; else `shapes`

# (column title, results.json dataset, metric)
COLUMNS = (
    ("shape %", "shapes/shape", "top1"),
    ("hue %", "shapes/hue", "top1"),
    ("position %", "shapes/position", "top1"),
    ("size %", "shapes/size", "top1"),
    ("hue err °", "shapes", "hue_err_deg"),
    ("position R² %", "shapes", "position_r2"),
    # The papers' analyses (docs/EVALUATION.md): object box from the features, retrieval of
    # the same hue / position, and I(C; Z) between the colour histogram and the features. A
    # run evaluated before these protocols existed shows "–" in their columns.
    ("localization IoU %", "shapes", "mean_iou"),
    ("hue p@10 %", "shapes/hue", "p@10"),
    ("position p@10 %", "shapes/position", "p@10"),
    ("I(C;Z) nats", "shapes", "mi_nats"),
)
EVAL_PROTOCOLS = "linear,probe,localization,retrieval,mutual_info"

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder for every run's workdir and the table.", required=True)
flags.DEFINE_list("arms", list(DEFAULT_ARMS),
                  f"Arms to run, from: {', '.join(ARMS)}; or 'all'.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Pretraining seeds.")
flags.DEFINE_list("colours", ["hue_circle"],
                  f"Colour settings, from: {', '.join(COLOURS)}.")
flags.DEFINE_integer("steps", 150, "Pretraining steps of every run (the preset's recipe over "
                     "a schedule of this length; 150 is the quick start's `shapes_hue`).")
flags.DEFINE_integer("batch_size", None, "Global batch of every run (None: the preset's).")
flags.DEFINE_integer("width", None, "Base width of the ResNet-18 backbone (None: the preset's).")
flags.DEFINE_enum("image_size", None, ["32", "64"], "Built-in dataset at 32 or 64 px "
                  "(None: the preset's 32).")
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


def arm_config(arm: str, seed: int, colour: str):
    """The shapes-preset config of one run: the preset's recipe for every arm; arms differ
    only in method and variant."""
    method, variant, *overrides = ARMS[arm]
    c = common.experiment("shapes", method, augself=variant == "augself",
                          cassle=variant == "cassle")
    for field, setting in (overrides[0] if overrides else {}).items():
        section, name = field.split(".")
        c[section][name] = setting
    c.seed = seed
    c.aug.update(COLOURS[colour])
    c.data.dataset = COLOUR_DATASETS.get(colour, c.data.dataset)
    c.total_steps = FLAGS.steps
    c.batch_size = FLAGS.batch_size or c.batch_size
    c.model.width = FLAGS.width or c.model.width
    c.model.stem = FLAGS.stem or c.model.stem
    if FLAGS.image_size == "64":
        c.data.dataset, c.data.image_size = "shapes64", 64
    c.checkpoint_every = c.total_steps
    c.knn_every = 0
    c.data.data_dir = FLAGS.data_dir
    c.eval.protocols = EVAL_PROTOCOLS
    c.eval.datasets = c.data.dataset
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


def run_one(arm: str, seed: int, colour: str) -> list[dict]:
    from augself_jax import checkpoints
    from augself_jax.evaluation import run as eval_run
    from augself_jax.train import loop

    # `untrained` does not depend on the colour, only on the dataset: one folder per seed
    # serves every colour setting of the built-in dataset.
    colour_dir = () if arm == "untrained" and colour not in COLOUR_DATASETS else (colour,)
    workdir = os.path.join(FLAGS.out, *colour_dir, arm, f"seed{seed}")
    results = os.path.join(workdir, "eval", "results.json")
    if os.path.exists(results):
        with open(results) as f:
            return json.load(f)
    config = arm_config(arm, seed, colour)
    t0 = time.time()
    if arm == "untrained":
        if checkpoints.latest_step(workdir) is None:  # else an interrupted evaluation
            save_untrained(config, workdir)
    elif loop.train(config, workdir).stopped_by:
        # SIGTERM or Ctrl-C saved a checkpoint mid-schedule: evaluating it would store a
        # half-trained result that the next sweep reuses. Stop; the rerun resumes it.
        raise SystemExit(f"compare_aware: {arm} {colour} seed {seed} stopped before its last "
                         "step; run the same command again to resume")
    t1 = time.time()
    records = eval_run.evaluate(config, workdir, log=lambda *_: None)
    print(f"{arm:>20} {colour} seed={seed}: train {t1 - t0:.0f}s, evaluation "
          f"{time.time() - t1:.0f}s", flush=True)
    return records


def run_grid(arms: list[str], colours: list[str],
             seeds: list[int]) -> list[tuple[str, str, int]]:
    """Every (arm, colour, seed) to run, in table order; `untrained` once per seed and
    dataset (under the first colour setting that reads it), since colour plays no part in
    it."""
    first = {}
    for c in colours:
        first.setdefault(COLOUR_DATASETS.get(c, "shapes"), c)
    return [(arm, c, seed) for c in colours for arm in arms for seed in seeds
            if arm != "untrained" or c in first.values()]


def value(records: list[dict], dataset: str, metric: str) -> float:
    """The metric's value, or NaN where the run's evaluation did not measure it; `shapes`
    stands for whichever version of the built-in dataset the run read."""
    for r in records:
        head, sep, task = r["dataset"].partition("/")
        name = "shapes" + sep + task if head in COLOUR_DATASETS.values() else r["dataset"]
        if name == dataset and r["metric"] == metric:
            return float(r["value"])
    return float("nan")


def table(runs: dict[tuple[str, str], list[list[dict]]]) -> str:
    """Mean ± sample standard deviation over seeds, one row per (arm, colour)."""
    import numpy as np

    head = "| colour | arm | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for (arm, colour), per_seed in runs.items():
        cells = []
        for _, dataset, metric in COLUMNS:
            v = np.array([value(r, dataset, metric) for r in per_seed])
            if np.isnan(v).any():
                cells.append("–")
                continue
            spread = v.std(ddof=1) if len(v) > 1 else 0.0  # the sample standard deviation
            cells.append(f"{v.mean():.{digits(metric)}f} ± {spread:.{digits(metric)}f}")
        shared = arm == "untrained" and colour not in COLOUR_DATASETS
        lines.append(f"| {'any' if shared else colour} | {arm} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_interval(diffs) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% Student-t interval (mean, low, high)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def digits(metric: str) -> int:
    """Decimals shown: nats need two, percentages and degrees one."""
    return 2 if metric == "mi_nats" else 1


def differences_table(runs: dict[tuple[str, str], list[list[dict]]]) -> str:
    """Each aware arm minus its plain counterpart, paired by seed (every arm's runs come in
    the same seed order): mean [95% interval]."""
    import numpy as np

    head = "| colour | difference | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for (arm, colour), per_seed in runs.items():
        method, variant = ARMS[arm][:2]
        plain = next((a for a, (m, v, *_) in ARMS.items() if m == method and v == "plain"),
                     None)
        if variant not in ("augself", "cassle") or (plain, colour) not in runs:
            continue
        cells = []
        for _, dataset, metric in COLUMNS:
            diffs = [value(a, dataset, metric) - value(b, dataset, metric)
                     for a, b in zip(per_seed, runs[(plain, colour)], strict=True)]
            if np.isnan(diffs).any():
                cells.append("–")
                continue
            mean, low, high = paired_interval(diffs)
            d = digits(metric)
            cells.append(f"{mean:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}]")
        lines.append(f"| {colour} | {arm} − {plain} | " + " | ".join(cells) + " |")
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
    arms = ([a for a in ARMS if a not in VARIANT_ARMS] if FLAGS.arms == ["all"]
            else FLAGS.arms)
    for flag, given, allowed in (("arms", arms, ARMS), ("colours", FLAGS.colours, COLOURS)):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise app.UsageError(f"--{flag}: unknown {', '.join(unknown)}; "
                                 f"allowed: {', '.join(allowed)}")
    if FLAGS.workers < 1:
        raise app.UsageError(f"--workers: {FLAGS.workers}; allowed: 1 or more")
    FLAGS.out = app_lib.absolute_workdir(FLAGS.out)  # Orbax needs absolute paths
    os.makedirs(FLAGS.out, exist_ok=True)
    import jax

    # Runs of one arm differ only in seed and colour, which are data, not program: with
    # XLA's on-disk cache every arm's train step and every probe compile once.
    jax.config.update("jax_compilation_cache_dir", os.path.join(FLAGS.out, "xla_cache"))
    grid = run_grid(arms, FLAGS.colours, [int(seed) for seed in FLAGS.seeds])
    if FLAGS.worker is not None:  # a child: train its share, the parent writes the tables
        for arm, colour, seed in grid[FLAGS.worker::FLAGS.workers]:
            run_one(arm, seed, colour)
        return
    t0 = time.time()
    if FLAGS.workers > 1:
        spawn_workers()
    runs = {}
    for arm, colour, seed in grid:
        runs.setdefault((arm, colour), []).append(run_one(arm, seed, colour))
    c = arm_config(arms[0], 0, FLAGS.colours[0])
    text = (f"{c.total_steps} steps of batch {c.batch_size}, {c.data.image_size} px, "
            f"{c.model.backbone} width {c.model.width} ({c.model.stem} stem), "
            f"{c.optimizer.name} base_lr {c.optimizer.base_lr:g}, warm-up "
            f"{c.optimizer.warmup_epochs:g} epochs; seeds {','.join(FLAGS.seeds)}; linear "
            f"probes top-1 %, hue error in degrees (lower is better), position R² in %.\n\n"
            f"Mean ± sample standard deviation over seeds:\n\n{table(runs)}\n\n"
            f"Aware arm minus its plain counterpart, paired by seed, mean [95% t-interval]:"
            f"\n\n{differences_table(runs)}")
    with open(os.path.join(FLAGS.out, "comparison.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{len(grid)} runs in {(time.time() - t0) / 60:.1f} min; "
          f"tables in {os.path.join(FLAGS.out, 'comparison.md')}")


if __name__ == "__main__":
    app.run(main)

"""Step-time overhead of AugSelf and CASSLE over each base method, beside the FLOP ratios.

Times the real jitted train step (photometric ops, forward, backward, the config's
optimizer update, momentum targets; train/step.py) of every registered method plain,
+ AugSelf (crop + colour heads) and + CASSLE (proj-cat), on one synthetic uint8 batch
reused every step (so the input pipeline is excluded), and prints the wall-clock ratios
beside XLA's FLOP ratios (benchmarks/bench_cost.py), which need no quiet machine. The
default run is short (tiny ResNet-18 on 32 px images); for the papers' setting use e.g.
`--backbone=resnet18 --stem=imagenet --width=64 --image_size=96 --batch=256 --nosmall_heads`.

  python benchmarks/bench_overhead.py [--methods=simclr,byol] [--steps=10]
"""

import sys
import time
from pathlib import Path

import jax
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cost import step_cost  # noqa: E402
from step_inputs import VARIANTS, make_config, method_names, synthetic_batch  # noqa: E402

from augself_jax.models import registry as backbones  # noqa: E402


def time_step(config, host_batch: dict, steps: int, repeats: int) -> float:
    """Best-of-`repeats` mean seconds per step over `steps` steps."""
    from augself_jax.data.global_batch import make_global_batch
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib
    from augself_jax.train.step import make_train_step

    mesh = mesh_lib.make_mesh(config, jax.devices()[:1])
    setup = state_lib.make_setup(config, mesh, num_steps=1000)
    train_step = make_train_step(config, setup)
    state = state_lib.init_state(config, setup)
    batch = make_global_batch(host_batch, mesh)
    state, metrics = train_step(state, batch)  # compile + warm-up
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(repeats):  # best of a few timed runs: robust to a shared machine
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


flags.DEFINE_list("methods", [], "Methods to time (default: every registered method).")
flags.DEFINE_enum("backbone", "resnet18", list(backbones.names()), "Backbone of every method.")
flags.DEFINE_integer("patch_size", 16, "Patch side of a ViT backbone (ViTs only).")
flags.DEFINE_integer("vit_depth", 0, "Blocks of a ViT backbone (0 keeps its 12).")
flags.DEFINE_enum("stem", "cifar", ["imagenet", "cifar"], "ResNet stem.")
flags.DEFINE_integer("width", 16, "Base width of the ResNet.")
flags.DEFINE_integer("image_size", 32, "Side of the synthetic images (px).")
flags.DEFINE_integer("batch", 32, "Global batch.")
flags.DEFINE_string("dtype", "float32", "model.dtype (the compute dtype).")
flags.DEFINE_integer("steps", 5, "Steps per timed run.")
flags.DEFINE_integer("repeats", 3, "Timed runs; the best is kept.")
flags.DEFINE_bool("small_heads", True,
                  "512/128 projector widths instead of each method's reference widths.")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    methods = tuple(args.methods) or method_names()
    host_batch = synthetic_batch(args.batch, args.image_size)
    print(f"device={jax.devices()[0].device_kind} backbone={args.backbone}/{args.stem} "
          f"width={args.width} image={args.image_size} batch={args.batch} dtype={args.dtype}")
    print("| method | plain ms | +AugSelf ms | +CASSLE ms | AugSelf x (time) | "
          "CASSLE x (time) | AugSelf x (FLOPs) | CASSLE x (FLOPs) |")
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        configs = {v: make_config(method, v, backbone=args.backbone, stem=args.stem,
                                  width=args.width, image_size=args.image_size,
                                  batch=args.batch, dtype=args.dtype,
                                  small_heads=args.small_heads, patch_size=args.patch_size,
                                  vit_depth=args.vit_depth) for v in VARIANTS}
        ms = {v: 1e3 * time_step(c, host_batch, args.steps, args.repeats)
              for v, c in configs.items()}
        flops = {v: step_cost(c).flops for v, c in configs.items()}
        print(f"| {method} | {ms['plain']:.2f} | {ms['augself']:.2f} | {ms['cassle']:.2f} | "
              f"{ms['augself'] / ms['plain']:.3f} | {ms['cassle'] / ms['plain']:.3f} | "
              f"{flops['augself'] / flops['plain']:.4f} | "
              f"{flops['cassle'] / flops['plain']:.4f} |", flush=True)


if __name__ == "__main__":
    app.run(main)

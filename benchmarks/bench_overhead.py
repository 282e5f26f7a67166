"""Step-time overhead of AugSelf and CASSLE over each base method.

Times one jitted train step (forward, backward, plain optax SGD update, momentum update) of
every base method plain, + AugSelf (crop + color heads) and + CASSLE (proj-cat), on the same
synthetic batch and backbone, and prints the ratios. The default run is short (tiny ResNet-18 on
32 px images); for the papers' setting use e.g.
`--backbone=resnet18 --width=64 --image_size=96 --batch=256`.

  python benchmarks/bench_overhead.py [--methods=simclr,byol] [--steps=10]
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augself_jax.methods import build_model, compute_loss, update_targets  # noqa: E402
from configs.common import base_config  # noqa: E402

VARIANTS = ("plain", "augself", "cassle")


def make_config(args, method: str, variant: str):
    c = base_config("stl10")
    c.batch_size = args.batch
    c.data.image_size = args.image_size
    c.model.update(backbone=args.backbone, stem=args.stem, width=args.width, dtype=args.dtype)
    c.method.name = method
    c.method.num_classes = 10
    c.method.queue_size = max(args.batch, args.queue)
    if args.small_heads:
        c.method.update(proj_hidden=512, proj_out=128, pred_hidden=512)
    if variant == "augself":
        c.augself.crop = c.augself.color = 1.0
    if variant == "cassle":
        c.cassle.enabled = True
    return c


def synthetic_batch(b: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def record():
        return {"crop": rng.uniform(0, 0.5, (b, 4)).astype(np.float32),
                "flip": rng.integers(0, 2, b).astype(np.float32),
                "color": rng.uniform(0.6, 1.4, (b, 4)).astype(np.float32),
                "color_applied": np.ones(b, np.float32),
                "color_order": np.tile(np.arange(4, dtype=np.int32), (b, 1)),
                "color_mean_shift": rng.normal(0, 0.05, (b, 3)).astype(np.float32),
                "gray": rng.integers(0, 2, b).astype(np.float32),
                "blur": rng.uniform(0.1, 2.0, b).astype(np.float32),
                "solarize": np.ones(b, np.float32),
                "rotation": np.zeros(b, np.int32)}

    batch = {"view1": rng.normal(size=(b, size, size, 3)).astype(np.float32),
             "view2": rng.normal(size=(b, size, size, 3)).astype(np.float32),
             "params1": record(), "params2": record(),
             "label": rng.integers(0, 10, b).astype(np.int32)}
    return jax.device_put(batch)


def time_step(config, batch, steps: int, repeats: int) -> float:
    def make():
        model = build_model(config, nnx.Rngs(0))
        model.train()
        return model

    # One compiled init program: eager init compiles every initializer op on its own.
    graphdef, _, _ = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
    params, rest = jax.jit(lambda: nnx.split(make(), nnx.Param, ...)[1:])()
    tx = optax.sgd(0.01, momentum=0.9)

    def step(params, rest, opt_state, batch):
        def loss_fn(params, rest):
            m = nnx.merge(graphdef, params, rest, copy=True)
            loss, _ = compute_loss(m, batch, step=0, total_steps=1000)
            return loss, nnx.state(m, nnx.Not(nnx.Param))

        grads, rest = jax.grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        m = nnx.merge(graphdef, params, rest)
        update_targets(m, step=0, total_steps=1000)
        _, params, rest = nnx.split(m, nnx.Param, ...)
        return params, rest, opt_state

    step = jax.jit(step)
    state = (params, rest, tx.init(params))
    state = step(*state, batch)  # compile + warm-up
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(repeats):  # best of a few timed runs: robust to a shared machine
        t0 = time.perf_counter()
        for _ in range(steps):
            state = step(*state, batch)
        jax.block_until_ready(state)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="simclr,moco,byol,simsiam,barlow,supervised")
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--stem", default="cifar", choices=("imagenet", "cifar"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small_heads", action=argparse.BooleanOptionalAction, default=True,
                   help="512/128 projector widths instead of each method's reference widths")
    args = p.parse_args()
    batch = synthetic_batch(args.batch, args.image_size)
    print(f"device={jax.devices()[0].platform} backbone={args.backbone}/{args.stem} "
          f"width={args.width} image={args.image_size} batch={args.batch} dtype={args.dtype}")
    print(f"{'method':<11}{'plain ms':>10}{'augself ms':>12}{'cassle ms':>11}"
          f"{'augself x':>11}{'cassle x':>10}")
    for method in args.methods.split(","):
        ms = {v: 1e3 * time_step(make_config(args, method, v), batch, args.steps, args.repeats)
              for v in VARIANTS}
        print(f"{method:<11}{ms['plain']:>10.2f}{ms['augself']:>12.2f}{ms['cassle']:>11.2f}"
              f"{ms['augself'] / ms['plain']:>11.3f}{ms['cassle'] / ms['plain']:>10.3f}")


if __name__ == "__main__":
    main()

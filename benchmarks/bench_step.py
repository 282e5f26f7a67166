"""Train-step throughput: images per second for a config, after compilation.

  python benchmarks/bench_step.py --config=configs/simclr_augself.py:shapes --steps=20
  python benchmarks/bench_step.py --config=configs/simclr_augself.py:imagenet1k \
      --config.batch_size=256 --host=synthetic        # no dataset or TensorFlow needed

Numbers per run: the step alone (one global batch reused, so input and transfer are
excluded) and its photometric ops alone (train/step.py prepare_views, jitted on the same
batch); the whole loop with each batch transferred when the step asks for it
(`data.device_prefetch=0`); and with the config's device prefetch (train/prefetch.py, the
loop's own code), which overlaps the transfer with the step. `--host=pipeline` feeds the
real tf.data pipeline; `--host=synthetic` cycles through four distinct host batches made
in memory, which isolates the host-to-device copy. An image is one example of the global
batch (two views each). Prints a Markdown table.
"""

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr_augself.py:shapes",
                                          "Experiment config.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 2 warm-up steps).")
_HOST = flags.DEFINE_enum("host", "pipeline", ["pipeline", "synthetic"],
                          "pipeline: the tf.data input; synthetic: host batches in memory.")


def _timed_steps(train_step, state, batches, steps: int):
    for _ in range(2):  # compile + one more to settle
        state, metrics = train_step(state, next(batches))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, next(batches))
    jax.block_until_ready(metrics)
    return state, time.perf_counter() - start


def _timed_calls(fn, arg, calls: int) -> float:
    jax.block_until_ready(fn(arg))  # compile
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(arg)
    jax.block_until_ready(out)
    return time.perf_counter() - start


def _host_batches(config):
    """A fresh iterator of host batches (this process's rows) of the step's layout."""
    if _HOST.value == "synthetic":
        from step_inputs import synthetic_batch

        rows = config.batch_size // jax.process_count()
        ring = [synthetic_batch(rows, config.data.image_size, seed=i) for i in range(4)]
        return itertools.cycle(ring)
    import tensorflow as tf

    from augself_jax.data.pipeline import make_pretrain_iterator

    tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerator is JAX's
    return make_pretrain_iterator(config)


def main(argv: list[str]) -> None:
    del argv
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib
    from augself_jax.train.prefetch import device_batches
    from augself_jax.train.step import STEP_KEYS, make_train_step, prepare_views

    config, steps = _CONFIG.value, _STEPS.value
    mesh = mesh_lib.make_mesh(config)
    setup = state_lib.make_setup(config, mesh, num_steps=10**6)
    state = state_lib.init_state(config, setup)
    compile_start = time.perf_counter()
    train_step = make_train_step(config, setup)
    fixed = next(device_batches(_host_batches(config), mesh, STEP_KEYS, 0))
    state, _ = train_step(state, fixed)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - compile_start
    state, step_only = _timed_steps(train_step, state, itertools.repeat(fixed), steps)
    # The step's photometric ops + normalisation of both views, jitted alone.
    photometric = _timed_calls(jax.jit(lambda b: prepare_views(config, b)), fixed, steps)
    rates = {}
    for depth in sorted({0, int(config.data.device_prefetch)}):
        batches = device_batches(_host_batches(config), mesh, STEP_KEYS, depth)
        state, seconds = _timed_steps(train_step, state, batches, steps)
        rates[depth] = config.batch_size * steps / seconds

    device = f"{jax.device_count()}x {jax.devices()[0].device_kind}"
    m = config.model
    name = f"{config.method.name} {config.data.dataset} {m.backbone}/w{m.width} {m.dtype}"
    b = config.batch_size
    print(f"host batches: {_HOST.value}")
    print("| config | devices | batch | px | compile s | step ms | photometric ms (share) | "
          "images/s (step only) | "
          + " | ".join(f"images/s (device_prefetch={d})" for d in rates) + " |")
    print("|---" * (8 + len(rates)) + "|")
    print(f"| {name} | {device} | {b} | {config.data.image_size} | {compile_s:.1f} | "
          f"{1000 * step_only / steps:.1f} | {1000 * photometric / steps:.1f} "
          f"({photometric / step_only:.1%}) | {b * steps / step_only:.0f} | "
          + " | ".join(f"{r:.0f}" for r in rates.values()) + " |", flush=True)


if __name__ == "__main__":
    app.run(main)

"""Train-step throughput: images per second for a config, after compilation.

  python benchmarks/bench_step.py --config=configs/simclr_augself.py:shapes --steps=20

Two numbers: the step alone (one global batch reused, so the input pipeline is excluded)
and the whole loop (tf.data pipeline + host-to-device + step). An image is one example of
the global batch (two views each). Prints a Markdown table row per measurement.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/simclr_augself.py:shapes",
                                          "Experiment config.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 2 warm-up steps).")


def _timed_steps(train_step, state, next_batch, steps: int):
    for _ in range(2):  # compile + one more to settle
        state, metrics = train_step(state, next_batch())
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, next_batch())
    jax.block_until_ready(metrics)
    return state, time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from augself_jax.data.global_batch import make_global_batch
    from augself_jax.data.pipeline import make_pretrain_iterator
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib
    from augself_jax.train.step import STEP_KEYS, make_train_step

    tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerator is JAX's
    config, steps = _CONFIG.value, _STEPS.value
    mesh = mesh_lib.make_mesh(config)
    setup = state_lib.make_setup(config, mesh, num_steps=10**6)
    state = state_lib.init_state(config, setup)
    compile_start = time.perf_counter()
    train_step = make_train_step(config, setup)
    batches = make_pretrain_iterator(config)

    def pipeline_batch():
        host = next(batches)
        return make_global_batch({k: host[k] for k in STEP_KEYS}, mesh)

    fixed = pipeline_batch()
    state, _ = train_step(state, fixed)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - compile_start
    state, step_only = _timed_steps(train_step, state, lambda: fixed, steps)
    state, with_pipeline = _timed_steps(train_step, state, pipeline_batch, steps)

    device = f"{jax.device_count()}x {jax.devices()[0].device_kind}"
    m = config.model
    name = f"{config.method.name} {config.data.dataset} {m.backbone}/w{m.width}"
    print("| config | devices | batch | px | compile s | step ms | images/s (step only) | "
          "images/s (with pipeline) |")
    print("|---|---|---|---|---|---|---|---|")
    b = config.batch_size
    print(f"| {name} | {device} | {b} | {config.data.image_size} | {compile_s:.1f} | "
          f"{1000 * step_only / steps:.1f} | {b * steps / step_only:.0f} | "
          f"{b * steps / with_pipeline:.0f} |", flush=True)


if __name__ == "__main__":
    app.run(main)

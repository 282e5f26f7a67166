"""The pretraining loop: resume, step, log, monitor, checkpoint.

Metrics leave the device only at log steps (and before a checkpoint, where the loss is
checked so that a checkpoint never holds a diverged model). Only process 0 writes
metrics; every process joins checkpoint save and restore.
"""

import dataclasses
import math
import sys
import time
from collections.abc import Callable

import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions

from augself_jax import checkpoints
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import state as state_lib
from augself_jax.train.step import STEP_KEYS, make_train_step


class DivergedError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    setup: state_lib.Setup
    last_metrics: dict[str, float]


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _progress_line(step: int, num_steps: int, metrics: dict[str, float], steps_per_sec: float,
                   ) -> str:
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
    eta_text = _format_duration(eta) if math.isfinite(eta) else "?"
    return f"step {step}/{num_steps} {shown} | {steps_per_sec:.2f} steps/s, ETA {eta_text}"


def check_finite(loss: float, step: int, last_saved: int | None, workdir: str) -> None:
    """DivergedError naming the step and the last good checkpoint when the loss is NaN/Inf."""
    if math.isfinite(loss):
        return
    where = (f"step {last_saved} in {checkpoints.checkpoint_dir(workdir)}" if last_saved
             else "none (no checkpoint was written)")
    raise DivergedError(f"loss is {loss} at step {step}; stopped. "
                        f"The last good checkpoint is {where}")


def checkpoint_meta(config: ml_collections.ConfigDict, step: int, num_steps: int) -> dict:
    """The JSON record saved next to the state of the checkpoint at `step`."""
    return {"step": step, "data_position": step, "total_steps": num_steps,
            "method": config.method.name, "model": config.model.to_dict()}


_COMPILED: dict[tuple, tuple[state_lib.Setup, Callable]] = {}


def _setup_and_step(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> tuple[state_lib.Setup, Callable]:
    """The same config on the same devices reuses the compiled step (a resumed run in the
    same process, tests); only the latest one is kept."""
    key = (config.to_json_best_effort(sort_keys=True), tuple(d.id for d in mesh.devices.flat))
    if key not in _COMPILED:
        _COMPILED.clear()
        setup = state_lib.make_setup(config, mesh)
        _COMPILED[key] = (setup, make_train_step(config, setup))
    return _COMPILED[key]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: list | None = None) -> TrainResult:
    """Pretrains per `config`, resuming from WORKDIR's latest checkpoint if there is one."""
    from augself_jax.data.global_batch import make_global_batch
    from augself_jax.data.pipeline import make_pretrain_iterator

    is_lead = jax.process_index() == 0
    mesh = mesh_lib.make_mesh(config, devices)
    setup, train_step = _setup_and_step(config, mesh)
    num_steps = setup.num_steps
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=config.keep_checkpoints)

    start_step = ckpt.latest_step()
    if start_step is None:
        state = state_lib.init_state(config, setup)
        start_step = 0
    else:
        state, meta = ckpt.restore(start_step, setup.abstract_state)
        start_step = int(meta["data_position"])
        logging.info("Resumed from the checkpoint at step %d", start_step)
        if is_lead:
            print(f"resuming from the checkpoint at step {start_step} in "
                  f"{checkpoints.checkpoint_dir(workdir)}", flush=True)
    last_saved = start_step if start_step > 0 else None

    # Only process 0 writes; the others write nothing. TensorBoard event files here; the
    # readable line per log step is the progress line printed below (clu's LoggingWriter
    # would print the same numbers a second time).
    writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir)) if is_lead \
        else metric_writers.MultiWriter([])
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                             every_steps=config.log_every, every_secs=None)
    batches = make_pretrain_iterator(config, start_step=start_step)  # prepares the dataset
    knn = None
    if config.knn_every > 0:
        from augself_jax.train.knn import KnnMonitor

        knn = KnnMonitor(config, setup)
    last_metrics: dict[str, float] = {}
    last_time, last_step = time.perf_counter(), start_step
    for step in range(start_step + 1, num_steps + 1):  # `step` counts steps done after this one
        with report.timed("data"):
            host_batch = next(batches)
            batch = make_global_batch({k: host_batch[k] for k in STEP_KEYS}, mesh)
        with report.timed("train_step"):
            state, metrics = train_step(state, batch)
        report(step)

        is_last = step == num_steps
        is_save = step % config.checkpoint_every == 0 or is_last
        if step % config.log_every == 0 or is_save or step == start_step + 1:
            last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            try:
                check_finite(last_metrics["loss"], step, last_saved, workdir)
            finally:
                if not math.isfinite(last_metrics["loss"]):
                    ckpt.close()  # lets a pending save of the last good state finish
            if step % config.log_every == 0 or is_last:
                writer.write_scalars(step, last_metrics)
                now = time.perf_counter()
                rate = (step - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, step
                if is_lead:
                    print(_progress_line(step, num_steps, last_metrics, rate), flush=True)
        if knn is not None and (step % config.knn_every == 0 or is_last):
            with report.timed("knn"):
                accuracy = knn(state)
            writer.write_scalars(step, {"knn_top1": accuracy})
            last_metrics["knn_top1"] = accuracy
            if is_lead:
                print(f"step {step}/{num_steps} kNN (1-NN cosine) top-1: {accuracy:.4f}",
                      flush=True)
        if is_save:
            with report.timed("checkpoint"):
                ckpt.save(step, state, checkpoint_meta(config, step, num_steps))
            last_saved = step

    ckpt.close()
    writer.flush()
    writer.close()
    if is_lead and start_step < num_steps:
        print(f"done: {num_steps} steps; checkpoints in {checkpoints.checkpoint_dir(workdir)}, "
              f"TensorBoard logs in {workdir}", flush=True)
    elif is_lead:
        print(f"nothing to do: the checkpoint in {checkpoints.checkpoint_dir(workdir)} is "
              f"already at step {start_step} of {num_steps}", flush=True)
    return TrainResult(state=state, setup=setup, last_metrics=last_metrics)


def main(config: ml_collections.ConfigDict, workdir: str) -> None:
    """main.py's one call."""
    try:
        train_and_evaluate(config, workdir)
    except DivergedError as e:
        sys.exit(f"error: {e}")


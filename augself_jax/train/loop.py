"""The pretraining loop: resume, step, log, monitor, checkpoint, stop.

Metrics leave the device only at log steps and before a checkpoint; there the loss and
the new state are checked for NaN/Inf, so a checkpoint never holds a diverged model. The
logged value of each metric is its mean over the steps since the last log step
(metric_logging.IntervalMean). With the kNN monitor on, the checkpoint of its best
accuracy is kept beside the last K (checkpoints.BEST_SUBDIR). A
failed background save stops the run at the next step boundary. SIGTERM or Ctrl-C saves
the current step and stops (train/preemption.py). Only process 0 writes metrics; every
process joins checkpoint save and restore.
"""

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable

import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions

from augself_jax import checkpoints, metric_logging
from augself_jax.errors import DivergedError
from augself_jax.train import mesh as mesh_lib
from augself_jax.train import optimizers
from augself_jax.train import state as state_lib
from augself_jax.train.preemption import StopRequests
from augself_jax.train.resume_contract import check_resume, contract
from augself_jax.train.step import STEP_KEYS, make_train_step
from augself_jax.workdir import write_resolved_config

__all__ = ["DivergedError", "TrainResult", "checkpoint_meta", "main", "train"]


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    setup: state_lib.Setup
    last_metrics: dict[str, float]
    stopped_by: str | None = None  # the signal that stopped the run early, if one did


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


def _last_good(last_saved: int | None, workdir: str) -> str:
    return (f"step {last_saved} in {checkpoints.checkpoint_dir(workdir)}"
            if last_saved is not None else "none (no checkpoint was written)")


def check_finite(loss: float, step: int, last_saved: int | None, workdir: str,
                 non_finite_array: str | None = None, grad_norm: float | None = None) -> None:
    """DivergedError naming the step and the last good checkpoint when the loss is NaN/Inf
    or an array of the state after the step's update (`non_finite_array`) is. The loss is
    computed before the update, so it alone can be finite while the new state is not."""
    if math.isfinite(loss) and non_finite_array is None:
        return
    if math.isfinite(loss):
        grad = f", grad_norm={grad_norm:.4g}" if grad_norm is not None else ""
        raise DivergedError(
            f"{non_finite_array} is NaN or Inf after the update at step {step} (loss={loss:.4g}"
            f"{grad}); stopped. The last good checkpoint is {_last_good(last_saved, workdir)}")
    raise DivergedError(f"loss is {loss} at step {step}; stopped. "
                        f"The last good checkpoint is {_last_good(last_saved, workdir)}")


def checkpoint_meta(config: ml_collections.ConfigDict, step: int, num_steps: int) -> dict:
    """The JSON record saved next to the state of the checkpoint at `step`, with the resume
    contract (train/resume_contract.py)."""
    return {"step": step, "data_position": step, "total_steps": num_steps,
            "method": config.method.name, "model": config.model.to_dict(),
            "contract": contract(config, num_steps)}


# The kNN monitor's accuracy (percent; train/monitor.py): TensorBoard's name and the best
# checkpoint's meta key.
MONITOR_METRIC = "monitor/knn_1nn_top1_pct"
MONITOR_METRIC_META = "knn_1nn_top1_pct"

_COMPILED: dict[str, tuple[state_lib.Setup, Callable]] = {}
_COMPILED_KEPT = 3


def _setup_and_step(config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> tuple[state_lib.Setup, Callable]:
    """The setup and the step function, cached: runs in one process built from the same
    resume contract, compile mode and devices (a resumed run, a resume with another log
    or checkpoint interval, tests) share one compiled step. The latest few are kept.
    Nothing is compiled here: jit compiles at the first step."""
    num_steps = optimizers.total_steps(config)
    key = json.dumps([contract(config, num_steps), config.xla_fast_compile,
                      config.mesh.to_dict(), [d.id for d in mesh.devices.flat]], sort_keys=True)
    if key not in _COMPILED:
        setup = state_lib.make_setup(config, mesh, num_steps)
        _COMPILED[key] = (setup, make_train_step(config, setup))
        while len(_COMPILED) > _COMPILED_KEPT:
            del _COMPILED[next(iter(_COMPILED))]
    return _COMPILED[key]


def _lead_print(line: str, *, err: bool = False) -> None:
    if jax.process_index() == 0:
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


def _restore_or_init(config: ml_collections.ConfigDict, setup: state_lib.Setup,
                     ckpt: checkpoints.TrainCheckpointer,
                     workdir: str) -> tuple[state_lib.TrainState, int]:
    """The newest checkpoint that restores (after the resume contract is checked, and
    unreadable steps are set aside), else a fresh state; then the resolved config is
    written, so config.json always agrees with the checkpoints."""
    expected = contract(config, setup.num_steps)
    found = ckpt.restore_newest_good(
        setup.abstract_state,
        check_meta=lambda step, meta: check_resume(meta, expected, step, ckpt.directory),
        report=lambda line: _lead_print(line, err=True))
    if found is None:
        state, start_step = state_lib.init_state(config, setup), 0
    else:
        _, state, meta = found
        start_step = int(meta["data_position"])
        logging.info("Resumed from the checkpoint at step %d", start_step)
        _lead_print(f"resuming from the checkpoint at step {start_step} in {ckpt.directory}")
    write_resolved_config(config, workdir, "config.json")
    return state, start_step


def train(config: ml_collections.ConfigDict, workdir: str, devices: list | None = None,
          writer: metric_writers.MetricWriter | None = None) -> TrainResult:
    """Pretrains per `config`, resuming from WORKDIR's newest restorable checkpoint.
    `writer`: the run's metric writer (app.run makes it); None makes one here and closes it
    at the end (in-process callers, tests)."""
    own_writer = writer is None
    writer = metric_logging.make_writer(workdir) if own_writer else writer
    try:
        with StopRequests() as stop:
            result = _run(config, workdir, devices, stop, writer)
    except BaseException:
        # The run's own error is the one to report: a writer failing on the same full disk
        # as it flushes would otherwise replace it with an asynchronous traceback.
        with contextlib.suppress(Exception):
            _finish_writer(writer, own_writer)
        raise
    _finish_writer(writer, own_writer)
    return result


def _finish_writer(writer: metric_writers.MetricWriter, own_writer: bool) -> None:
    writer.flush()
    if own_writer:
        writer.close()


def _best_accuracy(best: checkpoints.TrainCheckpointer, config: ml_collections.ConfigDict,
                   num_steps: int, workdir: str) -> float:
    """The kNN accuracy of the kept best checkpoint (-inf when there is none); a best
    checkpoint of another config is a ConfigError, as a resume would be."""
    step = checkpoints.latest_step(workdir, checkpoints.BEST_SUBDIR)
    if step is None:
        return -math.inf
    meta = best.read_meta(step)
    check_resume(meta, contract(config, num_steps), step, best.directory)
    if MONITOR_METRIC_META not in meta:  # kept before the monitor reported percent
        return 100.0 * float(meta["knn_top1"])
    return float(meta[MONITOR_METRIC_META])


def _run(config: ml_collections.ConfigDict, workdir: str, devices: list | None,
         stop: StopRequests, writer: metric_writers.MetricWriter) -> TrainResult:
    from augself_jax.data.pipeline import make_pretrain_iterator
    from augself_jax.train.prefetch import device_batches

    is_lead = jax.process_index() == 0
    mesh = mesh_lib.make_mesh(config, devices)
    setup, train_step = _setup_and_step(config, mesh)
    num_steps = setup.num_steps
    ckpt = checkpoints.TrainCheckpointer(workdir, keep=config.keep_checkpoints)
    # The best checkpoint by the monitor's accuracy: its own directory and manager, keeping
    # one, so the last-K pruning of `ckpt` never touches it and resume ignores it.
    best = (checkpoints.TrainCheckpointer(workdir, keep=1, subdir=checkpoints.BEST_SUBDIR)
            if config.knn_every > 0 else None)
    try:
        state, start_step = _restore_or_init(config, setup, ckpt, workdir)
        best_accuracy = _best_accuracy(best, config, num_steps, workdir) if best else -math.inf
    except BaseException:
        ckpt.close()
        if best is not None:
            best.close()
        raise
    # After the resume checks, so that a refused resume prints its one line and nothing else.
    warm = optimizers.warmup_steps(config)
    if warm >= num_steps:
        _lead_print(f"warning: the learning-rate warm-up ({warm} steps, optimizer.warmup_epochs="
                    f"{config.optimizer.warmup_epochs}) covers the whole run ({num_steps} "
                    "steps): the rate rises until the last step and never decays; lower "
                    "--config.optimizer.warmup_epochs", err=True)

    # No writer: TensorBoard's steps_per_sec is the progress line's rate (written below);
    # clu's own estimate measures a different interval and disagreed with the console.
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=None,
                                             every_steps=config.log_every, every_secs=None)
    if is_lead and start_step == 0:
        metric_logging.write_config(writer, config)
        if config.tensorboard_views:
            metric_logging.write_sample_views(writer, config)
    last_metrics: dict[str, float] = {}
    interval = metric_logging.IntervalMean()
    stopped_at = None
    try:
        batches = device_batches(make_pretrain_iterator(config, start_step=start_step),
                                 mesh, STEP_KEYS, config.data.device_prefetch)  # prepares data
        knn = None
        if best is not None:
            from augself_jax.train.monitor import KnnMonitor

            knn = KnnMonitor(config, setup)
        last_time, last_step = time.perf_counter(), start_step
        for step in range(start_step + 1, num_steps + 1):  # `step`: steps done after this one
            with report.timed("data"):
                batch = next(batches)  # on the devices, the next ones already on their way
            first = step == start_step + 1
            if first:
                _lead_print("compiling the train step (the first step waits for it)...")
                compile_start = time.perf_counter()
            with report.timed("train_step"):
                state, metrics = train_step(state, batch)
            if first:
                jax.block_until_ready(metrics)
                first_seconds = time.perf_counter() - compile_start
                _lead_print(f"compiled and ran the first step in {first_seconds:.1f} s")
                # The rate of the first interval then leaves the compile out.
                last_time, last_step = time.perf_counter(), step
            interval.add(metrics)
            report(step)
            ckpt.check_for_errors()  # a failed background save stops the run here, at once

            stopping = stop.should_stop(step)
            is_last = step == num_steps
            is_save = step % config.checkpoint_every == 0 or is_last or stopping
            if step % config.log_every == 0 or is_save or step == start_step + 1:
                current, means = interval.fetch(metrics)
                last_metrics = current
                bad_array = checkpoints.first_non_finite(state)
                if bad_array is not None or not math.isfinite(last_metrics["loss"]):
                    ckpt.close()  # the pending save of the last good state commits first
                    check_finite(current["loss"], step, ckpt.last_good_step(), workdir,
                                 bad_array, current.get("grad_norm"))
                if step % config.log_every == 0 or is_last:
                    now = time.perf_counter()
                    rate = ((step - last_step) / max(now - last_time, 1e-9) if step > last_step
                            else 1.0 / first_seconds)  # the first step is its own interval
                    last_time, last_step = now, step
                    writer.write_scalars(step, {**means, "steps_per_sec": rate})
                    interval.reset()
                    if is_lead:
                        print(_progress_line(step, num_steps, means, rate), flush=True)
            if knn is not None and (step % config.knn_every == 0 or is_last):
                with report.timed("knn"):
                    accuracy = knn(state)  # percent, as the evaluation reports
                writer.write_scalars(step, {MONITOR_METRIC: accuracy})
                last_metrics[MONITOR_METRIC] = accuracy
                if is_lead:
                    print(f"step {step}/{num_steps} kNN (1-NN cosine) top-1: {accuracy:.2f}% "
                          f"(monitor: {knn.num_train} train / {knn.num_test} test images)",
                          flush=True)
                if accuracy > best_accuracy:  # strict: a tie keeps the earlier checkpoint
                    best_accuracy = accuracy
                    with report.timed("checkpoint"):
                        best.save(step, state, {**checkpoint_meta(config, step, num_steps),
                                                MONITOR_METRIC_META: accuracy})
            if is_save:
                with report.timed("checkpoint"):
                    ckpt.save(step, state, checkpoint_meta(config, step, num_steps))
            if stopping:
                stopped_at = step
                break
        ckpt.wait()  # the last save is on disk (or its failure raised) before we say so
        if best is not None:
            best.wait()
    finally:
        try:
            ckpt.close()
        finally:
            if best is not None:
                best.close()
    if stopped_at is not None:
        _lead_print(f"stopped by {stop.reason} at step {stopped_at} of {num_steps}: saved the "
                    f"checkpoint at step {stopped_at} in {ckpt.directory}; rerun the same "
                    "command to resume")
    elif start_step < num_steps:
        _lead_print(f"done: {num_steps} steps; checkpoints in {ckpt.directory}, TensorBoard "
                    f"logs in {workdir}")
    else:
        _lead_print(f"nothing to do: the checkpoint in {ckpt.directory} is already at step "
                    f"{start_step} of {num_steps}")
    return TrainResult(state=state, setup=setup, last_metrics=last_metrics,
                       stopped_by=stop.reason if stopped_at is not None else None)


def main(config: ml_collections.ConfigDict, workdir: str,
         writer: metric_writers.MetricWriter | None = None) -> None:
    """main.py's one call; its errors (DivergedError, CheckpointError, ConfigError) are
    printed by app.run as one line."""
    train(config, workdir, writer=writer)

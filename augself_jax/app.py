"""Shared start-up of main.py and evaluate.py.

Flags --config (an ml_collections config file, `file.py:preset`, any field overridable as
`--config.optimizer.base_lr=0.05`) and --workdir; TensorFlow kept off the accelerators;
`jax.distributed.initialize` when asked (--distributed, or AUGSELF_DISTRIBUTED=1; on Cloud
TPU and SLURM the coordinator is found automatically, elsewhere pass --coordinator_address,
--num_processes, --process_id); the config validated before anything is compiled or
written (one line, exit status 2); the resolved config saved in the workdir.
"""

import os
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from augself_jax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/simclr_augself.py:shapes.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize (default: env AUGSELF_DISTRIBUTED=1).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (auto-detected on TPU and SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")

CONFIG_ERROR_EXIT = 2


# TensorFlow's C++ start-up banners (oneDNN, CPU features) would bury the progress lines;
# set before TensorFlow is first imported. An explicit value in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_CHATTY_LIBRARIES = ("orbax", "tensorflow_datasets", "clu", "xla_bridge")


def quiet_library_logs() -> None:
    """Orbax logs every save, TFDS every dataset it opens, clu's ReportProgress the rate our
    progress line already shows, JAX each platform it did not find, all at INFO; keep their
    warnings, drop the rest (pass -v 1 to see everything)."""
    if flags.FLAGS["verbosity"].present:
        return
    handler = logging.get_absl_handler()
    handler.addFilter(lambda r: r.levelno >= logging.converter.STANDARD_WARNING
                      or not any(lib in r.pathname for lib in _CHATTY_LIBRARIES))


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the CPU; TensorFlow must not grab GPU memory that JAX needs."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")


def distributed_requested(flag_value: bool | None) -> bool:
    if flag_value is not None:
        return flag_value
    return os.environ.get("AUGSELF_DISTRIBUTED", "0").lower() in ("1", "true", "yes")


def maybe_initialize_distributed(requested: bool, coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Under SLURM every GPU of the node goes to the node's tasks (augself_jax.slurm), not
    JAX's one GPU per process."""
    if not requested:
        return
    import jax

    from augself_jax import slurm

    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=slurm.local_device_ids())
    logging.info("jax.distributed: process %d of %d, %d global devices",
                 jax.process_index(), jax.process_count(), jax.device_count())


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Every owner's checks; raises ConfigError with one line naming the field."""
    from augself_jax.data.validate import validate_data_config
    from augself_jax.methods import validate_model_config
    from augself_jax.train.validate import validate_train_config

    validate_train_config(config, num_devices)
    validate_data_config(config)
    validate_model_config(config)


def absolute_workdir(workdir: str) -> str:
    """Orbax refuses relative checkpoint paths, so a relative --workdir (the README's
    `runs/quickstart`) is resolved against the current directory once, here. URLs such as
    `gs://bucket/run` are already absolute and pass through unchanged."""
    if "://" in workdir:
        return workdir
    return os.path.abspath(workdir)


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str,
                          filename: str) -> str:
    """The config as run (after command-line overrides), for the record; process 0 only."""
    import jax

    path = os.path.join(workdir, filename)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return path


def run(main: Callable[[ml_collections.ConfigDict, str], None], *,
        resolved_config_name: str = "config.json") -> None:
    """absl.app.run with the shared start-up, then `main(config, workdir)`."""
    flags.mark_flags_as_required(["config", "workdir"])

    def _main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_library_logs()
        hide_accelerators_from_tensorflow()
        maybe_initialize_distributed(distributed_requested(_DISTRIBUTED.value), _COORDINATOR.value,
                                     _NUM_PROCESSES.value, _PROCESS_ID.value)
        config, workdir = _CONFIG.value, absolute_workdir(_WORKDIR.value)
        try:
            validate_config(config)
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr, flush=True)
            sys.exit(CONFIG_ERROR_EXIT)
        write_resolved_config(config, workdir, resolved_config_name)
        main(config, workdir)

    app.run(_main)


"""Shared start-up of main.py and evaluate.py.

Flags --config (an ml_collections config file, `file.py:preset`, any field overridable as
`--config.optimizer.base_lr=0.05`) and --workdir; TensorFlow kept off the accelerators;
`jax.distributed.initialize` when asked (--distributed, or AUGSELF_DISTRIBUTED=1; on Cloud
TPU and SLURM the coordinator is found automatically, elsewhere pass --coordinator_address,
--num_processes, --process_id); the config and the workdir checked before anything is
compiled or written. Every error a user can cause (a bad flag, config field, workdir,
dataset or checkpoint: augself_jax.errors.UserError) is one line on stderr with exit
status 2 (1 for a diverged run); --verbose adds the traceback. Ctrl-C outside the train
loop's step boundary is one line, exit status 130. The run's one metric writer (TensorBoard
events in the workdir, process 0) is made here, at its first write, and handed to `main`.
Process 0 holds the workdir's lock for the run's life (augself_jax/workdir_lock.py).
"""

import contextlib
import errno
import os
import re
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from augself_jax.errors import UserError
from augself_jax.workdir import check_workdir, ensure_writable, remove_if_empty, workdir_exists

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
_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "Print the traceback of a user error too, not just its line.")

CONFIG_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130  # the shell's code for a process ended by Ctrl-C
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


# TensorFlow's C++ start-up banners (oneDNN, CPU features) would bury the progress lines;
# set before TensorFlow is first imported. An explicit value in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_CHATTY_LIBRARIES = ("orbax", "tensorflow_datasets", "clu", "xla_bridge", "asyncio")
# Their failures are the program's to report (a failed save is the trainer's one line): the
# background save threads' errors and asyncio's "Task exception was never retrieved" are
# dropped whole, at every level, unless --verbose.
_REPORTED_BY_US = ("orbax", "asyncio", "tensorstore")


def quiet_library_logs() -> None:
    """Orbax logs every save, TFDS every dataset it opens, clu's ReportProgress the rate our
    progress line already shows, JAX each platform it did not find, all at INFO; keep their
    warnings, drop the rest (pass -v 1 to see everything). Their errors keep their line but
    not their traceback: a failed background save is Orbax's multi-screen traceback, and
    the trainer reports it in one line of its own."""
    if flags.FLAGS["verbosity"].present or _VERBOSE.value:
        return

    def keep(record) -> bool:
        if any(lib in record.pathname for lib in _REPORTED_BY_US):
            return False
        if not any(lib in record.pathname for lib in _CHATTY_LIBRARIES):
            return True
        if record.levelno < logging.converter.STANDARD_WARNING:
            return False
        record.exc_info, record.exc_text = None, None
        return True

    logging.get_absl_handler().addFilter(keep)
    _drop_library_thread_errors()


def _raised_in(tb, libraries: tuple[str, ...]) -> bool:
    return any(lib in frame.filename for frame, _ in traceback.walk_tb(tb)
               for lib in libraries)


def _drop_library_thread_errors() -> None:
    """An exception escaping one of Orbax's save threads, or an asyncio callback run after
    its loop closed (`RuntimeError: Event loop is closed`, printed once per pending write
    when a save fails), goes to sys.stderr through these hooks, not through logging. The
    failure is the trainer's one line; any other thread's exception still prints."""
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def on_thread_error(args) -> None:
        if not _raised_in(args.exc_traceback, _REPORTED_BY_US):
            thread_hook(args)

    def on_unraisable(unraisable) -> None:
        if not _raised_in(unraisable.exc_traceback, _REPORTED_BY_US):
            unraisable_hook(unraisable)

    threading.excepthook, sys.unraisablehook = on_thread_error, on_unraisable


@contextlib.contextmanager
def _stderr_held(verbose: bool) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the body (unless `verbose`): what C++
    code prints there never reaches the terminal, unless the body fails, when it is shown."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the CPU; TensorFlow must not grab GPU memory that JAX needs. The
    import's C++ banners (`WARNING: All log messages before absl::InitializeLog()`, `oneDNN
    custom operations are on`, each twice; TF_CPP_MIN_LOG_LEVEL does not hide them) are
    held back unless --verbose."""
    with _stderr_held("tensorflow" in sys.modules or _verbose_requested(sys.argv)), \
            _refusing(_KERAS_OPTIMIZERS):
        import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")


def import_metric_writers() -> None:
    """clu's metric writers, imported here before the trainer or the evaluation imports
    them, without Keras' optional integrations (_KERAS_INTEGRATIONS)."""
    with _refusing(*_KERAS_INTEGRATIONS):
        from clu import metric_writers  # noqa: F401


# Keras is not used, but two imports load it. Each is made with the Keras parts it never
# needs refused, which Keras passes over (it catches the ImportError). Keras and the refused
# libraries stay importable afterwards, and load on first use.
# - TensorFlow's `__init__` imports Keras' optimizers, for Keras models saved as
#   SavedModels. Refusing them cuts the TensorFlow import from about 6 s to 4.5 s of CPU
#   time. That saving stands alone only where no metric writer follows (the preview): the
#   writers' import below loads all of Keras, optimizers included.
# - clu's TensorBoard writer imports TensorBoard's hparams API, which defines a Keras
#   callback class at import and so loads all of Keras. Keras then imports the optional
#   integrations it finds installed: scikit-learn (its estimator wrappers), matplotlib
#   (plotting helpers) and IPython (a config editor). Refusing them cuts that import from
#   about 1.75 s to 0.5 s of CPU time, and a main.py run's by about 1 s (matplotlib and
#   IPython load later where a run uses them).
# Flax's `nnx` imports IPython only to ask whether a notebook is running (for coloured
# reprs). Where IPython is not loaded yet none is, and the answer is no either way.
# Refusing it cuts Flax's import from about 0.56 s to 0.39 s of CPU time.
_KERAS_OPTIMIZERS = "keras.src.optimizers"
_KERAS_INTEGRATIONS = ("sklearn", "matplotlib", "IPython")
_FLAX_ASKS = "IPython"


@contextlib.contextmanager
def _refusing(*modules: str) -> Iterator[None]:
    """For the body, `import` of any of `modules` not loaded yet raises ImportError."""
    refused = [m for m in modules if m not in sys.modules]  # a loaded one costs nothing
    for m in refused:
        sys.modules[m] = None  # `import` raises ModuleNotFoundError on a None
    try:
        yield
    finally:
        for m in refused:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


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


def _verbose_requested(argv: list[str]) -> bool:
    return any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv)


def _flag_error_line(error: Exception, argv: list[str]) -> str:
    """One line for a flag that cannot be parsed or a config that cannot be loaded or
    overridden; absl and ml_collections nest the cause in a multi-line message."""
    if isinstance(error, (AttributeError, KeyError)):
        # ml_collections raises these for an override of a field the config lacks; the
        # message (a KeyError, maybe wrapped) is "'name'\nDid you mean "x" instead of ...?".
        while error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        message = str(error.args[0]) if error.args else str(error)
        name, _, suggestion = message.partition("\n")
        name = name.strip("\"'")
        given = [a.split("=")[0].lstrip("-") for a in argv if a.startswith("--config.")]
        field = next((".".join(g.split(".")[:g.split(".").index(name) + 1]) for g in given
                      if name in g.split(".")[1:]), f"config.{name}")
        hint = re.search(r'Did you mean "([^"]+)"', suggestion)
        did_you_mean = f"; did you mean '{hint.group(1)}'?" if hint else ""
        return (f"{field}: no such field{did_you_mean} (every field and its default is in "
                "configs/common.py; check the spelling and the section)")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    os_errors = [line for line in lines if line.startswith("[Errno")]
    if os_errors:  # a config file that cannot be read
        return f"config: {os_errors[-1]}"
    causes = [line.split(": ", 1)[1] for line in lines
              if line.split(": ", 1)[0].endswith(("Error", "Exception")) and ": " in line]
    return causes[-1] if causes else (lines[0] if lines else type(error).__name__)


def installed_config(value: str) -> str:
    """`--config=configs/<file>.py[:preset]` names a file relative to the current directory,
    as in a checkout. Where that file does not exist (an installed package run outside a
    checkout, or main.py run from another directory), the same name is looked up in the
    `configs` package that Python imports: the installed one, or the checkout of the
    script that runs. Any other path is left as given."""
    path, colon, preset = value.partition(":")
    parts = os.path.normpath(path).split(os.sep)
    if os.path.exists(path) or len(parts) < 2 or parts[0] != "configs":
        return value
    try:
        import configs
    except ImportError:
        return value
    for root in getattr(configs, "__path__", []):
        candidate = os.path.join(root, *parts[1:])
        if os.path.isfile(candidate):
            return candidate + colon + preset
    return value


def _with_installed_config(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + installed_config(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = installed_config(out[i + 1])
    return out


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file, preset or override reported as
    one line (exit status 2) instead of a traceback and the usage text. A `configs/...`
    config missing from the current directory is found in the installed package."""
    argv = _with_installed_config(argv)
    try:
        remaining = flags.FLAGS(argv)
        config = flags.FLAGS["config"].value
        if config is not None and not isinstance(config, ml_collections.ConfigDict):
            config.to_dict()  # ml_collections defers a load failure; this raises it
        return remaining
    except Exception as e:
        if _verbose_requested(argv):
            traceback.print_exc()
        print(f"config error: {_flag_error_line(e, argv)}", file=sys.stderr, flush=True)
        sys.exit(CONFIG_ERROR_EXIT)


def list_flags_in_help(program_module: str, shared_flags: tuple[str, ...] | None = None) -> None:
    """absl's --help lists only the key flags of the script that was run (sys.argv[0]), and
    main.py, evaluate.py and the console scripts define none: the flags live here and in
    augself_jax/cli. Declare the program's flags and the shared ones it reads
    (`shared_flags`; None: all of this module's) key flags of that script, so that --help
    lists --config, --workdir, --verbose, ... and not only the docstring. A console script
    has no docstring of its own; the program module's docstring stands in."""
    shared = [f for f in flags.FLAGS.get_flags_for_module(__name__)
              if shared_flags is None or f.name in shared_flags]
    for flag in shared + flags.FLAGS.get_flags_for_module(program_module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main, program = sys.modules.get("__main__"), sys.modules.get(program_module)
    if main is not None and program is not None and not (main.__doc__ or "").strip():
        main.__doc__ = program.__doc__


class _WriterOnFirstWrite:
    """The run's metric writer, made at its first write: a command refused by its own
    checks (a changed config on resume, a wrong --step) leaves no events file behind."""

    def __init__(self, workdir: str):
        self._workdir, self._writer = workdir, None

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("write_"):
            raise AttributeError(name)
        if self._writer is None:
            from augself_jax.metric_logging import make_writer

            self._writer = make_writer(self._workdir)
        return getattr(self._writer, name)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


CONFIG_FROM_WORKDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli",
                                   "workdir_config.py")


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _with_workdir_config(argv: list[str]) -> list[str]:
    """Without --config, `--config=<cli/workdir_config.py>:<WORKDIR>`: the config the run in
    --workdir was trained with (its config.json), overridable as any config file."""
    workdir = _flag_value(argv, "workdir")
    if workdir is None or _flag_value(argv, "config") is not None:
        return argv
    workdir = absolute_workdir(workdir)
    try:
        check_workdir(workdir, must_exist=True)
        from augself_jax.trained_config import load

        load(workdir)  # a missing or broken config.json is its own line, not a flag error
    except UserError as e:
        print(f"{e.label}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_status)
    return [argv[0], f"--config={CONFIG_FROM_WORKDIR}:{workdir}", *argv[1:]]


def config_is_the_workdirs() -> bool:
    """Whether --config was left out and the workdir's config.json was loaded."""
    value = flags.FLAGS["config"].config_filename
    return value.startswith(CONFIG_FROM_WORKDIR + ":")


def run(main: Callable[[ml_collections.ConfigDict, str, Any], None], *,
        workdir_must_exist: bool = False, config_from_workdir: bool = False,
        only_reads: Callable[[], bool] = lambda: False,
        interrupted: str = "rerun the same command to resume from the last checkpoint",
        ) -> None:
    """absl.app.run with the shared start-up, then `main(config, workdir, writer)`, where
    `writer` is the run's clu metric writer (its events file made at the first write,
    closed when `main` returns). Nothing is written into the workdir before `main`'s own
    checks pass: the trainer writes config.json once its checkpoint restored, evaluate.py
    eval_config.json once its checkpoint and config are checked.

    `workdir_must_exist`: the workdir is an earlier run's (evaluate.py), so a missing one
    is a typo, not a new run. `config_from_workdir`: without --config, the workdir's
    config.json is the config. `only_reads`: whether this invocation only reads earlier
    results (evaluate.py --compare); otherwise it holds the workdir's lock
    (augself_jax/workdir_lock.py) for its life and imports TensorFlow for the data pipeline.
    `interrupted`: what the Ctrl-C line tells the user to do.
    """
    flags.mark_flags_as_required(["workdir"] if config_from_workdir else ["config", "workdir"])
    list_flags_in_help(main.__module__)

    def _main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_library_logs()
        workdir_existed = True
        try:
            config, workdir = _CONFIG.value, absolute_workdir(_WORKDIR.value)
            check_workdir(workdir, must_exist=workdir_must_exist)  # before the slow imports
            maybe_initialize_distributed(distributed_requested(_DISTRIBUTED.value),
                                         _COORDINATOR.value, _NUM_PROCESSES.value,
                                         _PROCESS_ID.value)
            validate_config(config)
            workdir_existed = workdir_exists(workdir)
            ensure_writable(workdir)
            from augself_jax.workdir_lock import hold_workdir

            lock = (hold_workdir(workdir, os.path.basename(sys.argv[0]),
                                 report=lambda line: print(line, file=sys.stderr, flush=True))
                    if not only_reads() else contextlib.nullcontext())
            with lock:
                # TensorFlow (for tf.data) only once the config is known to be good and the
                # workdir is this run's, and only where data is read: its import is most of
                # a refused run's time.
                if not only_reads():
                    hide_accelerators_from_tensorflow()
                    import_metric_writers()
                writer = _WriterOnFirstWrite(workdir)
                try:
                    main(config, workdir, writer)
                finally:
                    writer.close()
        except UserError as e:
            if not workdir_existed:
                remove_if_empty(workdir)  # a new run refused: leave no empty directory
            if _VERBOSE.value:
                traceback.print_exc()
            print(f"{e.label}: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_status)
        except OSError as e:
            if e.errno not in _STORAGE_ERRNOS:
                raise
            # A full, read-only or forbidden disk met outside a checkpoint save (TensorBoard
            # events, config.json, results): the user's to fix, so one line.
            if _VERBOSE.value:
                traceback.print_exc()
            print(f"workdir error: {e.filename or 'a file in the workdir'}: {e.strerror}",
                  file=sys.stderr, flush=True)
            sys.exit(CONFIG_ERROR_EXIT)
        except KeyboardInterrupt:
            print(f"interrupted (Ctrl-C); {interrupted}", file=sys.stderr, flush=True)
            sys.exit(INTERRUPTED_EXIT)

    def parser(argv: list[str]) -> list[str]:
        # The config files build the method registry, and so import Flax (_FLAX_ASKS).
        with _refusing(_FLAX_ASKS):
            return parse_flags(_with_workdir_config(argv) if config_from_workdir else argv)

    try:
        app.run(_main, flags_parser=parser)
    except SystemExit as e:  # absl's end of every run, success and one-line errors alike
        exit_now(e.code)


def exit_now(code: int | str | None) -> None:
    """Ends the process at once, the program's own end being done (checkpoints committed
    and closed, the TensorBoard writer closed, results written, the last line printed). The
    interpreter's teardown would otherwise run JAX's atexit clean-up (destroying the
    backends) and wind down the native libraries' thread pools: after "done", that took
    tens of seconds for main.py and 1.5 s for evaluate.py. A distributed run first leaves
    the coordination service, as that clean-up would have."""
    import logging

    if isinstance(code, str):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    if "jax" in sys.modules:
        import jax

        jax.distributed.shutdown()  # a no-op unless jax.distributed.initialize ran
    logging.shutdown()  # absl's log handlers flushed
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)

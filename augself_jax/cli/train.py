"""Pretraining (`python main.py`, installed as `augself-train`):

    python main.py --config=configs/simclr_augself.py:shapes --workdir=runs/x

Rerunning the same command continues from the latest checkpoint in the workdir.
"""

from augself_jax import app


def _train(config, workdir: str, writer) -> None:
    # Imported here, not at the top: a mistyped flag or workdir is reported before JAX and
    # TensorFlow are loaded (a second instead of ten).
    from augself_jax.train import loop

    loop.main(config, workdir, writer)


def run() -> None:
    """The `augself-train` entry point (also `python main.py`)."""
    try:
        app.run(_train)
    except SystemExit as e:
        exit_now(e.code)


def exit_now(code: int | str | None) -> None:
    """Ends the process at once, the run's own end being done: checkpoints committed and
    closed, the TensorBoard writer closed, the last line printed. The interpreter's teardown
    would otherwise run JAX's atexit clean-up (destroying the backends) and wind down the
    native libraries' thread pools: tens of seconds after "done" (issue 22). A distributed
    run first leaves the coordination service, as that clean-up would have."""
    import logging
    import os
    import sys

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


if __name__ == "__main__":
    run()

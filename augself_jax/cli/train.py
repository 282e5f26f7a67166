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
    app.run(_train)


if __name__ == "__main__":
    run()

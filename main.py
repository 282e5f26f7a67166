"""Pretraining: `python main.py --config=configs/simclr_augself.py:shapes --workdir=runs/x`.

The program is `augself_jax.cli.train` (installed as `augself-train`)."""

from augself_jax.cli.train import run

if __name__ == "__main__":
    run()

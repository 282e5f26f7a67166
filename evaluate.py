"""Transfer evaluation:

    python evaluate.py --config=configs/simclr_augself.py:shapes --workdir=runs/x


The program is `augself_jax.cli.evaluate` (installed as `augself-evaluate`)."""

from augself_jax.cli.evaluate import run

if __name__ == "__main__":
    run()

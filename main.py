"""Pretraining: `python main.py --config=configs/simclr_augself.py:shapes --workdir=/tmp/run`.

Rerunning the same command continues from the latest checkpoint in the workdir.
"""

from augself_jax import app
from augself_jax.train import loop

if __name__ == "__main__":
    app.run(loop.main)

"""`python -m augself_jax.export`: see augself_jax/export/command.py."""

from augself_jax.export.command import run

if __name__ == "__main__":
    run()

"""The preview command (`augself-preview`, `python -m augself_jax.cli.preview`): writes
OUT/views.png and OUT/views.npz for a config's first batch.

    python -m augself_jax.cli.preview --config=configs/simclr_augself.py:shapes --out=/tmp/pv
    [--seed=3] [--num_images=16] [--config.aug.color_strength=2.0]
"""

import os

from absl import app, flags

# Importing the shared start-up defines --config (file[:preset], overridable fields) here too.
from augself_jax.app import hide_accelerators_from_tensorflow, list_flags_in_help, parse_flags

_OUT = flags.DEFINE_string("out", None, "Directory for views.png and views.npz.")
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 16, "Examples to preview (at least 16).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = _OUT.value
    if out is None:
        raise app.UsageError("--out is required")
    config = flags.FLAGS.config
    if _SEED.value is not None:
        config.seed = _SEED.value
    hide_accelerators_from_tensorflow()
    from augself_jax.data.preview import write_preview

    write_preview(config, out, _NUM_IMAGES.value)
    print(f"wrote {os.path.join(out, 'views.png')} and views.npz")


def run() -> None:
    """The `augself-preview` entry point."""
    flags.mark_flag_as_required("config")
    list_flags_in_help(__name__, shared_flags=("config",))
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()

"""The experiment configs: `common.py` (every field and the presets) and one file per
experiment, each with `get_config("preset[,backbone]")`. A package, so that an installed
augself_jax finds them for `--config=configs/<experiment>.py:preset` (augself_jax/app.py)."""

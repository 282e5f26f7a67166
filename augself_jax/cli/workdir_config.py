"""The config file evaluate.py loads when it is given no --config:
`--config=<this file>:<WORKDIR>` reads WORKDIR/config.json, the config the run was trained
with (augself_jax/trained_config.py), so `--config.eval.protocols=knn` and the other
overrides work on it as on any config file."""

import ml_collections

from augself_jax import trained_config


def get_config(workdir: str) -> ml_collections.ConfigDict:
    return trained_config.load(workdir)

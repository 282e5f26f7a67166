"""Checks of config.data and config.aug before any work starts: one ConfigError line each."""

import ml_collections

from augself_jax import augs
from augself_jax.data import registry, source
from augself_jax.errors import ConfigError


def _check_aug(config: ml_collections.ConfigDict) -> None:
    """Each registered augmentation checks its own fields; unknown fields are refused."""
    known = set(augs.config_defaults())
    for field in config.aug.keys():
        if field not in known:
            raise ConfigError(f"aug.{field}: unknown field; allowed: {', '.join(sorted(known))}")
    for entry in augs.entries().values():
        if entry.check is not None:
            entry.check(config.aug, config.data.image_size)


def validate_data_config(config: ml_collections.ConfigDict, *,
                         check_prepared: bool = True) -> None:
    """Raise ConfigError for the first bad data/aug field; does no reading. (The batch
    size's split over processes and devices is the trainer's check: it owns the mesh.)"""
    info = registry.get(config.data.dataset)  # unknown dataset
    if config.data.image_size <= 0:
        raise ConfigError(f"data.image_size: {config.data.image_size} must be > 0")
    _check_aug(config)
    ahead = config.data.get("device_prefetch", 0)
    if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 0:
        raise ConfigError(f"data.device_prefetch: {ahead!r} must be an integer >= 0 "
                          "(0: no device prefetch)")
    if not check_prepared:
        return
    if not info.tfds_name.startswith(source.BUILTIN):  # the built-in one is made on demand
        import tensorflow_datasets as tfds

        prepared = tfds.builder(info.tfds_name, data_dir=config.data.data_dir, try_gcs=False)
        if not prepared.is_prepared():
            raise ConfigError(source.not_prepared_message(info.tfds_name, config.data.data_dir,
                                                          name=info.name))
        source.check_random_access(prepared, name=info.name)  # TFRecord-only: say how to fix
    splits = {"train_split": config.data.get("train_split") or info.train_split,
              "test_split": config.data.get("test_split") or info.test_split}
    if info.tfds_name.startswith(source.BUILTIN):
        known = ("train", "test")
    else:
        import tensorflow_datasets as tfds

        b = tfds.builder(info.tfds_name, data_dir=config.data.data_dir, try_gcs=False)
        known = tuple(b.info.splits.keys())
    for field, split in splits.items():
        for name in split.split("+"):
            if name not in known:
                raise ConfigError(f"data.{field}: unknown split '{name}' of '{info.name}'; "
                                  f"allowed: {', '.join(known)}")

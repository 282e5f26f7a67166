"""The augmentation registry (see `registry`): one module per augmentation.

Importing this package registers the built-in augmentations. Their import order is the
layout of each view's uniform vector, so appending keeps every existing draw's bits.
To add one: write its module (an `Augmentation` passed to `register`), import it below,
and test it; the pipeline, AugSelf, CASSLE, validation, the preview and the sensitivity
analysis pick it up from the registry.
"""

from augself_jax.augs import crop, flip, color, gray, blur, solarize, rotation  # noqa: F401, I001
from augself_jax.augs.registry import (DEVICE, HOST, AugSelfTarget, Augmentation, Descriptor,
                                   Field, StaticSettings, augself_entries, chain,
                                   config_defaults, descriptors, entries, get, record_fields,
                                   record_keys, register)

__all__ = ["DEVICE", "HOST", "AugSelfTarget", "Augmentation", "Descriptor", "Field",
           "StaticSettings", "augself_entries", "chain", "config_defaults", "descriptors",
           "entries", "get", "record_fields", "record_keys", "register"]

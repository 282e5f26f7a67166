"""The augmentation registry (see `registry`): one module per augmentation.

Each module defines `AUGMENTATION`, an `Augmentation`; the registry finds them by scanning
this package. Their `draw_order` is the layout of each view's uniform vector, so a new one
takes the next number and every existing draw keeps its bits. To add one: write its module
and its test; the pipeline, AugSelf, CASSLE, validation, the preview and the sensitivity
analysis pick it up from the registry.
"""

from augself_jax.augs.registry import (
                                   DEVICE,
                                   HOST,
                                   Augmentation,
                                   AugSelfTarget,
                                   Descriptor,
                                   Field,
                                   StaticSettings,
                                   augself_entries,
                                   chain,
                                   config_defaults,
                                   descriptors,
                                   entries,
                                   get,
                                   names,
                                   record_fields,
                                   record_keys,
)

__all__ = ["DEVICE", "HOST", "AugSelfTarget", "Augmentation", "Descriptor", "Field",
           "StaticSettings", "augself_entries", "chain", "config_defaults", "descriptors",
           "entries", "get", "names", "record_fields", "record_keys"]

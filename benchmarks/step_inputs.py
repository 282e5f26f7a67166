"""What the step benchmarks share: a config per (method, variant) and the step's batch,
either as synthetic numpy arrays (timing) or as abstract shapes (cost analysis).

The batch has the layout the train step consumes (train/step.py STEP_KEYS): uint8 views
and the parameter record per view (docs/METHOD.md section 1), so the photometric ops run
inside the step exactly as in training.
"""

import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.common import base_config  # noqa: E402

VARIANTS = ("plain", "augself", "cassle")


def method_names() -> tuple[str, ...]:
    """Every registered base method, so a newly added one is benchmarked too."""
    from augself_jax.methods import registry

    return registry.names()


def make_config(method: str, variant: str, *, backbone: str = "resnet18",
                stem: str = "cifar", width: int = 64, image_size: int = 32, batch: int = 256,
                dtype: str = "float32", small_heads: bool = False,
                preset: str = "stl10", patch_size: int = 16,
                vit_depth: int = 0) -> ml_collections.ConfigDict:
    """`method` plain, + AugSelf (the reference crop + colour heads) or + CASSLE (proj-cat)."""
    from augself_jax.methods import registry

    if variant not in VARIANTS:
        raise ValueError(f"variant '{variant}'; allowed: {', '.join(VARIANTS)}")
    c = base_config(preset)
    c.batch_size = batch
    c.data.image_size = image_size
    c.model.update(backbone=backbone, stem=stem, width=width, dtype=dtype,
                   patch_size=patch_size, vit_depth=vit_depth)
    c.method.name = method
    registry.get(method).recipe(c)  # the method's optimiser for this backbone (MoCo v3)
    c.optimizer.warmup_epochs = 0.0  # the schedule's shape does not change a step's cost
    c.method.num_classes = 10
    c.method.queue_size = max(batch, 4096)
    c.total_steps = 1000
    if small_heads:
        c.method.update(proj_hidden=512, proj_out=128, pred_hidden=512)
    if variant == "augself":
        c.augself.crop = c.augself.color = 1.0
    if variant == "cassle":
        c.cassle.enabled = True
    return c


def synthetic_batch(b: int, size: int, seed: int = 0) -> dict:
    """A host batch of the step's layout: random pixels and labels, and each view's
    parameter record drawn by the augmentation registry's own samplers."""
    from augself_jax.augs import records

    rng = np.random.default_rng(seed)
    return {"view1": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
            "view2": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
            "params1": records.sample_record(b, seed=2 * seed),
            "params2": records.sample_record(b, seed=2 * seed + 1),
            "label": rng.integers(0, 10, b).astype(np.int32)}


def abstract_batch(b: int, size: int, sharding=None) -> dict:
    """The step's batch as ShapeDtypeStructs: nothing is allocated."""
    from augself_jax.augs import records

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    def record() -> dict:
        return {k: spec((b, *shape), dtype) for k, (shape, dtype) in
                records.record_spec().items()}

    view = spec((b, size, size, 3), np.uint8)
    return {"view1": view, "view2": view, "params1": record(), "params2": record(),
            "label": spec((b,), np.int32)}

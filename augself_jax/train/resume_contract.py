"""What a resumed run must share with the run that wrote its checkpoint.

The checkpoint's meta records the resolved config as flat `section.field` values; a
resume compares it with the new config before any array is read. Every field is part of
the contract except SAFE_TO_CHANGE: how often to log, save and monitor, how many
checkpoints to keep, the device mesh (a checkpoint restores onto any device count), the
compile mode, where the data is read from and how fast, and the `eval` section. The
schedule length is compared as the resolved number of steps, so `total_steps` and
`num_epochs` may be rewritten as long as they give the same length.
"""

import json
from typing import Any

import ml_collections
from etils import epath

from augself_jax.errors import ConfigError

SAFE_TO_CHANGE = (
    "preset", "total_steps", "num_epochs", "log_every", "checkpoint_every",
    "keep_checkpoints", "knn_every", "knn_max_examples", "mesh", "xla_fast_compile",
    "data.data_dir", "data.prefetch", "data.device_prefetch", "data.num_parallel_calls",
    "eval",
)
SCHEDULE_LENGTH = "schedule_length"
_SHOWN = 6  # fields named in the error line; the rest are counted


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = node


def _is_safe(field: str) -> bool:
    return any(field == s or field.startswith(s + ".") for s in SAFE_TO_CHANGE)


def contract(config: ml_collections.ConfigDict, num_steps: int) -> dict[str, Any]:
    """The fields that must not change across a resume, JSON-ready (tuples become lists)."""
    flat: dict[str, Any] = {}
    _flatten(json.loads(config.to_json_best_effort()), "", flat)
    kept = {k: v for k, v in flat.items() if not _is_safe(k)}
    kept[SCHEDULE_LENGTH] = int(num_steps)
    return kept


def implied(recorded: dict[str, Any]) -> dict[str, Any]:
    """Fields added with a change of architecture, set to what a checkpoint recorded before
    them was trained with, so that `changes` refuses it in the contract's one line. Before
    `method.mocov3_predictor_end`, MoCo v3's ResNet predictor ended in a Linear with a bias
    (the official one has none): its parameters no longer fit the model."""
    if (recorded.get("method.name") == "mocov3"
            and "method.mocov3_predictor_end" not in recorded
            and not str(recorded.get("model.backbone", "")).startswith("vit")):
        return {"method.mocov3_predictor_end": "linear with a bias (the code before the "
                                               "official bias-free predictor)"}
    return {}


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, recorded value, current value) for each recorded field that differs. A field
    the checkpoint did not record (one added to the code since) cannot be compared, unless
    `implied` knows what the code before it did."""
    recorded = {**implied(recorded), **recorded}
    return [(k, v, current.get(k, "(absent)")) for k, v in sorted(recorded.items())
            if current.get(k, "(absent)") != v]


def check_resume(meta: dict, current: dict[str, Any], step: int,
                 directory: epath.Path) -> None:
    """ConfigError (one line: the fields, old -> new, how to start fresh) when the config
    differs from the recorded one; checkpoints without a record are not checked."""
    recorded = meta.get("contract")
    if not isinstance(recorded, dict):
        return
    found = changes(recorded, current)
    if not found:
        return
    shown = ", ".join(f"{k} {json.dumps(old)} -> {json.dumps(new)}" + (
        " (steps, from total_steps or num_epochs)" if k == SCHEDULE_LENGTH else "")
        for k, old, new in found[:_SHOWN])
    more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    # total_steps and num_epochs are safe only while the schedule length stays: never list
    # them as plainly safe next to a refused schedule_length.
    free = [f for f in SAFE_TO_CHANGE if f not in ("total_steps", "num_epochs")]
    raise ConfigError(
        f"resume: the checkpoint at step {step} in {directory} was trained with a different "
        f"config: {shown}{more}. Rerun with the old values, or start fresh with a new "
        f"--workdir (safe to change on resume: {', '.join(free)}; total_steps and num_epochs "
        "only where they give the same schedule length)")

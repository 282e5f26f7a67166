"""The config a workdir's run was trained with, and what evaluate.py may change in it.

`python main.py` writes the resolved config to WORKDIR/config.json once its checkpoint
restored (so it agrees with every checkpoint beside it). evaluate.py reads it when no
`--config` is given (`load`), and checks a given one against the evaluated checkpoint's
record (`for_evaluation`):

- EVALUATION_OWN fields are the evaluation's to choose: the `eval` section, and where and
  how fast data is read (a run may be evaluated on another machine).
- TRAINED fields make the backbone what it is: the method, the model, the dataset and its
  image size, the augmentations, AugSelf and CASSLE. A value that differs from the
  checkpoint's record is refused in one line: the numbers would be reported for a training
  that did not happen.
- Every other field (optimizer, batch size, schedule length, seed, the method's loss and
  head hyperparameters, logging and checkpoint cadence) is allowed to differ: the evaluation
  reads only the backbone, so it cannot use them; the training's values are kept in the
  evaluation's record (eval_config.json, the results' config_hash), and one line names
  the fields that were given otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
from etils import epath

from augself_jax.errors import ConfigError

CONFIG_FILE = "config.json"
EVALUATION_OWN = ("eval", "data.data_dir", "data.prefetch", "data.device_prefetch",
                  "data.num_parallel_calls")
TRAINED = ("method.name", "model", "data.dataset", "data.image_size", "aug", "augself",
           "cassle")
_SHOWN = 4  # fields named in one line; the rest are counted


def _under(field: str, prefixes: tuple[str, ...]) -> bool:
    return any(field == p or field.startswith(p + ".") for p in prefixes)


def flatten(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    """`section.field` -> value, JSON-ready (tuples as lists), as a checkpoint records it."""
    tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
        else config
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            out[prefix] = node

    walk(tree, "")
    return out


def _typed(template: Any, value: Any) -> Any:
    """A JSON value in the type of the template's field (a list where a tuple was)."""
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(template, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _fill(config: ml_collections.ConfigDict, record: dict) -> None:
    for key, value in record.items():
        if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
            _fill(config[key], value)
        elif key in config:
            config[key] = _typed(config[key], value)
        else:  # a field this version does not define: kept, untyped
            config[key] = value


def from_record(record: dict) -> ml_collections.ConfigDict:
    """A config with the types of the code's defaults (so `--config.eval.data_dir=D`
    overrides a field recorded as null) holding the recorded values."""
    from configs.common import PRESETS, base_config

    preset = record.get("preset")
    config = base_config(preset if preset in PRESETS else None)
    _fill(config, record)
    return config


def load(workdir: str) -> ml_collections.ConfigDict:
    """WORKDIR/config.json as a typed config; ConfigError (one line) when it is missing or
    not a config record."""
    path = epath.Path(workdir) / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config: {path} does not exist (main.py writes it when training "
                          "starts); pass the training's --config") from e
    except ValueError as e:
        raise ConfigError(f"config: {path} is not JSON ({e}); pass the training's --config"
                          ) from e
    if not isinstance(record, dict):
        raise ConfigError(f"config: {path} is not a config record; pass the training's "
                          "--config")
    return from_record(record)


def load_if_present(workdir: str) -> ml_collections.ConfigDict | None:
    """`load`, or None when the workdir has no config.json (a run of an older version)."""
    if not (epath.Path(workdir) / CONFIG_FILE).exists():
        return None
    return load(workdir)


def shown(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_trained_fields(given: ml_collections.ConfigDict, recorded: dict[str, Any],
                         where: str) -> None:
    """ConfigError when a TRAINED field of `given` differs from `recorded` (flat fields, as a
    checkpoint's contract or config.json holds them); the line's label is the first
    differing field's section, e.g. `model: ...`."""
    mine = flatten(given)
    order = {k: next(i for i, p in enumerate(TRAINED) if _under(k, (p,)))
             for k in recorded if _under(k, TRAINED)}  # the method first, then the model, ...
    differ = [(k, recorded[k], mine.get(k, "(absent)")) for k in sorted(order, key=lambda k: (
        order[k], k)) if mine.get(k, "(absent)") != recorded[k]]
    if not differ:
        return
    listed = shown([f"{k} {json.dumps(old)} -> {json.dumps(new)}" for k, old, new in differ])
    raise ConfigError(
        f"{differ[0][0].split('.')[0]}: the checkpoint in {where} was trained with another "
        f"config: {listed}. Leave out --config (evaluate.py then reads the workdir's "
        f"{CONFIG_FILE}), or give the training's; evaluation may change only the eval "
        "section and where data is read (data.data_dir)")


def for_evaluation(given: ml_collections.ConfigDict, trained: ml_collections.ConfigDict | None,
                   recorded: dict[str, Any] | None, where: str,
                   ) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(the config to evaluate with, the allowed fields `given` set otherwise). `trained`:
    WORKDIR/config.json (None when there is none: `given` is used as it is); `recorded`: the
    checkpoint's flat record of what it was trained with (its resume contract), else
    config.json's. A TRAINED difference is a ConfigError."""
    reference = recorded if recorded else (flatten(trained) if trained is not None else None)
    if reference:
        check_trained_fields(given, reference, where)
    if trained is None:
        return given, []
    result = from_record(json.loads(trained.to_json_best_effort()))
    mine, theirs = flatten(given), flatten(trained)
    overridden = [f"{k} {json.dumps(theirs[k])} (given {json.dumps(v)})"
                  for k, v in sorted(mine.items())
                  if not _under(k, EVALUATION_OWN) and k in theirs and theirs[k] != v]
    with result.unlocked():
        result.eval = ml_collections.ConfigDict(given.eval.to_dict())
        for field in EVALUATION_OWN[1:]:
            section, name = field.split(".")
            result[section][name] = given[section][name]
    return result, overridden

"""The workdir of a run: checked before any work starts, the resolved config written into it.

All I/O goes through `etils.epath`, so a `gs://` workdir works like a local one.
"""

import os
import uuid

import ml_collections
from etils import epath

from augself_jax.errors import ConfigError


def check_workdir(workdir: str, *, must_exist: bool) -> None:
    """ConfigError (one line) when WORKDIR is a file, or is missing where it must exist
    (evaluation reads an earlier run's workdir: a mistyped one must not be created).
    Writes nothing."""
    path = epath.Path(workdir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"workdir: {workdir} is a file; pass a directory (a new one, or the "
                          "workdir of an earlier run)")
    if must_exist and not path.exists():
        raise ConfigError(f"workdir: {workdir} does not exist; pass the --workdir of a "
                          "pretraining run")


def ensure_writable(workdir: str) -> None:
    """Creates WORKDIR; ConfigError (one line) when it cannot be written (a probe file is
    written and removed), so a read-only workdir stops before any compile."""
    path = epath.Path(workdir)
    probe = path / f".write_probe_{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        cause = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
        raise ConfigError(f"workdir: cannot write to {workdir} ({cause}); pass a writable "
                          "directory") from e


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str,
                          filename: str) -> epath.Path:
    """The config as run (after command-line overrides), for the record; process 0 only.
    Written to a temporary name and renamed, so it is never half-written."""
    import jax

    path = epath.Path(workdir) / filename
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".{filename}.partial"
        partial.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        partial.replace(path)
    return path


def workdir_exists(workdir: str) -> bool:
    return epath.Path(workdir).exists()


def remove_if_empty(workdir: str) -> None:
    """Removes WORKDIR when it holds nothing (a new run refused after creating it)."""
    path = epath.Path(workdir)
    try:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    except OSError:
        pass

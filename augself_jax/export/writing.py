"""The output file: checked before any checkpoint is read, written whole or not at all."""

import os
import uuid

from etils import epath

from augself_jax.errors import ConfigError


def _cause(error: OSError) -> str:
    return (error.strerror or os.strerror(error.errno)) if error.errno else str(error)


def check_writable(out: str) -> None:
    """ConfigError (one line) when --out is a directory, or its directory is missing or
    cannot be written (a probe file is written there and removed)."""
    path = epath.Path(out)
    if path.is_dir():
        raise ConfigError(f"out: {out} is a directory; pass a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"out: the directory {path.parent} does not exist; create it or "
                          "pass a file in an existing one")
    probe = path.parent / f".{path.name}.probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out: cannot write to {path.parent} ({_cause(e)}); pass a "
                          "writable place") from e


def write_atomically(out: str, data: bytes) -> None:
    """`data` to a temporary name beside `out`, then renamed over it: a reader never sees a
    partial file, and a failed write leaves no file behind."""
    path = epath.Path(out)
    partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex}"
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as e:
        if partial.exists():
            partial.unlink()
        raise ConfigError(f"out: cannot write {out} ({_cause(e)})") from e

"""`python -m configs`, the README's listing of what the registries hold (the README lists
no method, augmentation or protocol names by hand): run as written from a copy of the
checkout, every registered name on its line."""

import glob
import os

import pytest
from conftest import copy_checkout, run_command

from augself_jax import augs
from augself_jax.evaluation import registry as protocols
from augself_jax.methods import registry as methods
from configs.common import PRESETS, base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def listing(tmp_path_factory) -> dict[str, list[str]]:
    """{line label: the comma-separated names after it}."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert "`python -m configs`" in f.read()
    checkout = copy_checkout(tmp_path_factory.mktemp("listing") / "checkout")
    r = run_command(["-m", "configs"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    out = {}
    for line in r.stdout.splitlines():
        label, _, names = line.strip().partition(": ")
        out[label] = names.split(", ")
    return out


def _line(listing, prefix) -> list[str]:
    (names,) = [v for k, v in listing.items() if k.startswith(prefix)]
    return names


def test_every_config_file_and_preset(listing):
    files = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs",
                                                                               "*.py")))
    assert _line(listing, "experiment configs") == [
        f for f in files if os.path.basename(f) not in ("common.py", "__init__.py",
                                                        "__main__.py")]
    assert _line(listing, "presets") == list(PRESETS)


def test_every_method_augmentation_and_protocol(listing):
    assert _line(listing, "methods") == list(methods.names())
    chain = sorted(augs.entries().values(), key=lambda e: e.chain)
    assert _line(listing, "augmentations") == [e.name for e in chain]
    assert _line(listing, "record keys") == list(augs.record_keys())
    assert set(_line(listing, "AugSelf heads")) == {e.name for e in augs.augself_entries()}
    assert set(_line(listing, "CASSLE descriptor keys")) == set(augs.descriptors())
    assert _line(listing, "protocols") == list(protocols.names())


def test_each_presets_default_protocols(listing):
    defaults = {k: v for k, v in listing.items() if k.startswith("default for")}
    by_preset = {p: ",".join(v) for k, v in defaults.items()
                 for p in k.removeprefix("default for ").split(", ")}
    assert by_preset == {p: base_config(p).eval.protocols for p in PRESETS}

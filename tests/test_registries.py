"""The one registry idiom (augself_jax/registries.py): a package scan that finds each
module's entry, the lookups every registry shares, and the augmentation registry's own
checks (draw order, record keys)."""

import dataclasses
import sys
import textwrap

import pytest

from augself_jax import augs
from augself_jax.augs import registry as aug_registry
from augself_jax.errors import ConfigError
from augself_jax.registries import Registry, scan


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package `toys` with three modules: two define ENTRY, one does not."""
    root = tmp_path / "toys"
    root.mkdir()
    (root / "__init__.py").write_text("")
    entry = textwrap.dedent('''
        import dataclasses

        @dataclasses.dataclass
        class Toy:
            name: str
            rank: int

        ENTRY = Toy({name!r}, {rank})
        ''')
    (root / "b_second.py").write_text(entry.format(name="beta", rank=0))
    (root / "a_first.py").write_text(entry.format(name="alpha", rank=1))
    (root / "c_helpers.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m == "toys" or m.startswith("toys.")]:
        del sys.modules[name]


def test_scan_finds_each_modules_entry_in_module_order_or_the_given_order(package):
    assert list(scan("toys", "ENTRY")) == ["alpha", "beta"]  # a_first.py, b_second.py
    assert list(scan("toys", "ENTRY", order=lambda e: e.rank)) == ["beta", "alpha"]
    assert scan("toys", "MISSING") == {}


def test_scan_refuses_a_name_defined_twice(package):
    (package / "d_again.py").write_text((package / "a_first.py").read_text())
    with pytest.raises(ValueError, match="two ENTRY entries are named 'alpha'"):
        scan("toys", "ENTRY")


def test_registry_lookups_and_its_one_line_error():
    calls = []

    def load():
        calls.append(1)
        return {"resnet18": 1, "vit_small": 2}

    registry = Registry("model.backbone", load)
    assert registry.names() == ("resnet18", "vit_small")
    assert registry.get("vit_small") == 2 and registry.entries()["resnet18"] == 1
    with pytest.raises(ConfigError) as error:
        registry.get("resnet34")
    assert str(error.value) == ("model.backbone: 'resnet34' is unknown; allowed: resnet18, "
                                "vit_small")
    assert len(calls) == 1  # loaded once


def test_augmentations_are_laid_out_in_draw_order():
    entries = list(augs.entries().values())
    assert [e.draw_order for e in entries] == sorted(e.draw_order for e in entries)
    assert len({e.draw_order for e in entries}) == len(entries)


def test_two_augmentations_may_share_neither_a_draw_order_nor_a_record_key():
    crop, flip = augs.get("crop"), augs.get("flip")
    same_order = dataclasses.replace(flip, name="flip2", draw_order=crop.draw_order,
                                     record=(dataclasses.replace(flip.record[0], key="f2"),))
    with pytest.raises(ValueError, match="'crop' and 'flip2' share draw_order 0"):
        aug_registry.checked({"crop": crop, "flip2": same_order})
    same_key = dataclasses.replace(flip, name="flip2", draw_order=99)
    with pytest.raises(ValueError, match="record key 'flip' is declared by both 'flip' and"):
        aug_registry.checked({"flip": flip, "flip2": same_key})

"""README's "Extending", done as a user does it. In a copy of the checkout: a new method
(SimCLR's module under another name) and its config, a new augmentation with an AugSelf
head and a CASSLE descriptor (a host brightness offset), and a new default protocol (the
test features' mean norm), each written into exactly the files the README's numbered
items name. Then, in that copy: the registry-driven tests and the newcomers' own tests, a
real `main.py` run and an `evaluate.py` run with all three, and `git status` showing that
no other file changed."""

import json
import os
import re
import subprocess
import textwrap

import pytest
from conftest import copy_checkout, run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The newcomers' names, substituted for the README's placeholders.
NAMES = {"method": "simclr2", "augmentation": "offset", "protocol": "feature_norm"}
# The README's "Extending" blocks, by their bold opening words.
BLOCKS = {"method": "**A method**", "augmentation": "**An augmentation**",
          "protocol": "**An evaluation protocol**"}

_AUGMENTATION = '''
"""A brightness offset on the host: every pixel plus offset * 255, the offset uniform in
[-offset_max, offset_max] where applied."""

import jax.numpy as jnp

from augself_jax.augs.registry import HOST, Augmentation, AugSelfTarget, Descriptor, Field
from augself_jax.errors import ConfigError


def _sample(u, aug, height, width):
    import tensorflow as tf

    on = u["offset_applied"] < aug.offset_prob
    return {"offset": tf.where(on, (2.0 * u["offset"] - 1.0) * aug.offset_max, 0.0)}


def _check(aug, image_size):
    for field, high in (("offset_prob", 1.0), ("offset_max", 1.0)):
        if not 0.0 <= aug[field] <= high:
            raise ConfigError(f"aug.{field}: {aug[field]}; allowed: [0, {high}]")


def _value(p):
    return jnp.asarray(p["offset"], jnp.float32)[..., None]


AUGMENTATION = Augmentation(
    name="offset", stage=HOST, chain=7, draw_order=7,
    defaults={"offset_prob": 0.0, "offset_max": 0.1},
    draws=(("offset_applied", 1), ("offset", 1)),
    record=(Field("offset", (), "float32", (0.0,)),),
    sample=_sample, op=lambda image, p, out_size: image + 255.0 * p["offset"],
    prob_field="offset_prob", caption=lambda rec, i: f"offset {rec['offset'][i]:+.2f}",
    check=_check,
    augself=AugSelfTarget(1, "mse", lambda pa, pb, ranges, reference: _value(pa) - _value(pb)),
    cassle=(Descriptor("offset", 1, lambda p, ranges, reference: _value(p)),),
)
'''

_AUGMENTATION_TEST = '''
import numpy as np
import tensorflow as tf

from augself_jax import augs


def test_op_against_numpy():
    image = np.random.default_rng(0).uniform(0, 200, (5, 5, 3)).astype(np.float32)
    out = augs.get("offset").op(tf.constant(image), {"offset": tf.constant(0.05)}, 5)
    np.testing.assert_allclose(out.numpy(), image + 12.75, rtol=1e-6)


def test_target_and_descriptor_hand_computed():
    entry = augs.get("offset")
    pa, pb = {"offset": np.array([0.05])}, {"offset": np.array([-0.02])}
    np.testing.assert_allclose(entry.augself.target(pa, pb, None, False), [[0.07]], rtol=1e-6)
    np.testing.assert_allclose(entry.cassle[0].value(pa, None, False), [[0.05]], rtol=1e-6)
'''

_PROTOCOL = '''
"""`feature_norm`: the mean L2 norm of one split's features."""

import numpy as np

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation import registry as protocols


class FeatureNorm(common.Evaluator):
    name = "feature_norm"

    def __init__(self, split: str = "test"):
        self.split = split

    @classmethod
    def validate(cls, config) -> None:
        if config.eval.feature_norm_split not in ("train", "val", "test"):
            raise ConfigError(f"eval.feature_norm_split: '{config.eval.feature_norm_split}'; "
                              f"allowed: train, val, test")

    @classmethod
    def from_config(cls, config, context) -> "FeatureNorm":
        return cls(config.eval.feature_norm_split)

    def run(self, features):
        x = features.splits[self.split]["features"]
        return [common.Result(features.name, "mean_norm",
                              float(np.linalg.norm(x, axis=1).mean()), unit="")]


PROTOCOL = FeatureNorm
'''

_PROTOCOL_TEST = '''
import numpy as np
import pytest

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.feature_norm import FeatureNorm
from configs.common import base_config


def test_mean_norm_hand_computed():
    test = {"features": np.array([[3.0, 4.0], [0.0, 1.0]]), "label": np.array([0, 1])}
    (result,) = FeatureNorm().run(common.Features("d", ("label",), {"test": test}))
    assert result.metric == "mean_norm" and result.value == pytest.approx(3.0)


def test_refuses_an_unknown_split():
    config = base_config("shapes")
    config.eval.feature_norm_split = "dev"
    with pytest.raises(ConfigError, match="^eval.feature_norm_split"):
        protocols.validate(config)
'''

_METHOD_TEST = '''
import numpy as np

from augself_jax.methods import simclr2


def test_loss_against_numpy():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    logits = z @ z.T / 0.5
    np.fill_diagonal(logits, -np.inf)
    positive = np.r_[np.arange(4, 8), np.arange(4)]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -np.mean(log_softmax[np.arange(8), positive])
    got = simclr2.nt_xent(np.float32(z1), np.float32(z2), 0.5)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
'''


def _extending_section() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Extending")
    return text[start:text.index("\n## ", start + 1)]


def named_files() -> dict[str, list[str]]:
    """Each block's files: the path each numbered item opens with, placeholders filled."""
    section = _extending_section()
    starts = sorted((section.index(opening), kind) for kind, opening in BLOCKS.items())
    out = {}
    for (start, kind), (end, _) in zip(starts, [*starts[1:], (len(section), None)], strict=True):
        paths = re.findall(r"^\d+\. `([^`]+)`", section[start:end], re.M)
        out[kind] = [re.sub(r"<\w+>", NAMES[kind], p) for p in paths]
    return out


def _git(checkout, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c",
                           "commit.gpgsign=false", *args], cwd=checkout, capture_output=True,
                          text=True, check=True).stdout


def _write(checkout, path, text):
    with open(os.path.join(checkout, path), "w") as f:
        f.write(textwrap.dedent(text).lstrip())


def _edit(checkout, path, pattern, replacement):
    """One substitution of `pattern` in `path`, as a user's edit (it must match once)."""
    full = os.path.join(checkout, path)
    with open(full) as f:
        text = f.read()
    new, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, (path, pattern)
    with open(full, "w") as f:
        f.write(new)


def extend(checkout: str, files: dict[str, list[str]]) -> None:
    """The three extensions, each written into the files `files` names for it."""
    method_module, method_config, method_test = files["method"]
    with open(os.path.join(checkout, "augself_jax", "methods", "simclr.py")) as f:
        source = f.read()
    assert source.count('name="simclr"') == 1
    _write(checkout, method_module, source.replace('name="simclr"', 'name="simclr2"'))
    _write(checkout, method_config, '''
        import ml_collections

        from configs import common


        def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
            return common.experiment(arg, "simclr2")
        ''')
    _write(checkout, method_test, _METHOD_TEST)

    aug_module, aug_test = files["augmentation"]
    _write(checkout, aug_module, _AUGMENTATION)  # draw_order 7: after every existing draw
    _write(checkout, aug_test, _AUGMENTATION_TEST)

    protocol_module, protocol_config, protocol_test = files["protocol"]
    _write(checkout, protocol_module, _PROTOCOL)
    _edit(checkout, protocol_config, r'^(    c\.protocols = "[\w,]+)"$',
          '\\1,feature_norm"\n    c.feature_norm_split = "test"  # the feature_norm protocol')
    _write(checkout, protocol_test, _PROTOCOL_TEST)


# The tests that read the registries (and would catch a hand-written list), with the
# newcomers' own; each selection is small so the whole takes seconds.
REGISTRY_TESTS = [
    "tests/test_methods_simclr2.py", "tests/test_augs_offset.py",
    "tests/test_eval_feature_norm.py",
    "tests/test_augs_registry.py::test_registry_holds_the_chain_method_md_documents",
    "tests/test_augs_registry.py::test_registry_holds_the_record_method_md_documents",
    "tests/test_augs_registry.py::test_augself_and_cassle_keys_are_those_method_md_documents",
    "tests/test_methods_model.py::test_structure_and_variable_types[simclr2]",
    "tests/test_configs.py::test_every_preset_loads_and_validates[simclr2]",
    "tests/test_train_experiments.py::test_every_experiment_file_is_a_registered_method_and_variant",
    "tests/test_eval_protocols.py::test_registry_holds_every_default_protocol_once",
    "tests/test_data_pipeline.py::test_record_packs_into_one_vector_and_back",
]


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    checkout = copy_checkout(tmp_path_factory.mktemp("extending") / "checkout")
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "commit", "-q", "-m", "the checkout as copied")
    files = named_files()
    extend(checkout, files)
    return checkout, files


def test_readme_names_the_files_of_each(extended):
    _, files = extended
    assert ("A method and a protocol take exactly three files each, an augmentation two"
            in _extending_section())
    assert {kind: len(paths) for kind, paths in files.items()} == {
        "method": 3, "augmentation": 2, "protocol": 3}


def test_registry_driven_tests_pass_with_the_newcomers(extended):
    checkout, _ = extended
    r = run_command(["-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                     *REGISTRY_TESTS], cwd=checkout)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = r.stdout.splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), summary  # none skipped
    assert int(summary.split()[0]) >= len(REGISTRY_TESTS), summary


def test_the_listing_shows_the_newcomers(extended):
    checkout, _ = extended
    r = run_command(["-m", "configs"], cwd=checkout)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()

    def listed(prefix):
        line = next(x for x in lines if x.lstrip().startswith(prefix))
        return line.split(": ", 1)[1].split(", ")

    assert "configs/simclr2.py" in listed("experiment configs")
    assert "simclr2" in listed("methods")
    assert "offset" in listed("augmentations")
    assert "offset" in listed("AugSelf heads") and "offset" in listed("CASSLE descriptor keys")
    assert "feature_norm" in listed("protocols")
    assert "feature_norm" in listed("default for stl10")[0].split(",")


@pytest.mark.slow
def test_train_and_evaluate_with_the_newcomers(extended, shapes_data_dir):
    checkout, files = extended
    train = run_command([
        "main.py", "--config=configs/simclr2.py:shapes", "--workdir=runs/ext",
        "--config.total_steps=2", "--config.batch_size=16", "--config.log_every=1",
        "--config.checkpoint_every=2", "--config.knn_every=0", "--config.model.width=4",
        "--config.aug.offset_prob=0.5", "--config.augself.offset=1.0",
        "--config.cassle.enabled=True", "--config.cassle.descriptor_keys=crop,offset",
        f"--config.data.data_dir={shapes_data_dir}"], cwd=checkout)
    assert train.returncode == 0, train.stderr[-3000:]
    out = train.stdout + train.stderr
    assert "step 2/2" in out and "augself/offset" in out, out[-3000:]
    evaluation = run_command([
        "evaluate.py", "--workdir=runs/ext", "--config.eval.protocols=knn,sensitivity,feature_norm",
        "--config.eval.sensitivity.augmentations=offset",
        "--config.eval.sensitivity.strength_augmentations=", "--config.eval.max_examples=200",
        "--config.eval.sensitivity.num_images=16", "--config.eval.batch_size=32"], cwd=checkout)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    with open(os.path.join(checkout, "runs", "ext", "eval", "results.json")) as f:
        results = json.load(f)
    assert any(x["protocol"] == "feature_norm" and x["metric"] == "mean_norm" and x["value"] > 0
               for x in results)
    assert any(x["protocol"] == "sensitivity" and "offset" in json.dumps(x) for x in results)
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(line[3:] for line in changed) == sorted(p for ps in files.values() for p in ps)


def test_no_other_file_changed(extended):
    checkout, files = extended
    changed = _git(checkout, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(line[3:] for line in changed) == sorted(p for ps in files.values() for p in ps)

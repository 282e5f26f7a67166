"""The protocol interface (evaluation/common.py): every protocol is found by the registry,
built from the config in the listed order, checks its own fields in one line, and turns
the same Features into numbers (checked here against brute-force NumPy answers)."""

import numpy as np
import pytest
from test_eval_knn import _brute
from test_train_support import load_config

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common, features, probes
from augself_jax.evaluation import registry as protocols
from augself_jax.evaluation.knn import KnnEvaluator


def _config(**eval_fields):
    c = load_config("simclr_augself", "shapes")
    for key, value in eval_fields.items():
        node = c.eval
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def test_registry_holds_every_default_protocol_once():
    found = protocols.entries()
    default = common.split_list(_config().eval.protocols)
    assert len(default) == len(set(default)) and set(default) <= set(found)
    # Every protocol of the registry runs by default on the built-in data; only one that
    # refuses its datasets (e.g. landmarks, which needs a dataset with landmarks) is left out.
    for name in sorted(set(found) - set(default)):
        with pytest.raises(ConfigError, match="^eval"):
            protocols.validate(_config(protocols=name))
    for name, cls in found.items():
        assert issubclass(cls, common.Evaluator) and cls.name == name
        assert cls.on in ("linear", "fewshot")
    assert found["fewshot"].on == "fewshot"


def test_build_follows_the_listed_order():
    context = common.Context(mesh=features.eval_mesh())
    built = protocols.build(_config(protocols="knn, probe,linear"), context)
    assert [e.name for e in built] == ["knn", "probe", "linear"]
    assert built[0].ks == (1, 20)


@pytest.mark.parametrize("fields, message", [
    ({"protocols": ""}, "^eval.protocols: empty"),
    ({"protocols": "linear,svm"}, "^eval.protocols: 'svm' is unknown"),
    ({"knn_k": "1,zero"}, "^eval.knn_k: 'zero' is not a positive integer"),
    ({"fewshot.shots": "0"}, "^eval.fewshot.shots: '0' is not a positive integer"),
    ({"fewshot.ways": 1}, "^eval.fewshot: ways >= 2"),
    ({"sensitivity.augmentations": "flip,warp"},
     "^eval.sensitivity.augmentations: unknown 'warp'"),
    ({"linear.l2_min": 0.0}, "^eval.linear: need 0 < l2_min"),
])
def test_each_protocol_checks_its_own_fields(fields, message):
    with pytest.raises(ConfigError, match=message) as e:
        protocols.validate(_config(**fields))
    assert "\n" not in str(e.value)


def _features(rng, label_tasks=("label",)):
    def split(n):
        out = {"features": rng.normal(size=(n, 6)).astype(np.float32)}
        for key in label_tasks:
            out[key] = rng.integers(0, 4, n)
        return out

    return common.Features("toy", tuple(label_tasks),
                           {"train": split(200), "val": split(40), "test": split(60)},
                           task_names={k: f"toy/{k}" for k in label_tasks},
                           info={"n_train": 200})


def test_knn_protocol_reports_every_task_and_k_against_brute_force():
    f = _features(np.random.default_rng(0), ("shape", "hue"))
    results = KnnEvaluator(ks=(1, 5)).run(f)
    assert [(r.task, r.metric) for r in results] == [
        ("toy/shape", "top1_k1"), ("toy/shape", "top1_k5"),
        ("toy/hue", "top1_k1"), ("toy/hue", "top1_k5")]
    for r in results:
        key, k = r.task.split("/")[1], int(r.metric.removeprefix("top1_k"))
        tr, te = f.splits["train"], f.splits["test"]
        expected = 100 * np.mean(_brute(tr["features"], tr[key], te["features"], k, 4)
                                 == te[key])
        assert abs(r.value - expected) < 1e-9
        assert r.extra == {"n_train": 200}


def test_probe_protocol_adds_its_image_statistics_and_probes_only_what_is_there():
    rng = np.random.default_rng(1)
    evaluator = probes.ProbeEvaluator()
    images = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    stats = evaluator.image_statistics(images)
    np.testing.assert_allclose(stats["color_hist"].reshape(5, 3, -1).sum(-1), 1.0)
    f = _features(rng)
    for split in f.splits.values():
        n = len(split["features"])
        split["color_hist"] = rng.dirichlet(np.ones(8), n)
    metrics = [r.metric for r in evaluator.run(f)]
    assert metrics == ["color_hist_r2"]  # no hue / position / size keys: no such probes


def test_first_images_are_gathered_over_processes(monkeypatch):
    """Two processes' kept images (process 1 kept fewer): every process gets the first
    `count` valid images, process 0's first, whatever the padding."""
    from jax.experimental import multihost_utils

    from augself_jax.evaluation import run

    rng = np.random.default_rng(2)
    own = [rng.integers(0, 256, (3, 2, 2, 3), dtype=np.uint8)]
    other = rng.integers(0, 256, (2, 2, 2, 3), dtype=np.uint8)

    def allgather(tree, tiled):  # process 1 padded its 2 images to 4 rows
        padded, valid = tree
        other_padded = np.zeros_like(padded)
        other_padded[:2] = other
        return (np.concatenate([padded, other_padded]),
                np.concatenate([valid, np.arange(4) < 2]))

    monkeypatch.setattr(run.jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    got = run._first_images(own, 4, 2)
    np.testing.assert_array_equal(got, np.concatenate([own[0], other[:1]]))

"""Every experiment config (configs/*.py, :shapes preset, tiny sizes) through the real train
step: two steps with finite losses, the metric keys its method and heads must report, and
parameters that moved. This is the default suite's only run of SimSiam's, Barlow Twins' and
supervised pretraining's losses inside the trainer."""

import glob
import os

import numpy as np
import pytest
from test_train_support import ROOT, host_leaves, tiny_config, two_real_steps

from augself_jax.methods import registry

# Every experiment file: not common.py, nor the package's own (__init__, __main__).
EXPERIMENTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs",
                                                                               "*.py"))
                     if os.path.basename(p) != "common.py"
                     and not os.path.basename(p).startswith("_"))


def test_every_experiment_file_is_a_registered_method_and_variant():
    # Derived from the method registry, not a hand-written list: a new method's config
    # files join this suite (and test_configs.py's) by existing.
    variants = ("", "_augself", "_cassle")
    for name in EXPERIMENTS:
        method = next(name[: -len(v)] if v else name for v in reversed(variants)
                      if name.endswith(v))
        assert method in registry.names(), name
        config = tiny_config(name, steps=2)
        assert config.method.name == method
        assert (config.augself.crop > 0) == name.endswith("_augself")
        assert config.cassle.enabled == name.endswith("_cassle")
    assert {n.split("_")[0] for n in EXPERIMENTS} == set(registry.names())


# SimCLR + AugSelf runs through the same step in test_train_sharding, MoCo v3 and SwAV (with
# AugSelf and CASSLE together) in test_methods_new (default suite).
IN_OTHER_TESTS = ("simclr_augself", "mocov3", "mocov3_augself", "mocov3_cassle", "swav",
                  "swav_augself", "swav_cassle")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in IN_OTHER_TESTS else n for n in EXPERIMENTS])
def test_two_real_steps(name):
    config = tiny_config(name, steps=2)
    state, before, history = two_real_steps(config)

    heads = {f"augself/{aug}" for aug, w in config.augself.items()
             if isinstance(w, float) and w > 0}
    expected = {"loss", "ssl_loss", "lr", "grad_norm"} | heads
    if config.method.name == "supervised":
        expected.add("train_acc")
    for metrics in history:
        assert set(metrics) == expected, (name, sorted(metrics))
        assert all(np.isfinite(v) for v in metrics.values()), metrics
        # The total is the method's loss plus each head's weighted term (docs/METHOD.md section 2).
        total = metrics["ssl_loss"] + sum(config.augself[h.split("/")[1]] * metrics[h]
                                          for h in heads)
        assert metrics["loss"] == pytest.approx(total, rel=1e-5, abs=1e-6)
        assert metrics["grad_norm"] > 0
    assert history[1]["loss"] != history[0]["loss"]
    assert int(state.step) == 2
    after = host_leaves(state.params)
    moved = [not np.array_equal(a, b) for a, b in zip(before, after, strict=True)]
    # Kernels behind a zero-initialised batch-norm scale may not move in two steps.
    assert sum(moved) > len(moved) // 2, (name, sum(moved), len(moved))
    if registry.get(config.method.name).momentum is not None:
        target = host_leaves(state.rest["target_backbone"])
        assert all(np.all(np.isfinite(t)) for t in target)

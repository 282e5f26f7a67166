"""The differences from the reference code closed in issue 20: every MLP's biases start as
torch.nn.Linear's, MoCo v3's predictor has no bias (and CASSLE's BN-ended one is an option),
a checkpoint of the former predictor is refused in the resume contract's one line, and
AugSelf's colour head can regress (sin, cos) of the hue difference."""

import numpy as np
import pytest
from conftest import copy_checkout, run_command
from flax import nnx
from test_train_support import tiny_config

from augself_jax.augs import StaticSettings
from augself_jax.aware.augself import pair_targets
from augself_jax.errors import ConfigError
from augself_jax.models.mlp import MLP
from augself_jax.train.resume_contract import check_resume, contract


def test_mlp_biases_start_as_torch_linear_defaults():
    # torch.nn.Linear(32, 4096): bias ~ U(-1/sqrt(32), 1/sqrt(32)); a uniform's sd is
    # bound / sqrt(3). A hidden Linear followed by a BN has no bias at all.
    mlp = MLP(16, [32, 4096], rngs=nnx.Rngs(0))
    assert mlp.linears[0].bias is None
    bias = np.asarray(mlp.linears[1].bias[...])
    bound = 1.0 / np.sqrt(32)
    assert np.abs(bias).max() <= bound
    assert np.abs(bias).max() > 0.99 * bound  # spread over the whole interval, not zeros
    np.testing.assert_allclose(bias.std(), bound / np.sqrt(3), rtol=0.05)
    assert abs(bias.mean()) < 0.01


def _abstract(config):
    from augself_jax.methods import build_model

    return nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))


def test_mocov3_linears_have_no_bias_and_the_predictor_end_is_an_option():
    official = _abstract(tiny_config("mocov3"))
    for head in (official.projector, official.predictor):
        assert all(lin.bias is None for lin in head.linears)  # the official `bias=False`
    assert official.predictor.norms[-1] is None  # ResNet: ends in the Linear
    cassle = _abstract(tiny_config("mocov3", mocov3_predictor_end="bn"))
    last = cassle.predictor.norms[-1]
    assert last is not None and last.scale is None and last.bias is None  # affine-free BN
    vit = tiny_config("mocov3", mocov3_predictor_end="linear")
    vit.model.update(backbone="vit_small", patch_size=8, vit_depth=1)
    vit.data.image_size = 16
    assert _abstract(vit).predictor.norms[-1] is None


def test_a_checkpoint_of_the_former_mocov3_predictor_is_refused_in_one_line(tmp_path):
    config = tiny_config("mocov3")
    current = contract(config, 10)
    old = {k: v for k, v in current.items() if k != "method.mocov3_predictor_end"}
    with pytest.raises(ConfigError) as e:
        check_resume({"contract": old}, current, 7, tmp_path)
    message = str(e.value)
    assert "\n" not in message and message.startswith("resume: the checkpoint at step 7")
    assert 'method.mocov3_predictor_end "linear with a bias' in message and '-> "auto"' in message
    # Its ViT predictor ended in a BN (no bias) then as now; other methods never had one.
    vit = dict(old, **{"model.backbone": "vit_small"})
    check_resume({"contract": vit}, dict(current, **{"model.backbone": "vit_small"}), 7,
                 tmp_path)
    simclr = contract(tiny_config("simclr"), 10)
    check_resume({"contract": {k: v for k, v in simclr.items()
                               if k != "method.mocov3_predictor_end"}}, simclr, 7, tmp_path)


def _records(rng: np.random.Generator, b: int, hue_range: float) -> dict:
    applied = rng.integers(0, 2, b).astype(np.float32)
    color = rng.uniform(0.6, 1.4, (b, 4)).astype(np.float32)
    color[:, 3] = rng.uniform(-hue_range, hue_range, b)
    return {"color": color, "color_applied": applied}


def test_circular_color_target_matches_numpy():
    rng = np.random.default_rng(0)
    ranges = StaticSettings.of(hue=0.5)  # jitter ranges (0.6, 0.6, 0.6, -0.5)..(1.4, 1.4, 1.4, 0.5)
    pa, pb = _records(rng, 64, 0.5), _records(rng, 64, 0.5)
    got = np.asarray(pair_targets(pa, pb, ranges, augs=("color",),
                                  color_target="circular")["color"])
    assert got.shape == (64, 5)
    # brightness, contrast, saturation: (factor - 1) / 0.8 where the jitter ran, per view
    w = [(p["color"][:, :3] - 1.0) / 0.8 * p["color_applied"][:, None] for p in (pa, pb)]
    np.testing.assert_allclose(got[:, :3], w[0] - w[1], atol=1e-6)
    turns = pa["color"][:, 3] * pa["color_applied"] - pb["color"][:, 3] * pb["color_applied"]
    np.testing.assert_allclose(got[:, 3], np.sin(2 * np.pi * turns), atol=1e-5)
    np.testing.assert_allclose(got[:, 4], np.cos(2 * np.pi * turns), atol=1e-5)


def test_circular_target_is_the_same_for_differences_a_turn_apart():
    # Shifts +0.3 / -0.3 (difference 0.6 turn) and -0.2 / +0.2 (-0.4 turn) are one colour
    # relation; the reference's line gives them targets of opposite sign.
    ranges = StaticSettings.of(hue=0.5)  # jitter ranges (0.6, 0.6, 0.6, -0.5)..(1.4, 1.4, 1.4, 0.5)

    def pair(ha, hb):
        rec = lambda h: {"color": np.array([[1.0, 1.0, 1.0, h]], np.float32),  # noqa: E731
                         "color_applied": np.ones(1, np.float32)}
        return rec(ha), rec(hb)

    circular = [np.asarray(pair_targets(*pair(a, b), ranges, augs=("color",),
                                        color_target="circular")["color"])
                for a, b in ((0.3, -0.3), (-0.2, 0.2))]
    np.testing.assert_allclose(circular[0], circular[1], atol=1e-5)
    linear = [float(np.asarray(pair_targets(*pair(a, b), ranges,
                                            augs=("color",))["color"])[0, 3])
              for a, b in ((0.3, -0.3), (-0.2, 0.2))]
    np.testing.assert_allclose(linear, [0.6, -0.4], atol=1e-6)


def test_circular_head_has_five_outputs():
    model = _abstract(tiny_config("simclr", augself={"color": 1.0, "color_target": "circular"}))
    assert model.augself_heads["color"].out_features == 5
    reference = _abstract(tiny_config("simclr", augself={"color": 1.0}))
    assert reference.augself_heads["color"].out_features == 4


@pytest.mark.parametrize("flag, field", [
    ("--config.augself.color_target=polar", "augself.color_target"),
    ("--config.method.mocov3_predictor_end=bias", "method.mocov3_predictor_end")])
def test_bad_values_are_one_line_from_the_command_line(tmp_path, flag, field):
    config = ("configs/mocov3_cassle.py:shapes" if "mocov3" in flag
              else "configs/simclr_augself.py:shapes_hue")
    r = run_command(["main.py", f"--config={config}", "--workdir=runs/bad", flag],
                    cwd=copy_checkout(tmp_path / "checkout"), timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert field in errors[0] and "allowed:" in errors[0]
    assert not (tmp_path / "checkout" / "runs" / "bad").exists()

"""AugSelf targets against hand-computed cases; heads per enabled augmentation; both orders."""

import jax
import jax.numpy as jnp
import numpy as np
from test_methods_support import FAST, build, fast_call, synthetic_batch
from test_train_support import tiny_config

from augself_jax.augs import StaticSettings, records
from augself_jax.aware.augself import HEADS, augself_losses, enabled_augs, pair_targets


def _view(**values) -> dict:
    """One view's record: every key the registry declares at its 'not applied' value, then
    the hand-set `values` the cases below compute their targets from."""
    return {**{k: v[0] for k, v in records.identity_record(1).items()}, **values}


# View a: flipped, jitter ran; view b: not flipped, jitter did not run (identity record).
A = _view(crop=[0.1, 0.2, 0.5, 0.4], flip=1.0, color=[1.2, 0.8, 1.0, 0.05], color_applied=1.0,
          color_mean_shift=[0.01, 0.02, 0.03], gray=0.0, blur=1.0, solarize=1.0, rotation=1)
B = _view(crop=[0.3, 0.1, 0.6, 0.8], flip=0.0, color=[1.0, 1.0, 1.0, 0.0], color_applied=0.0,
          color_mean_shift=[0.0, 0.0, 0.0], gray=1.0, blur=0.0, solarize=0.4, rotation=2)


def batched(rec):
    return {k: jnp.asarray(np.asarray(v)[None]) for k, v in rec.items()}


def targets(pa, pb, reference=False):
    fn = jax.jit(lambda pa, pb: pair_targets(pa, pb, StaticSettings.of(), reference=reference),
                 compiler_options=FAST)
    return {k: np.asarray(v)[0] for k, v in fn(batched(pa), batched(pb)).items()}


def test_targets_hand_computed():
    ab, ba = targets(A, B), targets(B, A)
    # centres: a (0.35, 0.4), b (0.6, 0.5). a is flipped: both x-centres mirrored -> 0.6, 0.5.
    np.testing.assert_allclose(ab["crop"], [0.35 - 0.6, 0.6 - 0.5, 0.5 - 0.6, 0.4 - 0.8], atol=1e-6)
    # b is not flipped: no mirroring in b's frame.
    np.testing.assert_allclose(ba["crop"], [0.6 - 0.35, 0.5 - 0.4, 0.6 - 0.5, 0.8 - 0.4], atol=1e-6)
    # w_a = (0.2/0.8, -0.2/0.8, 0, 0.05/0.2); w_b = 0 (jitter not applied).
    np.testing.assert_allclose(ab["color"], [0.25, -0.25, 0.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(ba["color"], [-0.25, 0.25, 0.0, -0.25], atol=1e-6)
    assert ab["flip"] == [0.0] and ab["gray"] == [0.0]
    np.testing.assert_allclose(ab["blur"], [0.5])  # sigma / max sigma (2.0)
    np.testing.assert_allclose(ba["blur"], [-0.5])
    assert int(ab["rotation"]) == 3 and int(ba["rotation"]) == 1  # (k_a - k_b) mod 4
    np.testing.assert_allclose(ab["solarize"], [0.6], atol=1e-6)
    same = targets(A, A)
    assert same["flip"] == [1.0] and same["gray"] == [1.0]
    np.testing.assert_allclose(same["crop"], 0.0, atol=1e-7)


def test_reference_switch_keeps_raw_blur_sigma():
    np.testing.assert_allclose(targets(A, B, reference=True)["blur"], [1.0])


def test_jitter_not_applied_is_zero_whatever_the_factors():
    stale = dict(B, color=[1.3, 0.7, 1.1, 0.08])  # color_applied is 0: factors must not count
    np.testing.assert_allclose(targets(stale, B)["color"], 0.0, atol=1e-7)


def _ranges(strength, hue=0.1):
    config = tiny_config("simclr")
    config.aug.color_strength = strength
    config.aug.hue = hue
    return StaticSettings.from_aug(config.aug)


def test_color_strength_scales_and_clamps_the_ranges_as_kornia():
    r = _ranges(2.0)  # 0.4 x 2 = 0.8: inside every bound
    np.testing.assert_allclose(r["color"].low, (0.2, 0.2, 0.2, -0.2), atol=1e-7)
    np.testing.assert_allclose(r["color"].high, (1.8, 1.8, 1.8, 0.2), atol=1e-7)
    assert r["blur"].max_sigma == 2.0
    # 0.4 x 3 = 1.2: brightness clamped to [0, 2]; contrast, saturation only below (>= 0);
    # hue 0.2 x 3 = 0.6 clamped to [-0.5, 0.5].
    r = _ranges(3.0, hue=0.2)
    np.testing.assert_allclose(r["color"].low, (0.0, 0.0, 0.0, -0.5), atol=1e-7)
    np.testing.assert_allclose(r["color"].high, (2.0, 2.2, 2.2, 0.5), atol=1e-7)


def test_color_vector_divides_by_the_clamped_width():
    a = dict(A, color=[1.5, 1.5, 0.45, 0.25])
    fn = jax.jit(lambda pa, pb: pair_targets(pa, pb, _ranges(3.0, hue=0.2), augs=("color",)),
                 compiler_options=FAST)
    got = np.asarray(fn(batched(a), batched(B))["color"])[0]
    # widths 2, 2.2, 2.2, 1 (not 2 x 1.2 = 2.4 or 2 x 0.6 = 1.2 unclamped).
    np.testing.assert_allclose(got, [0.5 / 2.0, 0.5 / 2.2, -0.55 / 2.2, 0.25], atol=1e-6)


def test_one_head_per_augmentation_with_positive_weight():
    config = tiny_config("simclr",
                         augself={"crop": 0.5, "color": 1.0, "rotation": 0.0, "gray": 0.1})
    assert enabled_augs(config.augself) == (("crop", 0.5), ("color", 1.0), ("gray", 0.1))
    model = build(config)
    assert set(model.augself_heads.keys()) == {"crop", "color", "gray"}
    for aug, head in model.augself_heads.items():
        assert head.linears[0].in_features == 2 * model.backbone.num_features  # pooled [y1, y2]
        assert head.out_features == HEADS[aug][0]
        assert [lin.out_features for lin in head.linears][:2] == [16, 16]
    assert build(tiny_config("simclr")).augself_heads is None


def test_both_orders_make_the_loss_symmetric_in_the_views():
    config = tiny_config("simclr", augself={a: 1.0 for a in HEADS})
    model = build(config)
    batch = synthetic_batch()
    rng = np.random.default_rng(1)
    y1, y2 = (jnp.asarray(rng.normal(size=(16, 32)), jnp.float32) for _ in range(2))

    def losses(m, y1, y2, p1, p2):
        return augself_losses(m.augself_heads, y1, y2, p1, p2, StaticSettings.of())

    forward = fast_call(model, losses, y1, y2, batch["params1"], batch["params2"])
    swapped = fast_call(model, losses, y2, y1, batch["params2"], batch["params1"])
    assert set(forward) == set(HEADS)
    for aug in HEADS:  # rows [y1,y2]->t12 and [y2,y1]->t21: swapping the views permutes rows
        np.testing.assert_allclose(forward[aug], swapped[aug], rtol=1e-4, atol=1e-6)

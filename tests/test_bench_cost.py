"""benchmarks/bench_cost.py: XLA's cost analysis of the real train step, on abstract shapes."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import bench_cost  # noqa: E402
from step_inputs import make_config  # noqa: E402

TINY = dict(backbone="resnet18", stem="cifar", width=8, image_size=16, small_heads=True)


def _valid_taps(n: int, k: int, stride: int) -> tuple[int, int]:
    """(kernel taps that land inside the image, summed over output positions; output size)
    of a k-wide convolution with k // 2 zero padding along one axis of n pixels. XLA counts
    only these: a tap on the padding multiplies nothing."""
    pad = k // 2
    out = (n + 2 * pad - k) // stride + 1
    taps = sum(1 for i in range(out) for t in range(k) if 0 <= i * stride + t - pad < n)
    return taps, out


def _conv_macs_resnet18_cifar(width: int, size: int) -> int:
    """Multiply-accumulates of ResNet-18's convolutions (CIFAR stem) on one image, by hand."""
    taps, s = _valid_taps(size, 3, 1)
    macs = taps * taps * 3 * width  # stem 3x3, stride 1
    cin = width
    for stage in range(4):
        cout = width * 2**stage
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            taps1, s_out = _valid_taps(s, 3, stride)
            taps2, _ = _valid_taps(s_out, 3, 1)
            macs += taps1 * taps1 * cin * cout + taps2 * taps2 * cout * cout
            if stride != 1 or cin != cout:
                taps_down, _ = _valid_taps(s, 1, stride)  # 1x1 downsample
                macs += taps_down * taps_down * cin * cout
            cin, s = cout, s_out
    return macs


@pytest.fixture(scope="module")
def costs():
    return {(v, b): bench_cost.step_cost(make_config("simclr", v, batch=b, **TINY))
            for v, b in (("plain", 8), ("augself", 8), ("cassle", 8), ("plain", 16))}


def test_step_flops_match_the_backbone_by_hand(costs):
    # Two views, forward (2 FLOPs per MAC) and backward (about twice the forward): ~12 MACs
    # per image; BN, heads, photometric ops and the update add a little on top.
    expected = 12 * 8 * _conv_macs_resnet18_cifar(8, 16)
    plain = costs["plain", 8]
    assert plain.bytes_accessed > 0
    assert expected <= plain.flops <= 1.5 * expected, (plain.flops, expected)


def test_augself_and_cassle_add_flops_and_batch_scales_them(costs):
    plain = costs["plain", 8].flops
    assert costs["augself", 8].flops > plain
    assert costs["cassle", 8].flops > plain
    # Almost all of the step is per-example work: twice the batch, about twice the FLOPs.
    assert 1.9 <= costs["plain", 16].flops / plain <= 2.0


def test_photometric_cost_is_a_positive_part_of_the_step(costs):
    photo = bench_cost.photometric_cost(make_config("simclr", "plain", batch=8, **TINY))
    assert 0 < photo.flops < costs["plain", 8].flops
    assert 0 < photo.bytes_accessed < costs["plain", 8].bytes_accessed


def test_photometric_chain_accesses_fewer_bytes_than_before():
    """Both counts come from the lowered programs (the chain before issue 25 is kept in
    benchmarks/photometric_before.py): the blur's shifted copies were most of the bytes."""
    config = make_config("simclr", "plain", batch=8, **dict(TINY, image_size=32))
    config.aug.blur_kernel = 23  # the ImageNet presets' kernel, where the copies cost most
    now = bench_cost.photometric_cost(config)
    before = bench_cost.photometric_cost(config, before=True)
    # 0.54x here, 0.54x at ResNet-50 / 224 px / batch 256 (docs/RESULTS.md section 3).
    assert 0 < now.bytes_accessed < 0.75 * before.bytes_accessed, (now, before)
    row = bench_cost.photometric_row("r18/32", "simclr", before, before, before=True)
    assert "photometric ops before issue 25" in row and row.endswith("| 100.00% | 100.00% |")

"""benchmarks/bench_cost.py: XLA's cost analysis of the real train step, on abstract shapes."""

import os
import shlex
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


def _readme_command() -> list[str]:
    """The README's `python benchmarks/bench_cost.py` line, as written (comment dropped)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        line = next(x for x in f if x.startswith("python benchmarks/bench_cost.py"))
    return shlex.split(line.split("#", 1)[0])


def check_cost_table(stdout: str, settings: tuple[str, ...], methods: tuple[str, ...]) -> None:
    """bench_cost.py's table: a row per (setting, method, variant), plain at 1.0000 x
    plain, AugSelf's heads adding FLOPs, and the photometric share rows (now and before)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in stdout.splitlines() if line.startswith("| resnet")]
    for setting in settings:
        table = {(m, v): rest for s, m, v, *rest in rows if s == setting}
        for method in methods:
            plain = table[method, "plain"]  # TFLOPs, GB, FLOPs x plain, bytes x plain
            assert float(plain[0]) > 0 and plain[2:] == ["1.0000", "1.0000"], plain
            assert float(table[method, "augself"][2]) > 1.0, (setting, method)  # two heads
            assert float(table[method, "cassle"][2]) >= 1.0, (setting, method)
        shares = [row for row in rows if row[0] == setting and row[1].startswith("photometric")]
        assert len(shares) == 2, shares  # now and before issue 25
        for row in shares:
            assert 0 < float(row[5].rstrip("%")) < 100, row


# Every method, three variants, ResNet-50 / 224 and ResNet-18 / 96 at batch 256: over 30
# minutes on a busy 2-core CPU (lowering only; nothing runs).
@pytest.mark.slow
def test_the_readme_command_runs_as_written(tmp_path):
    from conftest import copy_checkout, run_command

    from augself_jax.methods import registry

    command = _readme_command()
    assert command == ["python", "benchmarks/bench_cost.py"]
    checkout = copy_checkout(tmp_path / "checkout")
    r = run_command(command[1:], cwd=checkout, timeout=4 * 3600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "batch 256" in r.stdout.splitlines()[0]
    check_cost_table(r.stdout, ("resnet50/224", "resnet18/96"), registry.names())

"""Deterministic cost of the train step: XLA's FLOP and byte counts, no timing.

For every registered method, plain, + AugSelf (crop + colour heads) and + CASSLE
(proj-cat), the real train step (photometric ops, method loss, optimizer update, momentum
targets; train/step.py) is lowered on abstract shapes, so nothing runs and no memory is
allocated, and XLA's cost analysis gives its FLOPs and bytes accessed. The ratios to plain
are the AugSelf / CASSLE overhead on any machine, quiet or not. The photometric share is
the cost of the device-side photometric ops and normalisation of both views
(train/step.py prepare_views) over the whole step's; the row after it is the same chain as
it was before it was made cheaper in bytes accessed (issue 25; photometric_before.py).

  python benchmarks/bench_cost.py                       # ResNet-50/224 and ResNet-18/96
  python benchmarks/bench_cost.py --settings=r18_96 --methods=simclr,byol --compiled

By default the counts are of the lowered (unoptimised) program, analysed for the CPU on
any machine: the same everywhere and quick. --compiled counts the program the local
backend compiled (after fusion, so fewer bytes; minutes per step on a CPU). On a GPU the
compiled counts leave out what runs in cuDNN / cuBLAS (the convolutions), so only the
CPU's compiled counts are whole.
"""

import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from step_inputs import VARIANTS, abstract_batch, make_config, method_names  # noqa: E402

# name -> (preset, backbone, stem, image size): the papers' ImageNet-100 and STL-10 settings
# (the preset sets what else differs, e.g. the 23-pixel blur kernel at 224 px).
SETTINGS = {"r50_224": ("imagenet100", "resnet50", "imagenet", 224),
            "r18_96": ("stl10", "resnet18", "imagenet", 96)}


@dataclasses.dataclass(frozen=True)
class Cost:
    flops: float
    bytes_accessed: float


def _cost(lowered, compiled: bool) -> Cost:
    analysis = lowered.compile().cost_analysis() if compiled else lowered.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0]
    return Cost(flops=float(analysis["flops"]), bytes_accessed=float(analysis["bytes accessed"]))


def _lowered(config, fn_of_setup, compiled: bool):
    from augself_jax.train import mesh as mesh_lib
    from augself_jax.train import state as state_lib

    # The lowered program is analysed for the CPU on every machine: a GPU backend gives no
    # analysis before compiling, and its compiled one leaves out the convolutions and matrix
    # products it hands to cuDNN / cuBLAS (a ResNet-50 step counts ~1% of its FLOPs there).
    devices = jax.devices() if compiled else jax.devices("cpu")
    mesh = mesh_lib.make_mesh(config, devices[:1])
    setup = state_lib.make_setup(config, mesh, num_steps=1000)
    batch = abstract_batch(config.batch_size, config.data.image_size,
                           mesh_lib.data_sharded(mesh))
    return fn_of_setup(setup, batch)


def step_cost(config, *, compiled: bool = False) -> Cost:
    """FLOPs and bytes of one train step of `config` on one device (global batch)."""
    from augself_jax.train.step import make_train_step

    def lower(setup, batch):
        return make_train_step(config, setup).lower(setup.abstract_state, batch)

    return _cost(_lowered(config, lower, compiled), compiled)


def photometric_cost(config, *, compiled: bool = False, before: bool = False) -> Cost:
    """FLOPs and bytes of the step's photometric ops + normalisation of both views;
    `before`: of the chain before it was made cheaper in bytes (photometric_before.py)."""
    if before:
        from photometric_before import prepare_views
    else:
        from augself_jax.train.step import prepare_views

    def lower(setup, batch):
        return jax.jit(lambda b: prepare_views(config, b)).lower(batch)

    return _cost(_lowered(config, lower, compiled), compiled)


def cost_table(setting: str, methods: tuple[str, ...], *, batch: int, dtype: str,
               compiled: bool) -> list[str]:
    """Markdown rows: one per (method, variant), then the photometric share."""
    preset, backbone, stem, size = SETTINGS[setting]

    def config(method: str, variant: str):
        return make_config(method, variant, preset=preset, backbone=backbone, stem=stem,
                           image_size=size, batch=batch, dtype=dtype)

    rows = []
    plain_step = None
    for method in methods:
        costs = {v: step_cost(config(method, v), compiled=compiled) for v in VARIANTS}
        plain = costs["plain"]
        plain_step = plain_step or (method, plain)
        for v in VARIANTS:
            c = costs[v]
            rows.append(f"| {backbone}/{size} | {method} | {v} | {c.flops / 1e12:.4f} | "
                        f"{c.bytes_accessed / 1e9:.2f} | {c.flops / plain.flops:.4f} | "
                        f"{c.bytes_accessed / plain.bytes_accessed:.4f} |")
    method, plain = plain_step
    photo = photometric_cost(config(method, "plain"), compiled=compiled)
    rows.append(photometric_row(f"{backbone}/{size}", method, photo, plain))
    old = photometric_cost(config(method, "plain"), compiled=compiled, before=True)
    rows.append(photometric_row(f"{backbone}/{size}", method, old, plain, before=True))
    return rows


def photometric_row(setting: str, method: str, photo: Cost, plain: Cost,
                    before: bool = False) -> str:
    """The photometric ops' share of the plain step, in percent (as the README quotes it);
    `before`: the row of the chain before it was made cheaper in bytes (issue 25)."""
    ops = "photometric ops before issue 25" if before else "photometric ops"
    return (f"| {setting} | {ops} (both views) | share of plain {method} | "
            f"{photo.flops / 1e12:.4f} | {photo.bytes_accessed / 1e9:.2f} | "
            f"{100 * photo.flops / plain.flops:.2f}% | "
            f"{100 * photo.bytes_accessed / plain.bytes_accessed:.2f}% |")


def define_flags() -> None:
    """The command line (defined only when run as a script: bench_overhead and the tests
    import this module, and absl refuses a flag defined twice)."""
    flags.DEFINE_list("methods", [], "Methods to count (default: every registered method).")
    flags.DEFINE_list("settings", ["r50_224", "r18_96"], f"Any of {', '.join(SETTINGS)}.")
    flags.DEFINE_integer("batch", 256, "Global batch.")
    flags.DEFINE_string("dtype", "float32", "model.dtype (the compute dtype).")
    flags.DEFINE_bool("compiled", False,
                      "Count the compiled program (slow on a CPU) instead of the lowered one.")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    methods = tuple(args.methods) or method_names()
    settings = list(args.settings)
    for s in settings:
        if s not in SETTINGS:
            sys.exit(f"--settings: unknown '{s}'; allowed: {', '.join(SETTINGS)}")
    counted = f"compiled for {jax.default_backend()}" if args.compiled else "lowered"
    print(f"train-step cost ({counted}), batch {args.batch}, {args.dtype}, one device")
    print("| backbone/px | method | variant | TFLOPs | GB accessed | FLOPs x plain | "
          "bytes x plain |")
    print("|---|---|---|---|---|---|---|")
    for s in settings:
        for row in cost_table(s, methods, batch=args.batch, dtype=args.dtype,
                              compiled=args.compiled):
            print(row, flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)

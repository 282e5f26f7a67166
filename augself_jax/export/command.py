"""The export command: `python -m augself_jax.export` and the `augself-export` entry point.

  python -m augself_jax.export --workdir=W [--step N|best] --format=torchvision|timm|detectron2
      --out=FILE [--momentum_encoder]

Every bad input (a flag, a format that does not hold the run's backbone, a missing workdir
or step, an --out that cannot be written, --momentum_encoder for a method without one) is
one line `config error: <field>: ...` on stderr, exit status 2, before the checkpoint is
read and with nothing written; the file appears whole or not at all.
"""

import argparse
import json
import logging
import sys
import traceback

from augself_jax.errors import ConfigError, UserError
from augself_jax.export import formats, writing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit 2
        raise ConfigError(f"flags: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m augself_jax.export",
                description="Writes a pretraining run's backbone as a torchvision or timm "
                "safetensors file or a detectron2 pickle (README: Use the backbone elsewhere).")
    p.add_argument("--workdir", required=True, help="The pretraining run's workdir.")
    p.add_argument("--step", default=None,
                   help="A step number, or 'best' (the best kNN-monitor checkpoint); "
                        "default: the latest.")
    p.add_argument("--format", required=True, dest="format",
                   help=f"One of {', '.join(formats.FORMATS)}.")
    p.add_argument("--out", required=True, help="The file to write (replaced if it exists).")
    p.add_argument("--momentum_encoder", action="store_true",
                   help="Export the momentum encoder (MoCo, MoCo v3, BYOL) instead.")
    p.add_argument("--verbose", action="store_true", help="A user error's traceback too.")
    return p


def _load_hint(fmt: str, config) -> str:
    """The PyTorch line(s) that load the file, for this run's backbone."""
    m = config.model
    if fmt == "timm":
        depth = f", depth={int(m.vit_depth)}" if int(m.vit_depth) else ""
        return (f"timm.create_model('{m.backbone}_patch16_224', num_heads=12, "
                f"patch_size={int(m.patch_size)}, img_size={int(config.data.image_size)}"
                f"{depth}, num_classes=0)  # num_heads=12: MoCo v3's ViT; timm's ViT-S has 6")
    if fmt == "detectron2":
        return (f"detectron2: MODEL.WEIGHTS=<file> with MODEL.RESNETS.DEPTH="
                f"{m.backbone.removeprefix('resnet')}, MODEL.RESNETS.STEM_OUT_CHANNELS="
                f"{int(m.width)}, MODEL.RESNETS.RES2_OUT_CHANNELS="
                f"{int(m.width) * (1 if m.backbone == 'resnet18' else 4)}")
    hint = f"model = torchvision.models.{m.backbone}(); model.fc = torch.nn.Identity()"
    if m.stem == "cifar":
        hint += (f"; model.conv1 = torch.nn.Conv2d(3, {int(m.width)}, 3, 1, 1, bias=False); "
                 "model.maxpool = torch.nn.Identity()")
    if int(m.width) != 64:
        hint += f"  (width {int(m.width)}: a thin network; see docs/EXPORT.md)"
    return hint


def _normalisation(config) -> str:
    from augself_jax.data import registry as datasets

    try:
        info = datasets.get(config.data.dataset)
    except ConfigError:
        return ""
    return f"; inputs {config.data.image_size} px, normalised with mean {info.mean} std {info.std}"


def export(workdir: str, fmt: str, out: str, step: str | None = None,
           momentum_encoder: bool = False) -> str:
    """Writes WORKDIR's backbone (at `step`) to `out` in format `fmt`; returns the summary
    line. ConfigError / CheckpointError (one line) for any bad input, with nothing written."""
    formats.check_format(fmt)
    from augself_jax import trained_config
    from augself_jax.app import absolute_workdir
    from augself_jax.workdir import check_workdir

    workdir = absolute_workdir(workdir)  # Orbax refuses relative paths
    check_workdir(workdir, must_exist=True)
    config = trained_config.load(workdir)
    formats.check_fits(fmt, config.model)
    from augself_jax.export import source

    if momentum_encoder:
        source.check_momentum(config)
    from augself_jax.checkpoints.restore import parse_step

    picked = parse_step(step)
    writing.check_writable(out)
    nested, step_number = source.restore_arrays(workdir, config, picked, momentum_encoder)
    data, count, size = _serialised(fmt, nested, config, step_number, momentum_encoder)
    writing.write_atomically(out, data)
    m = config.model
    encoder = "momentum encoder" if momentum_encoder else "backbone"
    shape = (f"stem {m.stem}, width {m.width}" if m.backbone.startswith("resnet")
             else f"patch {m.patch_size}, depth {int(m.vit_depth) or 12}")
    return (f"wrote {out}: the {encoder} of {m.backbone} ({shape}) at step {step_number}, "
            f"{fmt} layout, {count} arrays, {size / 1e6:.2f}M values{_normalisation(config)}\n"
            f"load it with: {_load_hint(fmt, config)}")


def _serialised(fmt: str, nested: dict, config, step: int,
                momentum: bool) -> tuple[bytes, int, int]:
    """(the file's bytes, the number of arrays, the number of values)."""
    from augself_jax.export import to_detectron2, to_timm, to_torchvision

    m = config.model
    if fmt == "detectron2":
        tensors = to_detectron2.state_dict(nested, m.backbone, step)
        data = to_detectron2.pickled(tensors)
    else:
        from safetensors.numpy import save

        if fmt == "timm":
            tensors = to_timm.state_dict(nested, int(config.data.image_size) // int(m.patch_size))
        else:
            tensors = to_torchvision.state_dict(nested, m.backbone, step)
        metadata = {"format": "pt", "source": "augself_jax", "layout": fmt, "step": str(step),
                    "encoder": "momentum" if momentum else "online",
                    "model": json.dumps(m.to_dict(), sort_keys=True),
                    "image_size": str(config.data.image_size),
                    "dataset": str(config.data.dataset)}
        data = save(tensors, metadata=metadata)
    return data, len(tensors), sum(int(t.size) for t in tensors.values())


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    print(export(args.workdir, args.format, args.out, args.step, args.momentum_encoder),
          flush=True)


def _quiet_read_only_warnings() -> None:
    """Orbax warns on every read-only open of a checkpoint directory, which is all this
    command does."""
    logging.getLogger("absl").addFilter(
        lambda record: "Given directory is read only" not in record.getMessage())


def run() -> None:
    """The `augself-export` entry point (also `python -m augself_jax.export`)."""
    argv = sys.argv[1:]
    _quiet_read_only_warnings()
    try:
        main(argv)
    except UserError as e:
        if "--verbose" in argv:
            traceback.print_exc()
        print(f"{e.label}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_status)

"""The export to PyTorch (augself_jax/export), checked against the real libraries on the CPU.

Each file is loaded into the library's own model (torchvision's `resnet18` / `resnet50`,
timm's `vit_small_patch16_224` with `num_heads=12`) with a strict `load_state_dict`, and the
features of the same images in eval mode must equal this codebase's within 1e-4 relative
(float32 on both sides; the differences seen are ~1e-6). detectron2 does not install from
PyPI: its file's names are checked against detectron2's documented ResNet naming, built here
from its layout, and against MoCo's conversion rules applied to the torchvision file.

Default suite: the command on the shared tiny run (MoCo + AugSelf, ResNet-18 width 8 with
the CIFAR stem: online and momentum encoder), the ResNet-50 / detectron2 and ViT-S
converters on randomly initialised backbones with random normalisation statistics (no
training, seconds), and the one-line refusals. `slow`: two-step runs of a stock-width
ResNet-18 (torchvision's `resnet18` unchanged, and detectron2), a ResNet-50 (BYOL's
momentum encoder) and a ViT-S/16 (MoCo v3) through `main.py`, then the command.

torchvision: requirements-test.txt pins torch 2.13.0 and torchvision 0.28.0. Where torch is the
CPU build (a machine with its wheel on disk), PyPI's torchvision, built against CUDA torch,
cannot load its C extension (detection ops such as nms), and its import then stops
registering fake kernels for `torchvision::nms` / `qnms`. `_torchvision` declares those two
operator schemas when, and only when, the extension does not load; the models are
torchvision's own Python modules, which use only PyTorch's operators.
"""

import glob
import importlib.util
import os
import pickle
import shlex
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import copy_checkout, run_command
from flax import nnx

RTOL = 1e-4


def _torchvision():
    """`import torchvision`, working around its C extension where it cannot load (above)."""
    spec = importlib.util.find_spec("torchvision")
    extension = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    try:
        torch.ops.load_library(extension[0])
    except (OSError, IndexError):
        if not hasattr(_torchvision, "schemas"):
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _torchvision.schemas = library  # kept alive: dropping it removes the schemas
    import torchvision

    return torchvision


def _timm():
    _torchvision()
    import timm

    return timm


def _images(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """Normalised images, NHWC float32 (what the backbones see)."""
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _torch_features(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _assert_same_features(got: np.ndarray, want: np.ndarray) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * float(np.abs(want).max()))


def _thinned(model: torch.nn.Module, width: int) -> torch.nn.Module:
    """torchvision's ResNet with every layer's channels times width / 64 (the images' 3 kept):
    the network this codebase builds at `model.width=width`, run by torchvision's forward."""
    f = width / 64
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Conv2d):
                cin = 3 if child.in_channels == 3 else round(child.in_channels * f)
                setattr(parent, name, torch.nn.Conv2d(
                    cin, round(child.out_channels * f), child.kernel_size, child.stride,
                    child.padding, bias=False))
            elif isinstance(child, torch.nn.BatchNorm2d):
                setattr(parent, name, torch.nn.BatchNorm2d(round(child.num_features * f),
                                                           eps=child.eps))
    return model


def _torchvision_resnet(name: str, *, width: int, stem: str) -> torch.nn.Module:
    """docs/EXPORT.md's lines: torchvision's model, `fc` dropped, the CIFAR stem's two lines."""
    model = getattr(_torchvision().models, name)()
    if width != 64:
        model = _thinned(model, width)
    model.fc = torch.nn.Identity()
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(3, width, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model


def _load_safetensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _run_features(workdir: str, images: np.ndarray, step=None, module="backbone"):
    """This codebase's features of WORKDIR's checkpoint (evaluation's restore)."""
    from augself_jax import trained_config
    from augself_jax.checkpoints import restore_backbone

    config = trained_config.load(workdir)
    backbone, _ = restore_backbone(workdir, config, step, module=module)
    return np.asarray(backbone(jnp.asarray(images)))


def _export(checkout: str, *flags: str):
    return run_command(["-m", "augself_jax.export", *flags], cwd=checkout)


def _readme_export(fmt: str) -> list[str]:
    """The README's export command for `fmt`, as written there (after `python`)."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "README.md")
    lines = [line for line in open(readme).read().splitlines()
             if line.startswith("python -m augself_jax.export ") and f"--format={fmt}" in line]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def _flag(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


# --- detectron2's naming, from its documented ResNet layout -------------------------------

def _detectron2_names(depths: tuple[int, ...], convs: int) -> set[str]:
    """detectron2's ResNet (build_resnet_backbone): `stem.conv1` with its `norm`, then
    stages res2..res5 of `depths` blocks, each block conv1..conv<convs> with their `norm`
    and, in the first block of a stage (where channels or stride change), `shortcut`."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def conv(prefix: str) -> set[str]:
        return {f"{prefix}.weight"} | {f"{prefix}.norm.{b}" for b in bn}

    names = conv("stem.conv1")
    for stage, depth in enumerate(depths):
        for j in range(depth):
            for c in range(1, convs + 1):
                names |= conv(f"res{stage + 2}.{j}.conv{c}")
            if j == 0 and not (stage == 0 and convs == 2):  # R18's res2 keeps 64 channels
                names |= conv(f"res{stage + 2}.{j}.shortcut")
    return names


def _moco_rename(name: str) -> str:
    """MoCo's convert-pretrain-to-detectron2.py rules, applied to a torchvision name."""
    if "layer" not in name:
        name = "stem." + name
    for t in (1, 2, 3, 4):
        name = name.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        name = name.replace(f"bn{t}", f"conv{t}.norm")
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _check_detectron2(path_or_bytes, torchvision_state: dict, depths, convs) -> None:
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    obj = pickle.loads(raw)
    assert set(obj) == {"model", "__author__", "matching_heuristics"}
    assert obj["matching_heuristics"] is True
    model = obj["model"]
    assert all(isinstance(v, np.ndarray) for v in model.values())
    assert set(model) == _detectron2_names(depths, convs)
    renamed = {_moco_rename(k): np.asarray(v) for k, v in torchvision_state.items()}
    assert set(renamed) == set(model)
    for name, value in renamed.items():
        np.testing.assert_array_equal(model[name], value, err_msg=name)


# --- the command on the shared tiny run ----------------------------------------------------

def test_readme_torchvision_command_gives_resnet18_with_the_same_features(tiny_run):
    """The README's command as written, on a copy of the tiny run named as there."""
    checkout, tiny, _ = tiny_run
    args = _readme_export("torchvision")
    workdir = _flag(args, "workdir")
    if not os.path.isdir(os.path.join(checkout, workdir)):
        shutil.copytree(os.path.join(checkout, tiny), os.path.join(checkout, workdir))
    out = os.path.join(checkout, _flag(args, "out"))
    r = run_command(args, cwd=checkout)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"wrote {_flag(args, 'out')}" in r.stdout and "at step 2" in r.stdout
    assert not [p for p in os.listdir(os.path.dirname(out)) if ".partial" in p]

    state = _load_safetensors(out)
    model = _torchvision_resnet("resnet18", width=8, stem="cifar")
    expected = {k for k in model.state_dict()}
    assert set(state) == expected  # every torchvision name, nothing more (no fc)
    assert int(state["bn1.num_batches_tracked"]) == 2
    model.load_state_dict(state, strict=True)

    images = _images()
    _assert_same_features(_torch_features(model, images),
                          _run_features(os.path.join(checkout, workdir), images))

    from safetensors import safe_open

    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    assert meta["layout"] == "torchvision" and meta["step"] == "2"
    assert meta["encoder"] == "online"


def test_momentum_encoder_is_the_target_backbone(tiny_run, tmp_path):
    checkout, workdir, _ = tiny_run
    out = tmp_path / "momentum.safetensors"
    r = _export(checkout, f"--workdir={workdir}", "--step=2", "--format=torchvision",
                f"--out={out}", "--momentum_encoder")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the momentum encoder of resnet18" in r.stdout and "at step 2" in r.stdout

    images = _images(seed=1)
    model = _torchvision_resnet("resnet18", width=8, stem="cifar")
    model.load_state_dict(_load_safetensors(out), strict=True)
    got = _torch_features(model, images)
    run = os.path.join(checkout, workdir)
    _assert_same_features(got, _run_features(run, images, step=2, module="target_backbone"))
    # Step 2 is the first with a learning rate above 0 (warm-up): the online encoder moved,
    # the momentum encoder (momentum 0.99) followed 1% of the way.
    assert not np.allclose(got, _run_features(run, images, step=2), rtol=1e-3)


def test_refusals_are_one_line_before_anything_is_written(tiny_run, tmp_path):
    """Through the command line once (exit 2, one line, no file); the other refusals
    in-process (the same function, without a Python start-up each)."""
    from augself_jax.errors import ConfigError
    from augself_jax.export.command import main

    checkout, workdir, _ = tiny_run
    run = os.path.join(checkout, workdir)
    out = tmp_path / "x.safetensors"
    r = _export(checkout, f"--workdir={workdir}", "--format=timm", f"--out={out}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "config error: format: timm holds Vision Transformers, and this run's model.backbone "
        "is resnet18; allowed for this run: torchvision")
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()

    def refused(*flags: str) -> str:
        with pytest.raises(ConfigError) as e:
            main([f"--workdir={run}", f"--out={out}", *flags])
        assert not out.exists()
        return str(e.value)

    assert refused("--format=onnx") == (
        "format: 'onnx' is not an export format; allowed: torchvision, timm, detectron2")
    assert refused("--format=detectron2").startswith(
        "format: detectron2's ResNet stem is a 7x7 convolution and a max-pool, and this run's "
        "model.stem is cifar")
    assert refused("--format=torchvision", "--step=7") == (
        f"step: no checkpoint at step 7 in {run}/checkpoints; allowed: 1, 2 or best")
    assert refused("--format=torchvision", "--step=last").startswith(
        "step: 'last' is not a checkpoint step")
    assert refused("--format=torchvision", "--bogus").startswith(
        "flags: unrecognized arguments: --bogus")
    with pytest.raises(ConfigError, match="^flags: the following arguments are required: "
                                          "--format"):
        main([f"--workdir={run}", f"--out={out}"])
    with pytest.raises(ConfigError, match="^out: .* is a directory"):
        main([f"--workdir={run}", f"--out={tmp_path}", "--format=torchvision"])
    with pytest.raises(ConfigError, match="^out: the directory .*missing does not exist"):
        main([f"--workdir={run}", f"--out={tmp_path}/missing/x", "--format=torchvision"])
    with pytest.raises(ConfigError, match="^workdir: .* does not exist"):
        main([f"--workdir={tmp_path}/nowhere", f"--out={out}", "--format=torchvision"])

    # A method without a momentum encoder: the run's config.json with SimCLR's name.
    simclr = tmp_path / "simclr_run"
    simclr.mkdir()
    text = open(os.path.join(run, "config.json")).read()
    assert '"name": "moco"' in text
    (simclr / "config.json").write_text(text.replace('"name": "moco"', '"name": "simclr"'))
    with pytest.raises(ConfigError) as e:
        main([f"--workdir={simclr}", f"--out={out}", "--format=torchvision",
              "--momentum_encoder"])
    assert str(e.value) == ("momentum_encoder: the run's method simclr keeps no momentum "
                            "encoder; allowed with byol, moco, mocov3")
    assert not out.exists()


# --- the converters on random backbones (no training) ---------------------------------------

def _random_backbone(make) -> nnx.Module:
    """The module `make` builds, in eval mode, with every array drawn at random: kernels
    He-normal, norm scales in [0.5, 1.5], biases and BatchNorm means ~ N(0, 0.1), variances
    in [0.5, 2] (init's 1, 0, 0, 1 and zero last-BN scales would hide a mix-up). Drawn in
    NumPy into the abstract module: building a ResNet-50 op by op costs ~20 s of CPU."""
    import jax

    rng = np.random.default_rng(0)
    graphdef, state = nnx.split(nnx.eval_shape(make))

    def draw(path, leaf):
        name = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        shape = leaf.shape
        if name in ("kernel", "patch_kernel"):
            x = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        elif name in ("scale",):
            x = rng.uniform(0.5, 1.5, shape)
        elif name == "var":
            x = rng.uniform(0.5, 2.0, shape)
        else:  # bias, patch_bias, mean, cls_token
            x = rng.normal(0, 0.1, shape)
        return jnp.asarray(x, leaf.dtype)

    module = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))
    module.eval()
    return module


def _jax_features(module: nnx.Module, images: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, x: m(x))(module, jnp.asarray(images)))


def _nested(module: nnx.Module) -> dict:
    import jax

    from augself_jax.checkpoints import to_nested

    return jax.tree.map(np.asarray, to_nested(nnx.state(module)))


def test_resnet50_converters_match_torchvision_and_detectron2_naming():
    from augself_jax.export import to_detectron2, to_torchvision
    from augself_jax.models.resnet import ResNet

    ours = _random_backbone(lambda: ResNet("resnet50", stem="imagenet", width=8,
                                           rngs=nnx.Rngs(0)))
    nested = _nested(ours)
    state = to_torchvision.state_dict(nested, "resnet50", step=5)
    model = _torchvision_resnet("resnet50", width=8, stem="imagenet")
    assert set(state) == set(model.state_dict())
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()},
                          strict=True)
    images = _images()
    _assert_same_features(_torch_features(model, images), _jax_features(ours, images))

    _check_detectron2(to_detectron2.pickled(to_detectron2.state_dict(nested, "resnet50", 5)),
                      state, depths=(3, 4, 6, 3), convs=3)


def test_vit_small_converter_matches_timm_with_12_heads():
    from augself_jax.export import to_timm
    from augself_jax.models.vit import ViT

    ours = _random_backbone(lambda: ViT("vit_small", 32, 16, depth=2, rngs=nnx.Rngs(0)))
    state = {k: torch.tensor(v) for k, v in to_timm.state_dict(_nested(ours), 2).items()}
    timm = _timm()
    model = timm.create_model("vit_small_patch16_224", num_heads=12, depth=2, img_size=32,
                              num_classes=0, pretrained=False)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    images = _images(seed=2)
    want = _jax_features(ours, images)
    _assert_same_features(_torch_features(model, images), want)

    # timm's stock ViT-S (6 heads) takes the same file without an error and computes
    # other features: the README's warning.
    stock = timm.create_model("vit_small_patch16_224", depth=2, img_size=32, num_classes=0,
                              pretrained=False)
    stock.load_state_dict(state, strict=True)
    assert not np.allclose(_torch_features(stock, images), want, rtol=1e-2, atol=1e-3)


# --- slow: runs trained here through main.py, then the command ------------------------------

def _train(tmp_path_factory, shapes_data_dir, workdir: str, config: str,
           *flags: str) -> str:
    """A copy of the checkout holding a two-step run of `config` in `workdir`."""
    checkout = copy_checkout(tmp_path_factory.mktemp("export_run") / "checkout")
    r = run_command(["main.py", f"--config={config}", f"--workdir={workdir}",
                     "--config.total_steps=2", "--config.batch_size=16",
                     "--config.checkpoint_every=1", "--config.log_every=1",
                     "--config.knn_every=0", f"--config.data.data_dir={shapes_data_dir}",
                     *flags], cwd=checkout, timeout=1800)  # a ResNet-50 compile is slow
    assert r.returncode == 0, r.stderr[-3000:]
    return checkout


@pytest.mark.slow
def test_readme_detectron2_command_and_a_stock_resnet18(shapes_data_dir, tmp_path_factory):
    """A width-64 ResNet-18 with the ImageNet stem (MoCo, two steps), in the README's
    detectron2 workdir: its command as written (the momentum encoder), and the same encoder
    for torchvision's `resnet18`, unchanged but for the classifier."""
    args = _readme_export("detectron2")
    workdir = _flag(args, "workdir")
    checkout = _train(tmp_path_factory, shapes_data_dir, workdir, "configs/moco_augself.py:shapes",
                      "--config.model.width=64", "--config.model.stem=imagenet",
                      "--config.method.queue_size=32")
    r = run_command(args, cwd=checkout)
    assert r.returncode == 0, r.stderr[-2000:]
    out = os.path.join(checkout, workdir, "r18.safetensors")
    r = _export(checkout, f"--workdir={workdir}", "--format=torchvision", f"--out={out}",
                "--momentum_encoder")
    assert r.returncode == 0, r.stderr[-2000:]
    model = _torchvision().models.resnet18()
    model.fc = torch.nn.Identity()
    state = _load_safetensors(out)
    model.load_state_dict(state, strict=True)
    images = _images(seed=3)
    _assert_same_features(_torch_features(model, images), _run_features(
        os.path.join(checkout, workdir), images, module="target_backbone"))
    _check_detectron2(os.path.join(checkout, _flag(args, "out")),
                      {k: v.numpy() for k, v in state.items()}, depths=(2, 2, 2, 2), convs=2)


@pytest.mark.slow
def test_resnet50_momentum_encoder_from_a_byol_run(shapes_data_dir, tmp_path_factory,
                                                   tmp_path):
    workdir = "runs/byol_r50"
    checkout = _train(tmp_path_factory, shapes_data_dir, workdir,
                      "configs/byol_augself.py:shapes", "--config.model.backbone=resnet50")
    out = tmp_path / "r50.safetensors"
    r = _export(checkout, f"--workdir={workdir}", "--format=torchvision", f"--out={out}",
                "--momentum_encoder", "--step=2")
    assert r.returncode == 0, r.stderr[-2000:]
    model = _torchvision_resnet("resnet50", width=8, stem="cifar")
    model.load_state_dict(_load_safetensors(out), strict=True)
    images = _images(seed=4)
    _assert_same_features(_torch_features(model, images), _run_features(
        os.path.join(checkout, workdir), images, step=2, module="target_backbone"))


@pytest.mark.slow
def test_readme_timm_command_gives_vit_small_with_the_same_features(shapes_data_dir,
                                                                    tmp_path_factory):
    """A two-block ViT-S/16 (MoCo v3, two steps) in the README's timm workdir, exported by
    its command as written and loaded as docs/EXPORT.md loads it (num_heads=12)."""
    args = _readme_export("timm")
    workdir = _flag(args, "workdir")
    checkout = _train(tmp_path_factory, shapes_data_dir, workdir,
                      "configs/mocov3.py:shapes,vit_small", "--config.model.vit_depth=2")
    r = run_command(args, cwd=checkout)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "num_heads=12" in r.stdout
    model = _timm().create_model("vit_small_patch16_224", num_heads=12, depth=2, img_size=32,
                                 num_classes=0, pretrained=False)
    model.load_state_dict(_load_safetensors(os.path.join(checkout, _flag(args, "out"))),
                          strict=True)
    images = _images(seed=5)
    _assert_same_features(_torch_features(model, images),
                          _run_features(os.path.join(checkout, workdir), images))

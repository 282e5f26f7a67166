"""Shared pieces of every experiment config.

Each experiment file (`configs/simclr_augself.py`, ...) calls `base_config(preset)`
and then sets its method, AugSelf weights or CASSLE switch. Every field can be
overridden on the command line, e.g. `--config.optimizer.base_lr=0.05`.

Presets: `stl10` (default), `imagenet100`, `imagenet1k` (large-batch LARS, bfloat16),
`cifar10`, `shapes` (the built-in dataset), and
the AugSelf reference's two STL-10 variants: `stl10_sol` (solarize with probability 0.5 after
the colour jitter) and `stl10_rot` (a random 0/90/180/270-degree rotation with probability 0.5).
An experiment file also takes `preset,backbone` (e.g. `configs/mocov3.py:stl10,vit_small`): the
backbone is set before the method's reference recipe for it is applied.
"""

import ml_collections

from augself_jax import augs

PRESETS = ("stl10", "imagenet100", "imagenet1k", "cifar10", "shapes", "stl10_sol", "stl10_rot",
           "shapes_hue")
# A variant preset is its base preset with one augmentation switched on (the reference's
# `--dataset stl10_sol` / `stl10_rot`: STL-10 with an extra op at probability 0.5).
VARIANTS = {"stl10_sol": ("stl10", "solarize_prob"), "stl10_rot": ("stl10", "rotation_prob")}

# The augmentations AugSelf can predict (docs/METHOD.md section 2) and the keys CASSLE can
# describe (section 3): whatever the augmentation registry (augself_jax/augs) holds.
AUGSELF_KEYS = tuple(e.name for e in augs.augself_entries())
CASSLE_KEYS = tuple(sorted(augs.descriptors()))


# The ImageNet presets: ResNet-50 at 224 px in bfloat16 compute, the 23-pixel blur kernel.
IMAGENET_PRESETS = ("imagenet100", "imagenet1k")


def data_config(preset: str) -> ml_collections.ConfigDict:
    """Which dataset, at what size, and how tf.data reads it."""
    c = ml_collections.ConfigDict()
    c.dataset = {"stl10": "stl10", "imagenet100": "imagenet100", "imagenet1k": "imagenet1k",
                 "cifar10": "cifar10", "shapes": "shapes"}[preset]
    c.image_size = {"stl10": 96, "imagenet100": 224, "imagenet1k": 224, "cifar10": 32,
                    "shapes": 32}[preset]
    c.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default
    # "" = the registry's splits (stl10 pretrains on "train+unlabeled"); "+" joins splits.
    c.train_split = ""
    c.test_split = ""
    c.shuffle_files = True
    c.prefetch = 2  # batches prefetched by tf.data
    # Global batches transferred to the devices ahead of the step, overlapping the copy with
    # the compute (0: each batch is transferred when the step asks for it).
    c.device_prefetch = 2
    c.num_parallel_calls = -1  # -1: tf.data.AUTOTUNE
    return c


def aug_config(preset: str) -> ml_collections.ConfigDict:
    """The two-view augmentation chain of docs/METHOD.md section 1: every registered
    augmentation's fields and defaults (each documented in its augself_jax/augs module)."""
    c = ml_collections.ConfigDict(augs.config_defaults())
    if preset in IMAGENET_PRESETS:
        c.blur_kernel = 23  # the reference's kernel at 224 px (9 at 96 px)
    # solarize_prob and rotation_prob are 0 here; the stl10_sol / stl10_rot presets set 0.5.
    return c


def model_config(preset: str) -> ml_collections.ConfigDict:
    """The backbone: resnet18 | resnet50 (stem, width) or vit_small | vit_base (patch_size)."""
    c = ml_collections.ConfigDict()
    c.backbone = "resnet50" if preset in IMAGENET_PRESETS else "resnet18"
    c.stem = "cifar" if preset in ("cifar10", "shapes") else "imagenet"
    c.width = 64  # channels of the first stage; the shapes preset uses a thin net
    # Compute dtype; parameters, losses and batch-norm statistics are always float32. The
    # ImageNet presets are for accelerators, where bfloat16 is what runs fast.
    c.dtype = "bfloat16" if preset in IMAGENET_PRESETS else "float32"
    c.patch_size = 16  # ViTs (vit_small, vit_base) only
    c.vit_depth = 0  # ViTs: 0 keeps the named size's 12 blocks; tests use fewer
    return c


def method_config() -> ml_collections.ConfigDict:
    """Base-method hyperparameters (docs/METHOD.md section 4). The fields every method may read are
    here; each method's own fields (e.g. `moco_momentum`, `byol_tau_base`) and their
    defaults come from its module's registry entry."""
    from augself_jax.methods import registry

    c = ml_collections.ConfigDict()
    c.name = "simclr"  # one of augself_jax/methods/registry.names()
    c.temperature = 0.2  # SimCLR, MoCo v2
    c.proj_hidden = -1  # -1: the method's reference width (F, 2048, 4096 or 8192)
    c.proj_out = -1  # -1: the method's reference width (128, 256, 2048 or 8192)
    c.pred_hidden = -1  # predictor hidden width (BYOL, SimSiam, MoCo v3)
    c.update(registry.config_defaults())
    return c


def augself_config() -> ml_collections.ConfigDict:
    """AugSelf loss weights; an augmentation's head exists when its weight is > 0."""
    c = ml_collections.ConfigDict({k: 0.0 for k in AUGSELF_KEYS})
    c.hidden = 512
    c.reference = False  # True: raw blur sigma target, as the reference code
    # linear (the reference: the hue difference regressed as a line) | circular (sin and
    # cos of the hue difference, which wraps at +-0.5 turn as hue does)
    c.color_target = "linear"
    # True: train the heads (and the backbone) without the SSL loss, the references'
    # --ss-only ablation; needs a head (a weight > 0).
    c.ss_only = False
    return c


def cassle_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.enabled = False
    # Comma-separated subset of CASSLE_KEYS; concatenated in sorted order.
    # (Not `keys`: that name is ConfigDict's own method and cannot be overridden.)
    c.descriptor_keys = "blur,color,color_diff,crop,gray"
    c.mode = "proj-cat"  # raw | proj-cat | proj-add | proj-mul
    c.depth = 6
    c.width = 64
    c.reference = False  # True: raw blur sigma in the descriptor
    return c


def optimizer_config(preset: str) -> ml_collections.ConfigDict:
    """docs/METHOD.md section 4: the reference's SGD by default; LARS and AdamW for large
    batches."""
    c = ml_collections.ConfigDict()
    c.name = "sgd"  # sgd | lars | adamw
    c.base_lr = 0.05 if preset == "imagenet100" else 0.03  # lr = base_lr * batch / 256
    c.momentum = 0.9  # sgd, lars
    # sgd: on every parameter, as the reference; lars, adamw: biases and norms excluded.
    c.weight_decay = 1e-4 if preset == "imagenet100" else 5e-4
    c.trust_coefficient = 0.001  # lars
    c.b1 = 0.9  # adamw
    c.b2 = 0.999  # adamw
    c.warmup_epochs = 0.0  # linear warm-up from 0, then the schedule
    c.schedule = "cosine"  # cosine (to 0 at the last step) | constant
    return c


def eval_config(preset: str) -> ml_collections.ConfigDict:
    """The `eval` section read by evaluate.py."""
    c = ml_collections.ConfigDict()
    c.batch_size = 256  # global feature-extraction batch (a multiple of the device count)
    # Comma-separated: linear | fewshot | knn | sensitivity | probe (colour histogram; on
    # the built-in dataset also hue angle, position and size) | localization (datasets with
    # boxes) | retrieval | mutual_info | spectrum (docs/EVALUATION.md).
    c.protocols = "linear,fewshot,knn,sensitivity,probe"
    if preset == "shapes":
        c.protocols += ",localization,retrieval,mutual_info,spectrum"
    # Linear / kNN / probe / sensitivity datasets (augself_jax/data/eval_datasets.py LINEAR).
    c.datasets = ("shapes" if preset == "shapes" else
                  "cifar10,cifar100,food101,mit67,pets,flowers,caltech101,cars,aircraft,dtd,"
                  "sun397,cub200")
    c.fewshot_datasets = "shapes" if preset == "shapes" else "fc100,cub200,plant_disease"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: data.data_dir
    c.manual_dir = ml_collections.FieldReference(None, field_type=str)  # MIT-67, Aircraft
    c.val_seed = 0  # seed of the random validation splits (recorded with the results)
    c.max_examples = 0  # 0: all; else only the first N images of each split (quick runs)
    c.linear = ml_collections.ConfigDict()
    c.linear.l2_min = 1e-6  # the reference sweep: 45 log-spaced w from 1e-6 to 1e5
    c.linear.l2_max = 1e5
    c.linear.l2_num = 45
    c.linear.max_iter = 5000
    c.linear.tol = 1e-7  # on the largest gradient entry of the mean objective
    c.fewshot = ml_collections.ConfigDict()
    c.fewshot.ways = 5  # capped at a task's class count (the shapes `shape` task has 4)
    c.fewshot.shots = "1,5"
    c.fewshot.queries = 16
    c.fewshot.episodes = 2000
    c.fewshot.c = 1.0  # inverse L2 strength of the per-episode logistic regression
    c.knn_k = "1,20"
    c.sensitivity = ml_collections.ConfigDict()
    c.sensitivity.num_images = 512  # test images, each augmented once per augmentation
    c.sensitivity.augmentations = "flip,color,gray,blur,crop"
    # Sensitivity over strength: each of these augmentations at each strength, 0 (none) to 1
    # (the pretraining config's); "" skips it (evaluation/sensitivity.py STRENGTH).
    c.sensitivity.strength_augmentations = "color,blur,crop"
    c.sensitivity.strengths = "0,0.25,0.5,0.75,1"
    c.retrieval = ml_collections.ConfigDict()
    c.retrieval.ks = "1,5,10"  # precision@k of the test queries' k nearest train images
    c.retrieval.grid_seed = 0  # which 8 test queries the figure shows
    c.mutual_info = ml_collections.ConfigDict()  # MINE, I(colour histogram; features)
    c.mutual_info.steps = 1000  # Adam steps on the train split, fixed
    c.mutual_info.batch_size = 256
    c.mutual_info.hidden = 128  # width of the statistics network's two hidden layers
    c.mutual_info.learning_rate = 1e-3
    c.mutual_info.ema = 0.01  # rate of the moving average in MINE's gradient correction
    c.spectrum = ml_collections.ConfigDict()  # power law fitted to ranks rank_min..rank_max
    c.spectrum.rank_min = 2
    c.spectrum.rank_max = 0  # 0: half the number of nonzero eigenvalues
    if preset == "shapes":
        # The quick start evaluates in a few CPU minutes: 5,000 images per split (the
        # linear probes' 4,500 / 500 train / val), 300 few-shot episodes instead of 2,000.
        c.max_examples = 5000
        c.fewshot.episodes = 300
        c.sensitivity.num_images = 256
    return c


def base_config(preset: str | None) -> ml_collections.ConfigDict:
    preset = preset or "stl10"
    if preset not in PRESETS:
        raise ValueError(f"config preset: unknown '{preset}'; allowed: {', '.join(PRESETS)}")
    if preset == "shapes_hue":
        return quickstart_config()
    variant = VARIANTS.get(preset)
    if variant is not None:
        c = base_config(variant[0])
        c.preset = preset
        c.aug[variant[1]] = 0.5
        return c
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.batch_size = 256  # global, over all processes and devices
    c.num_epochs = {"stl10": 200, "imagenet100": 500, "imagenet1k": 100, "cifar10": 200,
                    "shapes": 10}[preset]
    c.total_steps = ml_collections.FieldReference(None, field_type=int)  # overrides epochs
    c.checkpoint_every = 1000  # steps; a checkpoint is also written at the end
    c.keep_checkpoints = 3  # the last K are kept (and, with the kNN monitor, the best one)
    # Steps; metrics leave the device (and are NaN-checked) only then, each logged as its
    # mean over the steps since the last log step.
    c.log_every = 50
    # 0: no kNN monitor; else 1-NN cosine accuracy every N steps and at the end, and the
    # checkpoint of the best accuracy is kept in WORKDIR/best_checkpoint (--step best).
    c.knn_every = 0
    c.knn_max_examples = 10000  # cap on memory (train) and query (test) images of the monitor
    # TensorBoard at step 0 of a new run: the config (text and hparams) and, when True, a
    # captioned grid of 16 sample views (the preview's picture; a few seconds).
    c.tensorboard_views = True
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})  # -1: all devices
    # CPU only: compile the train step without LLVM's expensive passes (compiles several
    # times faster, steps somewhat slower); for tests and short CPU runs.
    c.xla_fast_compile = False
    c.data = data_config(preset)
    c.aug = aug_config(preset)
    c.model = model_config(preset)
    c.method = method_config()
    c.augself = augself_config()
    c.cassle = cassle_config()
    c.optimizer = optimizer_config(preset)
    c.eval = eval_config(preset)
    if preset == "imagenet1k":
        # Large-batch ImageNet-1k (SimCLR's recipe): LARS, lr 0.3 x 4096 / 256 = 4.8, 10
        # warm-up epochs, weight decay 1e-6 (biases and norms excluded).
        c.batch_size = 4096
        c.optimizer.update(name="lars", base_lr=0.3, weight_decay=1e-6, warmup_epochs=10.0)
        c.checkpoint_every = 2500  # about 8 epochs at batch 4096
    if preset == "shapes":
        # The quick start: a thin network and a short schedule that finish
        # pretraining within minutes on a 2-core laptop CPU.
        c.batch_size = 128
        c.total_steps = 300
        c.checkpoint_every = 100
        c.log_every = 20
        c.knn_every = 150
        c.knn_max_examples = 2000
        c.model.width = 8
        # The short-schedule recipe, chosen once for every arm from plain SimCLR and plain
        # supervised runs (docs/RESULTS.md section 2): at the reference's lr
        # (0.03 x 128 / 256) 300 steps barely move the network; lr 0.3 with half an epoch
        # (78 steps) of warm-up learns shape within 100 steps.
        c.optimizer.base_lr = 0.6  # lr = 0.6 x 128 / 256 = 0.3
        c.optimizer.warmup_epochs = 0.5
    return c


def quickstart_config() -> ml_collections.ConfigDict:
    """`shapes_hue`, the quick start's preset: `shapes` with the hue shift drawn over the whole
    circle (+-0.5 turn; the reference's is +-0.1) and 150 steps. At the reference's jitter
    colour still tells images apart, so plain SimCLR keeps it and AugSelf has nothing to
    keep; here plain training discards hue and what AugSelf keeps of it shows (README, "The
    papers' claim in miniature"). 150 steps fit two pretrainings and their evaluations into
    the quick start's 10 CPU minutes."""
    c = base_config("shapes")
    c.preset = "shapes_hue"
    c.aug.hue = 0.5
    c.total_steps = 150
    c.checkpoint_every = 150
    c.knn_every = 150
    # The protocols the side-by-side reads (shape, hue, position and size probes, 1-NN,
    # localization, retrieval by label), with the comparison benchmark's 9-value L2 sweep
    # (the seeds' table was measured with it); few-shot, sensitivity, mutual information and
    # the spectrum are left to `--config.eval.protocols`, to stay within 10 CPU minutes.
    c.eval.protocols = "linear,knn,probe,localization,retrieval"
    c.eval.linear.l2_num = 9
    return c


def experiment(arg: str | None, method: str, *, augself: bool = False,
               cassle: bool = False) -> ml_collections.ConfigDict:
    """The config of one experiment file: `method`, plain or with AugSelf or CASSLE.

    `arg` is `preset` or `preset,backbone` (e.g. `stl10,vit_small`); the method's reference
    recipe for that preset and backbone (its registry entry's `recipe`) is applied.
    """
    from augself_jax.methods import registry

    preset, _, backbone = (arg or "").partition(",")
    c = base_config(preset or None)
    if backbone:
        c.model.backbone = backbone
    c.method.name = method
    registry.get(method).recipe(c)
    if augself:
        # The reference AugSelf heads: crop and colour, 1.0 at STL-10 scale, 0.5 on ImageNet-100.
        weight = 0.5 if c.preset in IMAGENET_PRESETS else 1.0
        c.augself.crop = weight
        c.augself.color = weight
    c.cassle.enabled = cassle
    return c

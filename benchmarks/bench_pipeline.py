"""Input-pipeline throughput: two-view examples per second per CPU core for the host part
(decode, sample every parameter, crop-resize / flip / rotate twice) at 96 px from
STL-10-sized PNG sources and at 224 px from ImageNet-sized (500x375) JPEG sources, with and
without parameter recording, next to a bare tf.data loop that only decodes and
crops-and-resizes twice (the floor); then the device-side photometric ops' time per batch.

    python benchmarks/bench_pipeline.py [--num_examples=256] [--rounds=3] [--threads=1]
        [--clock=wall|cpu]

Sources are synthesised locally (the built-in dataset's renderer), so no download is needed.
"""

import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_NUM = flags.DEFINE_integer("num_examples", 256, "Two-view examples timed per measurement.")
_THREADS = flags.DEFINE_integer("threads", 1, "tf.data threads (= cores used).")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size (host and device).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved measurements; the best is kept.")
_CLOCK = flags.DEFINE_enum(
    "clock", "wall", ["wall", "cpu"],
    "wall: elapsed time; cpu: this process's CPU time (all its threads), which other "
    "processes on a shared machine disturb far less.")
_SOURCES = flags.DEFINE_list("sources", ["stl10", "imagenet"],
                              "stl10: 96x96 PNG to 96 px; imagenet: 500x375 JPEG to 224 px.")
_DEVICE = flags.DEFINE_bool("device_part", True, "Also time the device-side photometric ops.")
_DISTINCT = 64  # distinct source images, cycled
# Fewer batches per measurement and the rates time tf.data's start-up and the batches the
# previous measurement prefetched, not the steady state: "rec cost" then means nothing.
MIN_BATCHES = 4


def few_batches_warning(num_examples: int, batch: int) -> str | None:
    """The warning line when a measurement is too short for its rates to mean anything."""
    batches = num_examples // batch
    if batches >= MIN_BATCHES:
        return None
    return (f"warning: {num_examples} examples are {batches} batch(es) of {batch} per "
            f"measurement, fewer than {MIN_BATCHES}: the rates time start-up and prefetch, so "
            f"'rec cost' and 'vs bare' below are not meaningful; pass "
            f"--num_examples={MIN_BATCHES * batch} or more")


def _sources(kind: str):
    import PIL.Image

    from augself_jax.data import shapes, source

    side, fmt = (96, "png") if kind == "stl10" else (500, "jpeg")
    images = shapes.render(shapes.sample_labels(_DISTINCT, 0), side, 1)
    if kind == "imagenet":
        images = images[:, :375]  # 500 wide, 375 high: a typical ImageNet JPEG
    encoded = []
    for im in images:
        buffer = io.BytesIO()
        PIL.Image.fromarray(im).save(buffer, format=fmt, quality=90)
        encoded.append(buffer.getvalue())
    n = (_ROUNDS.value + 1) * _NUM.value + 2 * _BATCH.value  # no epoch wraps while timing
    return source.ExampleSource(
        images=np.array([encoded[i % _DISTINCT] for i in range(n)], dtype=object),
        labels=np.zeros(n, np.int32), indices=np.arange(n, dtype=np.int64))


def _options(ds):
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = _THREADS.value
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def _bare(src, size: int):
    """Fetch, decode, crop-and-resize twice with random boxes; nothing recorded."""
    import tensorflow as tf

    from augself_jax.data import augment

    b = _BATCH.value

    def fetch(i):
        return tf.numpy_function(lambda j: src.images[j], [i], tf.string, stateful=False)

    def views(encoded, i):
        image = augment.decode(encoded)
        shape = tf.shape(image)
        out = {}
        for v in range(2):
            u = tf.random.stateless_uniform([2], seed=tf.stack([i, tf.constant(v, tf.int64)]))
            h = tf.cast(tf.cast(shape[0], tf.float32) * (0.5 + 0.5 * u[0]), tf.int32)
            w = tf.cast(tf.cast(shape[1], tf.float32) * (0.5 + 0.5 * u[1]), tf.int32)
            crop = image[:h, :w]
            view = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
            out[f"view{v}"] = tf.cast(view, tf.uint8)
        return out

    ds = tf.data.Dataset.range(len(src)).map(lambda i: (fetch(i), i))
    ds = ds.map(views, num_parallel_calls=_THREADS.value).batch(b, drop_remainder=True)
    return _options(ds.prefetch(2))


def _pipeline(src, size: int, record: bool):
    from augself_jax.data import pipeline
    from configs.common import base_config

    aug = base_config("stl10").aug
    b = _BATCH.value
    ds = pipeline.pretrain_dataset(src, seed=0, aug=aug, image_size=size, local_batch=b,
                                   steps_per_epoch=len(src) // b, record=record,
                                   num_parallel_calls=_THREADS.value)
    return _options(ds)


def _rates(datasets: list, rounds: int) -> tuple[list[float], list[list[float]]]:
    """Best two-view examples/s of each dataset over `rounds` interleaved measurements
    (interleaving and taking the best keeps a busy shared machine from biasing one), and
    every round's rates. Batches are unpacked as the trainer's iterator unpacks them, so
    the recording variant pays for turning the packed record back into per-key arrays."""
    from augself_jax.data.pipeline import unpack_batch

    iters = [ds.as_numpy_iterator() for ds in datasets]
    for it in iters:
        unpack_batch(next(it))  # warm-up
    steps = max(1, _NUM.value // _BATCH.value)
    clock = time.perf_counter if _CLOCK.value == "wall" else time.process_time
    per_round = [[] for _ in iters]
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        # A new order each round: whichever runs after another pays for the batches that
        # one prefetched, and a fixed order would charge that to the same variant always.
        for k in rng.permutation(len(iters)):
            it = iters[k]
            start = clock()
            for _ in range(steps):
                unpack_batch(next(it))
            per_round[k].append(steps * _BATCH.value / (clock() - start))
    return [max(r) for r in per_round], per_round


def _photometric_ms(size: int, kernel: int) -> float:
    import jax
    import tensorflow as tf

    from augself_jax import augs
    from augself_jax.data import augment, photometric
    from configs.common import base_config

    b = _BATCH.value
    u = tf.random.stateless_uniform([b, augment.NUM_UNIFORMS], seed=[0, 1], dtype=tf.float64)
    rec = augment.sample_params(u, size, size, base_config("stl10").aug)
    params = {k: rec[k].numpy() for k in augment.RECORD_KEYS}
    views = jax.device_put(np.random.default_rng(0).integers(0, 256, (b, size, size, 3),
                                                             dtype=np.uint8))
    params = jax.device_put(params)
    settings = augs.StaticSettings.of(blur_kernel=kernel)
    fn = jax.jit(lambda v, p: photometric.apply_photometric(v, p, settings))
    jax.block_until_ready(fn(views, params))
    reps = 5
    start = time.perf_counter()
    for _ in range(reps):
        out = fn(views, params)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / reps * 1e3


def main(argv):
    del argv
    import jax
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    threads = _THREADS.value
    print(f"host part: {threads} tf.data thread(s), batch {_BATCH.value}, "
          f"{_NUM.value} examples per measurement, {_CLOCK.value} clock; rates are two-view "
          "examples/s/core")
    warning = few_batches_warning(_NUM.value, _BATCH.value)
    if warning:
        print(warning, flush=True)
    print(f"{'source':<24}{'out':>5}{'bare':>9}{'no rec':>9}{'record':>9}"
          f"{'rec cost':>10}{'vs bare':>9}")
    for kind, size in (("stl10", 96), ("imagenet", 224)):
        if kind not in _SOURCES.value:
            continue
        src = _sources(kind)
        datasets = [_bare(src, size), _pipeline(src, size, record=False),
                    _pipeline(src, size, record=True)]
        best, per_round = _rates(datasets, _ROUNDS.value)
        bare, plain, rec = (r / threads for r in best)
        label = "96x96 PNG" if kind == "stl10" else "500x375 JPEG"
        print(f"{label:<24}{size:>5}{bare:>9.0f}{plain:>9.0f}{rec:>9.0f}"
              f"{100 * (plain - rec) / plain:>9.1f}%{100 * rec / bare:>8.0f}%")
        # The noise: the recording cost round by round (each round times both back to back).
        costs = [100 * (p - r) / p for p, r in zip(per_round[1], per_round[2], strict=True)]
        print(f"{'':<29}rec cost per round: " + " ".join(f"{c:+.1f}%" for c in costs))
        print(f"{'':<29}median {np.median(costs):+.1f}%, interquartile range "
              f"{np.percentile(costs, 25):+.1f}% to {np.percentile(costs, 75):+.1f}%")
    if not _DEVICE.value:
        return
    device = jax.devices()[0]
    print(f"device part (apply_photometric, batch {_BATCH.value}) on {device.platform} "
          f"({device.device_kind}):")
    for size, kernel in ((96, 9), (224, 23)):
        print(f"  {size} px, blur kernel {kernel}: {_photometric_ms(size, kernel):.2f} ms/batch")


if __name__ == "__main__":
    app.run(main)

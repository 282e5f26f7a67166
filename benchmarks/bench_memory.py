"""Host memory and throughput of the pretraining input against dataset size.

For each size of the built-in dataset (generated first if needed, timed), a fresh process
runs the two-view pretraining stream for a number of steps and reports its peak resident
memory (getrusage's ru_maxrss, the whole process: TensorFlow included), its two-view
examples per second (wall clock) and per CPU-second of the process (its cost, which other
work on a shared machine does not change). Two ways of reading are compared:

- `disk`: the data path (data/source.py), examples read by position from ArrayRecord;
- `memory`: every encoded image of the split held in RAM first (the former data path).

    python benchmarks/bench_memory.py [--image_size=64] [--sizes=20000,200000] \
        [--modes=disk,memory] [--steps=40] [--batch=64] [--threads=1] [--rounds=2] \
        [--data_dir=DIR] [--json=results.json]

The 200,000-example size takes minutes to generate (reported) and about 1.1 GB of disk;
it is not part of the test suite. Measurements are interleaved over rounds; the table keeps
the best throughputs (and the median per CPU-second) and the largest peak memory of each
(size, mode).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Side of the generated images.")
_SIZES = flags.DEFINE_list("sizes", ["20000", "200000"], "Training examples, one run each.")
_MODES = flags.DEFINE_list("modes", ["disk", "memory"], "disk (data path) and/or memory.")
_STEPS = flags.DEFINE_integer("steps", 40, "Batches timed per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Batches read before timing.")
_BATCH = flags.DEFINE_integer("batch", 64, "Local batch size.")
_THREADS = flags.DEFINE_integer("threads", 1, "tf.data threads (= cores used).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved measurements of each (size, mode).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")
_CHILD = flags.DEFINE_string("child", None, "Internal: 'size,mode' measured in this process, "
                             "or 'size,generate'.")


def shapes_builder(image_size: int, num_train: int, data_dir: str | None):
    """The built-in dataset's builder at this size (a named config where one matches)."""
    from augself_jax.data import shapes, source

    config = next((c for c in shapes.AugselfShapes.BUILDER_CONFIGS
                   if (c.image_size, c.num_train) == (image_size, num_train)), None)
    config = config or shapes.ShapesConfig(name=f"{image_size}px_{num_train}",
                                           image_size=image_size, num_train=num_train,
                                           num_test=1000)
    return shapes.AugselfShapes(config=config, data_dir=data_dir,
                                file_format=source.FILE_FORMAT)


def _in_memory(src):
    """The former data path: every encoded image of the shard read into RAM."""
    import numpy as np

    from augself_jax.data import source

    images, labels = [], []
    for begin in range(0, len(src), 4096):
        positions = np.arange(begin, min(len(src), begin + 4096))
        ex = source.parse(src.builder, src.read(positions), ["image", src.label_key])
        images.extend(ex["image"].numpy())
        labels.append(ex[src.label_key].numpy().astype(np.int32))
    return source.ExampleSource(images=np.asarray(images, dtype=object),
                                labels=np.concatenate(labels),
                                indices=np.arange(len(src), dtype=np.int64))


def measure(num_train: int, mode: str) -> dict:
    """One measurement (run in a fresh process): peak RSS and two-view examples/s."""
    import tensorflow as tf

    from augself_jax.data import pipeline, source
    from configs.common import base_config

    tf.config.set_visible_devices([], "GPU")
    b = shapes_builder(_IMAGE_SIZE.value, num_train, _DATA_DIR.value)
    src = source.TfdsSource(b, "train", "shape", 0, num_train)
    if mode == "memory":
        src = _in_memory(src)
    batch = _BATCH.value
    ds = pipeline.pretrain_dataset(src, seed=0, aug=base_config("shapes").aug,
                                   image_size=_IMAGE_SIZE.value, local_batch=batch,
                                   steps_per_epoch=len(src) // batch)
    options = tf.data.Options()
    options.threading.private_threadpool_size = _THREADS.value
    it = ds.with_options(options).as_numpy_iterator()
    for _ in range(_WARMUP.value):
        next(it)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(_STEPS.value):
        next(it)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    examples = _STEPS.value * batch
    return {"size": num_train, "mode": mode, "peak_rss_mib": round(peak_mib, 1),
            "examples_per_s": round(examples / seconds, 1),
            "examples_per_cpu_s": round(examples / cpu, 1)}


def _cpu_seconds() -> float:
    """This process's CPU time, all threads: its cost, whatever else shares the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(num_train: int) -> dict:
    """Prepare the dataset of this size if needed (run in a process of its own)."""
    b = shapes_builder(_IMAGE_SIZE.value, num_train, _DATA_DIR.value)
    if b.is_prepared():
        return {"size": num_train, "generated_s": None}
    start = time.perf_counter()
    b.download_and_prepare()
    return {"size": num_train, "generated_s": round(time.perf_counter() - start, 1)}


def _run_child(size: int, mode: str) -> dict:
    out = subprocess.run(_child_args(size, mode), capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_args(size: int, mode: str) -> list[str]:
    args = [sys.executable, os.path.abspath(__file__), f"--child={size},{mode}"]
    for flag in (_IMAGE_SIZE, _STEPS, _WARMUP, _BATCH, _THREADS, _DATA_DIR):
        if flag.value is not None:
            args.append(f"--{flag.name}={flag.value}")
    return args


def main(argv):
    del argv
    if _CHILD.value:
        size, mode = _CHILD.value.split(",")
        print(json.dumps(generate(int(size)) if mode == "generate" else
                         measure(int(size), mode)))
        return
    # This process stays small and never imports TensorFlow: Linux carries the peak RSS of
    # the parent at fork into a child's ru_maxrss, so a large parent would mask the children.
    sizes = [int(s) for s in _SIZES.value]
    generated = {}
    for size in sizes:  # generate before measuring, so no measurement holds the writer
        seconds = _run_child(size, "generate")["generated_s"]
        if seconds is not None:
            generated[size] = seconds
            print(f"generated {size} examples at {_IMAGE_SIZE.value} px in {seconds:.0f} s",
                  flush=True)
    runs = []
    for _ in range(_ROUNDS.value):
        for size in sizes:
            for mode in _MODES.value:
                runs.append(_run_child(size, mode))
                print(json.dumps(runs[-1]), flush=True)
    results = {}
    for size in sizes:
        for mode in _MODES.value:
            mine = [r for r in runs if (r["size"], r["mode"]) == (size, mode)]
            results[(size, mode)] = {
                "size": size, "mode": mode,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                "examples_per_s": max(r["examples_per_s"] for r in mine),
                "examples_per_cpu_s": max(r["examples_per_cpu_s"] for r in mine),
                "median_examples_per_cpu_s": float(
                    statistics.median(r["examples_per_cpu_s"] for r in mine))}
    print(f"\n{_IMAGE_SIZE.value} px, batch {_BATCH.value}, {_THREADS.value} thread(s), "
          f"best of {_ROUNDS.value}")
    print(f"{'examples':>9} {'mode':>7} {'peak RSS MiB':>13} {'two-view ex/s':>14} "
          f"{'per CPU-s':>10} {'(median)':>9}")
    for (size, mode), r in results.items():
        print(f"{size:>9} {mode:>7} {r['peak_rss_mib']:>13.0f} {r['examples_per_s']:>14.0f} "
              f"{r['examples_per_cpu_s']:>10.0f} {r['median_examples_per_cpu_s']:>9.0f}")

    def spread(rows, key):  # max / min - 1, in percent
        return 100 * (max(r[key] for r in rows) / min(r[key] for r in rows) - 1)

    for mode in _MODES.value:
        rows = [results[(s, mode)] for s in sizes]
        print(f"{mode}: across sizes, peak RSS varies by {spread(rows, 'peak_rss_mib'):.1f}%, "
              f"examples/s by {spread(rows, 'examples_per_s'):.1f}%, examples per CPU-second "
              f"by {spread(rows, 'examples_per_cpu_s'):.1f}% (best), "
              f"{spread(rows, 'median_examples_per_cpu_s'):.1f}% (median)")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"generated_s": generated, "results": list(results.values()),
                       "runs": runs}, f)


if __name__ == "__main__":
    app.run(main)

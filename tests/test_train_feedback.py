"""What a training run tells its user while it works, read back as the user meets it: a
line before the compile and one after with its duration; a one-line warning when the
warm-up covers the whole run; TensorBoard with the config (text and hparams), a captioned
grid of sample views at step 0, steps/s equal to the progress line's, and the kNN monitor in
percent under a name that says what it is."""

import contextlib
import glob
import io
import json
import os
import re

import numpy as np
import pytest
from test_reliability import _config

from augself_jax.train import loop

STEPS = 3


def _events(workdir) -> dict[str, dict[int, object]]:
    """{tag: {step: value}}: floats for scalars, the string for texts, the arrays of
    encoded PNGs for images, the plugin's data for hparams."""
    import tensorflow as tf

    out: dict[str, dict[int, object]] = {}
    for path in sorted(glob.glob(os.path.join(str(workdir), "events.out.tfevents*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    content = value.metadata.plugin_data.content
                    out.setdefault(value.tag, {})[event.step] = content
                    continue
                array = tf.make_ndarray(value.tensor)
                out.setdefault(value.tag, {})[event.step] = (
                    float(array) if plugin == "scalars" else array)
    return out


@pytest.fixture(scope="module")
def run(shapes_data_dir, tmp_path_factory):
    """A 3-step run (log every step, the monitor at the end on 64 images) whose warm-up of
    one epoch covers the whole run; its stdout, stderr, events and config."""
    workdir = tmp_path_factory.mktemp("feedback")
    config = _config(shapes_data_dir, total_steps=STEPS, knn_every=STEPS,
                     knn_max_examples=64, **{"optimizer.warmup_epochs": 1.0})
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        loop.train(config, str(workdir))
    return stdout.getvalue(), stderr.getvalue(), _events(workdir), config


def test_compile_is_announced_and_timed(run):
    out, _, _, _ = run
    lines = out.splitlines()
    before = lines.index("compiling the train step (the first step waits for it)...")
    (after,) = [i for i, line in enumerate(lines) if line.startswith("compiled and ran")]
    first_progress = next(i for i, line in enumerate(lines) if line.startswith("step 1/3 "))
    assert before < after < first_progress
    seconds = float(re.fullmatch(r"compiled and ran the first step in ([0-9.]+) s",
                                 lines[after]).group(1))
    assert seconds > 0


def test_a_warm_up_covering_the_run_is_one_warning_line(run):
    _, err, events, config = run
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert re.match(r"warning: the learning-rate warm-up \((\d+) steps, optimizer\."
                    r"warmup_epochs=1.0\) covers the whole run \(3 steps\)", warnings[0])
    assert int(re.search(r"\((\d+) steps", warnings[0]).group(1)) >= STEPS
    lrs = [events["lr"][s] for s in range(1, STEPS + 1)]
    assert lrs == sorted(lrs) and lrs[-1] > lrs[0]  # it only rises, as the line says


def test_no_warning_when_the_warm_up_ends_inside_the_run(shapes_data_dir, tmp_path, capsys):
    config = _config(shapes_data_dir, total_steps=1, **{"optimizer.warmup_epochs": 0.0})
    loop.train(config, str(tmp_path))
    assert "warning" not in capsys.readouterr().err


def test_tensorboard_has_the_config_as_text_and_hparams(run):
    _, _, events, config = run
    (text,) = events["config"].values()
    text = text.item().decode() if hasattr(text, "item") else text
    assert list(events["config"]) == [0]
    body = text.strip().removeprefix("```").removesuffix("```")
    assert json.loads(body) == json.loads(config.to_json_best_effort())
    hparams = b"".join(v for tag, steps in events.items() if tag.startswith("_hparams_")
                       for v in steps.values())
    for name in (b"optimizer.base_lr", b"method.name", b"batch_size", b"aug.color_strength"):
        assert name in hparams, name


def test_tensorboard_has_a_grid_of_sample_views_at_step_0(run):
    from PIL import Image

    _, _, events, _ = run
    assert list(events["sample_views"]) == [0]
    width, height, png = events["sample_views"][0][:3]
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (int(height), int(width), 3)
    # 16 examples, each a row at least as tall as a tile: a grid, not a blank.
    assert image.shape[0] > 16 * 160 and image.shape[1] >= 3 * 160
    assert image.std() > 10


def test_steps_per_second_in_tensorboard_is_the_progress_lines(run):
    out, _, events, _ = run
    printed = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"^step (\d+)/3 .* \| ([0-9.]+) steps/s", out, flags=re.M)}
    assert sorted(printed) == [1, 2, 3]
    logged = events["steps_per_sec"]
    assert sorted(logged) == [1, 2, 3]
    for step, rate in printed.items():
        assert logged[step] == pytest.approx(rate, abs=0.005 + 0.0005 * rate)


def test_monitor_accuracy_is_in_percent_and_named_for_what_it_is(run):
    out, _, events, _ = run
    (line,) = [x for x in out.splitlines() if "kNN" in x]
    match = re.fullmatch(r"step 3/3 kNN \(1-NN cosine\) top-1: ([0-9.]+)% \(monitor: "
                         r"(\d+) train / (\d+) test images\)", line)
    assert match, line
    assert (int(match.group(2)), int(match.group(3))) == (64, 64)  # knn_max_examples
    logged = events["monitor/knn_1nn_top1_pct"][3]
    assert logged == pytest.approx(float(match.group(1)), abs=0.005)
    assert 1.0 < logged <= 100.0 and (logged * 64 / 100) == pytest.approx(
        round(logged * 64 / 100), abs=1e-3)  # a count of the 64 queries, in percent
    assert "knn_top1" not in events

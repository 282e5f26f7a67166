"""The logged value of a metric is its mean over the log interval, not the last step's
value: IntervalMean against the NumPy mean of the same per-step values (the end-to-end
check through the TensorBoard file of a real run is `-m slow`, in
test_train_best_and_logs.py)."""

import jax.numpy as jnp
import numpy as np

from augself_jax.metric_logging import IntervalMean


def test_interval_mean_is_the_numpy_mean_of_each_interval():
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(7, 2)).astype(np.float32)  # (step, metric)
    interval = IntervalMean()
    expected_intervals = [steps[0:3], steps[3:5], steps[5:7]]
    for chunk in expected_intervals:
        for loss, grad_norm in chunk:
            # bfloat16 in, as a bf16 step would hand it: the sum is kept in float32.
            interval.add({"loss": jnp.asarray(loss, jnp.bfloat16),
                          "grad_norm": jnp.asarray(grad_norm)})
        assert interval.count == len(chunk)
        current, means = interval.fetch({"loss": jnp.asarray(chunk[-1, 0])})
        np.testing.assert_allclose(
            means["loss"], np.mean(chunk[:, 0].astype(jnp.bfloat16).astype(np.float32)),
            rtol=1e-6)
        np.testing.assert_allclose(means["grad_norm"], np.mean(chunk[:, 1]), rtol=1e-6)
        assert current == {"loss": float(chunk[-1, 0])}
        interval.reset()
        assert interval.count == 0


def test_an_empty_interval_has_no_means():
    interval = IntervalMean()
    current, means = interval.fetch({"loss": jnp.asarray(1.5)})
    assert means == {} and current == {"loss": 1.5}

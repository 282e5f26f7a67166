"""Mutual information between an image's colour histogram C and its representation Z,
estimated with MINE (Belghazi et al. 2018), as the AugSelf paper's analysis.

A statistics network T(c, z) (an MLP on the concatenated, standardised inputs) is trained to
maximise the Donsker-Varadhan bound

    I(C; Z) >= E_joint[T(c, z)] - log E_marginal[exp T(c, z')]

on the train split's pairs (joint: an image's own histogram and features; marginal: a
histogram with another image's features), with Adam for a fixed number of steps from a
seeded key. The gradient of the log term is corrected as in MINE's section 3.2: its
denominator E[exp T] is replaced by a moving average (rate eval.mutual_info.ema), which
removes the bias of the minibatch estimate. The number reported is the bound evaluated on
the TEST split's pairs (marginal pairs: each image with the features of 16 others, shifted
by seeded offsets), in nats: a held-out lower bound, so a network that overfits the train
pairs cannot inflate it.

Unlike the colour-histogram probe (evaluation/probes.py), which asks how well a LINEAR map of
Z predicts C (R^2), this asks how much information about C any function of Z holds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from augself_jax.errors import ConfigError
from augself_jax.evaluation import common
from augself_jax.evaluation.probes import color_histogram

HELD_OUT_SHIFTS = 16  # marginal pairs per test image in the held-out bound


def _init(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """He-initialised dense layers."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def statistics(params: list[dict[str, jax.Array]], c: jax.Array, z: jax.Array) -> jax.Array:
    """T(c, z) [N]."""
    h = jnp.concatenate([c, z], axis=-1)
    for layer in params[:-1]:
        h = jax.nn.elu(h @ layer["w"] + layer["b"])
    return (h @ params[-1]["w"] + params[-1]["b"])[:, 0]


def _log_mean_exp(t: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(t) - jnp.log(t.shape[0])


def dv_bound(params, c: jax.Array, z: jax.Array, shifts: jax.Array) -> jax.Array:
    """The Donsker-Varadhan bound on pairs (c_i, z_i), the marginal term over the pairs
    (c_i, z_(i + s) mod n) for every shift s (each in [1, n), so never an image's own)."""
    joint = statistics(params, c, z).mean()
    marginal = jax.vmap(lambda s: statistics(params, c, jnp.roll(z, -s, axis=0)))(shifts)
    return joint - _log_mean_exp(marginal.ravel())


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "hidden",
                                             "learning_rate"))
def _train(key, c, z, *, steps: int, batch_size: int, hidden: int, learning_rate: float,
           ema: float):
    n = c.shape[0]
    tx = optax.adam(learning_rate)
    init_key, data_key = jax.random.split(key)
    params = _init(init_key, (c.shape[1] + z.shape[1], hidden, hidden, 1))
    opt_state = tx.init(params)

    def loss_fn(params, cj, zj, zm, log_ma):
        t_joint = statistics(params, cj, zj).mean()
        log_mean_exp = _log_mean_exp(statistics(params, cj, zm))
        # The gradient of log E[e^T] is E[e^T grad T] / E[e^T]; MINE's correction takes the
        # denominator from the moving average (held fixed here), the numerator from the batch.
        surrogate = t_joint - jnp.exp(log_mean_exp - jax.lax.stop_gradient(log_ma))
        return -surrogate, (t_joint - log_mean_exp, log_mean_exp)

    # Every step's rows drawn up front (random bits outside the loop compile faster):
    # joint pairs at `idx`, marginal pairs join those histograms with the features at `other`.
    idx, other = jax.random.randint(data_key, (2, steps, batch_size), 0, n)

    def step(carry, xs):
        params, opt_state, log_ma = carry
        i, idx, other = xs
        cj, zj, zm = c[idx], z[idx], z[other]
        # The moving average of E[e^T] including this batch (the first batch starts it).
        batch_lme = jax.lax.stop_gradient(_log_mean_exp(statistics(params, cj, zm)))
        log_ma = jnp.where(i == 0, batch_lme,
                           jnp.logaddexp(jnp.log1p(-ema) + log_ma, jnp.log(ema) + batch_lme))
        grads, (bound, _) = jax.grad(loss_fn, has_aux=True)(params, cj, zj, zm, log_ma)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, log_ma), bound

    (params, _, _), bounds = jax.lax.scan(step, (params, opt_state, jnp.float32(0.0)),
                                          (jnp.arange(steps), idx, other))
    return params, bounds


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[jax.Array, jax.Array]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return (jnp.asarray((train - mu) / sd, jnp.float32),
            jnp.asarray((test - mu) / sd, jnp.float32))


def mine(c_train: np.ndarray, z_train: np.ndarray, c_test: np.ndarray, z_test: np.ndarray, *,
         seed: int = 0, steps: int = 1000, batch_size: int = 256, hidden: int = 128,
         learning_rate: float = 1e-3, ema: float = 0.01) -> dict[str, float]:
    """{'mi_nats': the DV bound on the test pairs, 'train_bound': the mean bound of the last
    10% of training batches}: I(C; Z) in nats, T trained on the train pairs."""
    c_tr, c_te = _standardise(np.asarray(c_train, np.float64), np.asarray(c_test, np.float64))
    z_tr, z_te = _standardise(np.asarray(z_train, np.float64), np.asarray(z_test, np.float64))
    key = jax.random.key(seed)
    params, bounds = _train(key, c_tr, z_tr, steps=steps, batch_size=batch_size, hidden=hidden,
                           learning_rate=learning_rate, ema=ema)
    n = len(c_te)
    shifts = jax.random.randint(jax.random.fold_in(key, steps + 1), (HELD_OUT_SHIFTS,), 1, n)
    held_out = jax.jit(dv_bound)(params, c_te, z_te, shifts)
    tail = np.asarray(bounds)[-max(1, steps // 10):]
    return {"mi_nats": float(held_out), "train_bound": float(tail.mean())}


class MutualInfoEvaluator(common.Evaluator):
    """`mutual_info`: I(colour histogram; features) by MINE, train split -> test split."""

    name = "mutual_info"

    def __init__(self, seed: int = 0, steps: int = 1000, batch_size: int = 256,
                 hidden: int = 128, learning_rate: float = 1e-3, ema: float = 0.01):
        self.kwargs = dict(seed=int(seed), steps=int(steps), batch_size=int(batch_size),
                           hidden=int(hidden), learning_rate=float(learning_rate),
                           ema=float(ema))

    @classmethod
    def validate(cls, config: ml_collections.ConfigDict) -> None:
        m = config.eval.mutual_info
        for field in ("steps", "batch_size", "hidden"):
            if int(m[field]) < 1:
                raise ConfigError(f"eval.mutual_info.{field}: {m[field]}; allowed: a positive "
                                  f"integer")
        if not float(m.learning_rate) > 0:
            raise ConfigError(f"eval.mutual_info.learning_rate: {m.learning_rate}; allowed: > 0")
        if not 0 < float(m.ema) <= 1:
            raise ConfigError(f"eval.mutual_info.ema: {m.ema}; allowed: 0 < ema <= 1")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict,
                    context: common.Context) -> MutualInfoEvaluator:
        m = config.eval.mutual_info
        return cls(config.seed, m.steps, m.batch_size, m.hidden, m.learning_rate, m.ema)

    def image_statistics(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"color_hist": color_histogram(images)}

    def run(self, features: common.Features) -> list[common.Result]:
        train, test = features.splits["train"], features.splits["test"]
        out = mine(train["color_hist"], train["features"], test["color_hist"],
                   test["features"], **self.kwargs)
        return [common.Result(features.name, "mi_nats", out["mi_nats"], unit="nats",
                              extra={"train_bound": out["train_bound"],
                                     "n_train": len(train["features"]),
                                     "n_test": len(test["features"]), **self.kwargs})]


PROTOCOL = MutualInfoEvaluator

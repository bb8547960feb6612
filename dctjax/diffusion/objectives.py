"""Diffusion training objective (spec dctdiff §7) and prediction-type conversions.

    t ~ U(0, 1) per sample (no lower clamp), eps ~ N(0, I), x_t = alpha_t x0 + sigma_t eps,
    pred = model_fn(x_t, t [, labels]),
    loss_i = mean over all entries of w * (target - pred)^2,   loss = mean_i loss_i.

Prediction types (registry `PREDICTIONS`; 'eps' is the reference default, 'x0' and 'v' are options):

    eps: target eps
    x0:  target x0
    v:   target v = alpha eps - sigma x0      (so eps = sigma x_t + alpha v, x0 = alpha x_t - sigma v)

There is no extra lambda(t) weighting for any type: the x0 / v losses are the plain MSE on their own
target. With the same (t, eps) the per-sample losses relate as
L_x0 = (sigma / alpha)^2 L_eps and L_v = L_eps / alpha^2 (when pred is derived from the same eps-hat).

`model_fn` receives continuous t of shape (B,) in [0, 1]; the network multiplies by 999 itself
(`schedules.network_time`). Shapes: x0 (B, ...), e.g. DCT tokens (B, T, F) or pixels (B, H, W, C).

Rectified flow (JiT, `FlowSchedule`, t = 0 noise, t = 1 data): `x_to_velocity` turns an x-prediction
network into the velocity model the flow samplers call, v-hat = (x-hat - z) / max(1 - t, t_eps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dctjax.diffusion.schedules import FlowSchedule, VPSchedule, broadcast_to_data
from dctjax.registry import Registry

ModelFn = Callable[..., jax.Array]


def _coefs(schedule: VPSchedule, t, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return broadcast_to_data(schedule.alpha(t), x), broadcast_to_data(schedule.sigma(t), x)


# ---- conversions (t: (B,) or scalar; x_t and predictions: (B, ...)) ----------------------------------
def eps_to_x0(schedule: VPSchedule, x_t: jax.Array, t, eps: jax.Array) -> jax.Array:
    """x0-hat = (x_t - sigma_t eps-hat) / alpha_t."""
    alpha, sigma = _coefs(schedule, t, x_t)
    return (x_t - sigma * eps) / alpha


def x0_to_eps(schedule: VPSchedule, x_t: jax.Array, t, x0: jax.Array) -> jax.Array:
    """eps-hat = (x_t - alpha_t x0-hat) / sigma_t (undefined at t = 0, where sigma = 0)."""
    alpha, sigma = _coefs(schedule, t, x_t)
    return (x_t - alpha * x0) / sigma


def eps_to_v(schedule: VPSchedule, x_t: jax.Array, t, eps: jax.Array) -> jax.Array:
    """v-hat = alpha eps - sigma x0-hat = (eps - sigma x_t) / alpha."""
    alpha, sigma = _coefs(schedule, t, x_t)
    return (eps - sigma * x_t) / alpha


def v_to_eps(schedule: VPSchedule, x_t: jax.Array, t, v: jax.Array) -> jax.Array:
    """eps-hat = sigma_t x_t + alpha_t v-hat (uses alpha^2 + sigma^2 = 1)."""
    alpha, sigma = _coefs(schedule, t, x_t)
    return sigma * x_t + alpha * v


def score(schedule: VPSchedule, x_t: jax.Array, t, eps: jax.Array) -> jax.Array:
    """Score grad log p_t(x_t) = -eps-hat / sigma_t."""
    return -eps / broadcast_to_data(schedule.sigma(t), x_t)


# ---- prediction registry -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the network outputs.

    target(x0, eps, alpha, sigma): the regression target (coefficients already broadcast to x0).
    to_eps(schedule, x_t, t, pred): converts a network output to eps-hat (for the samplers).
    """

    name: str
    target: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
    to_eps: Callable[[VPSchedule, jax.Array, Any, jax.Array], jax.Array]


PREDICTIONS: Registry[Prediction] = Registry("prediction")
for _p in (
    Prediction("eps", lambda x0, eps, a, s: eps, lambda sch, x_t, t, p: p),
    Prediction("x0", lambda x0, eps, a, s: x0, x0_to_eps),
    Prediction("v", lambda x0, eps, a, s: a * eps - s * x0, v_to_eps),
):
    PREDICTIONS.register(_p.name, _p)


def get_prediction(name: str) -> Prediction:
    """Look up a prediction type by name ('eps', 'x0' or 'v')."""
    return PREDICTIONS.get(name)


def as_eps_model(model_fn: ModelFn, schedule: VPSchedule, prediction: str = "eps") -> ModelFn:
    """Wraps a network that outputs `prediction` into model_fn(x, t, *args) -> eps-hat (float32)."""
    pred = get_prediction(prediction)
    if pred.name == "eps":
        return model_fn

    def eps_fn(x, t, *args):
        out = model_fn(x, t, *args).astype(jnp.float32)
        return pred.to_eps(schedule, x.astype(jnp.float32), t, out)

    return eps_fn


def x_to_velocity(x_pred_fn: ModelFn, schedule: FlowSchedule) -> ModelFn:
    """Wraps an x-prediction network of a rectified flow into model_fn(z, t, *args) -> v-hat (float32).

    v-hat = (x-hat - z) / max(1 - t, t_eps) (spec spectral §3.1; the clamp is active for t > 1 - t_eps and is
    kept for parity with JiT). z: (B, ...); t: (B,) in [0, 1] with t = 1 the data end.
    """

    def v_fn(z, t, *args):
        x_hat = x_pred_fn(z, t, *args).astype(jnp.float32)
        denom = jnp.maximum(1.0 - jnp.asarray(t, jnp.float32), schedule.t_eps)
        return (x_hat - z.astype(jnp.float32)) / broadcast_to_data(denom, x_hat)

    return v_fn


# ---- loss --------------------------------------------------------------------------------------------
def diffusion_loss(
    model_fn: ModelFn,
    x0: jax.Array,
    key: jax.Array,
    schedule: VPSchedule,
    weights: jax.Array | None = None,
    prediction: str = "eps",
    labels: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Monte Carlo diffusion loss for one batch (spec §7).

    Args:
      model_fn: model_fn(x_t, t) -> prediction, or model_fn(x_t, t, labels) when labels is given.
        x_t: (B, ...) float32; t: (B,) float32 continuous in [0, 1] (the network multiplies by 999).
      x0: clean data (B, ...), e.g. DCT tokens (B, T, F).
      key: PRNG key; split into t and eps draws.
      schedule: the VP schedule (same snr_scale as the sampler).
      weights: per-feature loss weights w broadcastable to x0.shape[1:] (for tokens: (F,), broadcast over
        the token axis), or None for w = 1.
      prediction: 'eps' (default, reference), 'x0' or 'v'.
      labels: optional class labels (B,), passed as the model's third argument.

    Returns:
      (loss, aux): loss is a float32 scalar (batch mean of the per-sample losses); aux holds
      'loss_per_sample' (B,) and 't' (B,).
    """
    pred_type = get_prediction(prediction)
    x0 = x0.astype(jnp.float32)
    batch = x0.shape[0]
    key_t, key_eps = jax.random.split(key)
    t = jax.random.uniform(key_t, (batch,), jnp.float32)
    eps = jax.random.normal(key_eps, x0.shape, jnp.float32)
    alpha, sigma = _coefs(schedule, t, x0)
    x_t = alpha * x0 + sigma * eps

    out = model_fn(x_t, t) if labels is None else model_fn(x_t, t, labels)
    if out.shape != x0.shape:
        raise ValueError(f"model output shape {out.shape} != data shape {x0.shape}")
    target = pred_type.target(x0, eps, alpha, sigma)
    sq = jnp.square(target - out.astype(jnp.float32))
    if weights is not None:
        weights = jnp.asarray(weights, jnp.float32)
        try:
            ok = jnp.broadcast_shapes(weights.shape, x0.shape[1:]) == x0.shape[1:]
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"weights of shape {weights.shape} do not broadcast to one sample {x0.shape[1:]}"
            )
        sq = sq * weights
    per_sample = jnp.mean(sq.reshape(batch, -1), axis=1)
    return jnp.mean(per_sample), {"loss_per_sample": per_sample, "t": t}


# ---- rectified flow (JiT, spec spectral §3.1) -------------------------------------------------------
FLOW_PREDICTIONS = ("x", "v")


def logit_normal_t(key: jax.Array, n: int, p_mean: float = -0.8, p_std: float = 0.8) -> jax.Array:
    """t = sigmoid(p_mean + p_std N(0, 1)), (n,) float32 in (0, 1) (t = 1 is data)."""
    return jax.nn.sigmoid(p_mean + p_std * jax.random.normal(key, (n,), jnp.float32))


def flow_loss(
    model_fn: ModelFn,
    x: jax.Array,
    key: jax.Array,
    schedule: FlowSchedule,
    *,
    p_mean: float = -0.8,
    p_std: float = 0.8,
    pred_param: str = "x",
    labels: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """JiT's rectified-flow loss for one batch: the v-loss MSE(v, v-hat), mean over pixels and batch.

    z = t x + (1 - t) eps with eps = noise_scale N(0, I) and t logit-normal. pred_param 'x': the
    network outputs x-hat and v-hat = (x-hat - z) / max(1 - t, t_eps), against the target
    v = (x - z) / max(1 - t, t_eps) (an x-loss weighted by 1 / max(1 - t, t_eps)^2); 'v': the network
    outputs v-hat, against v = x - eps. Both use the unfiltered z: a Spectral Forcing model filters its
    own input only. model_fn(z, t) or model_fn(z, t, labels) -> (B, ...). Returns (loss, {'t': t}).
    """
    if pred_param not in FLOW_PREDICTIONS:
        raise ValueError(f"pred_param={pred_param!r}; use one of {FLOW_PREDICTIONS}.")
    x = x.astype(jnp.float32)
    key_t, key_eps = jax.random.split(key)
    t = logit_normal_t(key_t, x.shape[0], p_mean, p_std)
    noise = jax.random.normal(key_eps, x.shape, jnp.float32)
    z = schedule.q_sample(x, t, noise)
    out = (model_fn(z, t) if labels is None else model_fn(z, t, labels)).astype(jnp.float32)
    if out.shape != x.shape:
        raise ValueError(f"model output shape {out.shape} != data shape {x.shape}")
    if pred_param == "x":
        denom = broadcast_to_data(jnp.maximum(1.0 - t, schedule.t_eps), x)
        v, v_hat = (x - z) / denom, (out - z) / denom
    else:
        v, v_hat = x - schedule.noise_scale * noise, out
    return jnp.mean(jnp.square(v - v_hat)), {"t": t}

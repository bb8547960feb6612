"""Classifier-free guidance (spec dctdiff §9.3, spectral §3.3) as a model_fn wrapper for any sampler.

    out = out_u + w (out_c - out_u)

on whatever the model predicts (eps-hat for the VP samplers, v-hat for the flow samplers). It is only
meaningful for models trained with label dropout to a null class (row `num_classes` of the label table).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dctjax.diffusion.schedules import broadcast_to_data

GuidedModel = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def guided_model_fn(
    model: GuidedModel,
    labels: jax.Array,
    *,
    null_label: int,
    guidance: float | jax.Array,
    interval: tuple[float, float] | None = None,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns model_fn(x, t) -> guided output (B, ...) float32, for any registered sampler.

    Args:
      model: model(x, t, y) with x (2B, ...), t (2B,), y (2B,) int; called ONCE per model_fn call on the
        conditional and unconditional halves concatenated along the batch axis.
      labels: class labels (B,) int.
      null_label: the dropped-label class (num_classes in DCTdiff / JiT).
      guidance: w; w = 1 returns the conditional output exactly, w = 0 the unconditional one.
      interval: optional (t_lo, t_hi): guidance only where t < t_hi and (t_lo == 0 or t > t_lo), per sample
        (JiT); elsewhere w = 1. t is in the sampler's own convention (flow: t = 1 is data).

    Computed as out_c + (w - 1)(out_c - out_u), equal to out_u + w (out_c - out_u), so w = 1 is exact.
    """
    labels = jnp.asarray(labels)
    if interval is not None:
        t_lo, t_hi = (float(v) for v in interval)
        if not t_lo < t_hi:
            raise ValueError(f"guidance interval must have t_lo < t_hi, got {interval}")

    def model_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        b = x.shape[0]
        y = jnp.concatenate([labels, jnp.full_like(labels, null_label)])
        out = model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), y).astype(jnp.float32)
        out_c, out_u = out[:b], out[b:]
        w = jnp.full((b,), guidance, jnp.float32)
        if interval is not None:
            inside = t < t_hi
            if t_lo != 0.0:
                inside &= t > t_lo
            w = jnp.where(inside, w, 1.0)
        return out_c + broadcast_to_data(w - 1.0, out_c) * (out_c - out_u)

    return model_fn

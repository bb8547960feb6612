"""Images from a diffusion model: draw x_T, run a registered sampler, decode the representation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dctjax.diffusion.objectives import as_eps_model
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import VPSchedule


def generate(
    model: Any,
    representation: Any,
    schedule: VPSchedule,
    key: jax.Array,
    num: int,
    *,
    sampler: str = "euler_ode",
    nfe: int = 50,
    labels: jax.Array | None = None,
    prediction: str = "eps",
    **sampler_kwargs: Any,
) -> jax.Array:
    """uint8 images (num, H, W, 3): x_T ~ N(0, I) of the representation's shape, `sampler` with
    `nfe` network calls (float32 state), then `representation.decode`. Jit it with the model
    passed through `nnx.split`/`merge` or call it eagerly (the sampler loop is compiled)."""
    sample = get_sampler(sampler)
    noise_key, sampler_key = jax.random.split(key)
    x_T = jax.random.normal(noise_key, (num, *representation.shape), jnp.float32)

    def model_fn(x, t):
        return model(x, t) if labels is None else model(x, t, labels)

    eps_fn = as_eps_model(model_fn, schedule, prediction)
    x0 = sample(eps_fn, schedule, x_T, nfe, sampler_key, **sampler_kwargs)
    return representation.decode(x0)

"""Images from a diffusion model: draw x_T, run a registered sampler, decode the representation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dctjax.diffusion.guidance import guided_model_fn
from dctjax.diffusion.objectives import as_eps_model
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import VPSchedule


def initial_noise(key: jax.Array, indices: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_T for the samples numbered `indices` (B,): sample i is N(0, I) drawn from fold_in(key, i).

    Drawing per sample index makes a deterministic sampler's i-th image independent of the batch
    size and of the number of devices. Returns (B, *shape) float32.
    """
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32))(
        indices
    )


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
    guidance: float | None = None,
    null_label: int | None = None,
    x_T: jax.Array | None = None,
    **sampler_kwargs: Any,
) -> jax.Array:
    """uint8 images (num, H, W, 3): x_T ~ N(0, I) of the representation's shape, `sampler` with
    `nfe` network calls (float32 state), then `representation.decode`.

    labels: (num,) int class labels for a class-conditional model.
    guidance: classifier-free guidance scale w (eps = eps_u + w (eps_c - eps_u)); needs `labels`
      and the model's `null_label`. None means no guidance (one conditional call per step).
    x_T: the starting noise (num, *representation.shape); default: drawn from `key`.
    Jit it with the model passed through `nnx.split`/`merge` or call it eagerly (the sampler loop
    is compiled).
    """
    sample = get_sampler(sampler)
    noise_key, sampler_key = jax.random.split(key)
    if x_T is None:
        x_T = jax.random.normal(noise_key, (num, *representation.shape), jnp.float32)
    elif x_T.shape != (num, *representation.shape):
        raise ValueError(f"x_T has shape {x_T.shape}; expected {(num, *representation.shape)}.")

    if guidance is not None:
        if labels is None or null_label is None:
            raise ValueError(
                "classifier-free guidance needs class labels and the model's null_label."
            )
        model_fn = guided_model_fn(model, labels, null_label=null_label, guidance=guidance)
    elif labels is None:
        model_fn = model
    else:

        def model_fn(x, t):
            return model(x, t, labels)

    eps_fn = as_eps_model(model_fn, schedule, prediction)
    x0 = sample(eps_fn, schedule, x_T, nfe, sampler_key, **sampler_kwargs)
    return representation.decode(x0)

"""Samplers (spec dctdiff §9) behind a name registry.

Every sampler has the signature

    sample(model_fn, schedule, x_T, nfe, key=None, **kw) -> x_0

- model_fn(x, t) -> eps-hat with x (B, ...) float32 and t (B,) float32, continuous in [0, 1]; the
  network multiplies t by 999 itself. Its output is cast to float32 before any solver arithmetic.
  Class labels, classifier-free guidance or x0/v-prediction networks are handled by wrapping model_fn
  (e.g. `lambda x, t: net(x, t, labels)`, `objectives.as_eps_model`), so callers never change.
- schedule: a `VPSchedule` (the same snr_scale as training).
- x_T: the starting noise (B, ...), x_T ~ N(0, I) at t = 1; the state is kept in float32.
- nfe: number of network calls, a Python int (static: it fixes the time grid).
- key: PRNG key, required by stochastic samplers only.
- **kw: sampler-specific keyword-only options (e.g. t_min here, t_end / order for DPM-Solver later);
  configs pass them through as a dict.

Each sampler runs as one compiled loop (`lax.fori_loop` over a precomputed time grid), so the traced
program does not grow with nfe. Wrap the call in `jax.jit` (with nfe static) to compile it.

To add a sampler (DPM-Solver, DDIM, DPM-Solver++ are planned, spec §9.1 and §9.3):

    @register_sampler("ddim")
    def ddim(model_fn, schedule, x_T, nfe, key=None, *, t_end=1e-4): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.diffusion.schedules import VPSchedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class Sampler(Protocol):
    def __call__(
        self,
        model_fn: ModelFn,
        schedule: VPSchedule,
        x_T: jax.Array,
        nfe: int,
        key: jax.Array | None = None,
        **kw,
    ) -> jax.Array: ...


SAMPLERS: dict[str, Sampler] = {}


def register_sampler(name: str) -> Callable[[Sampler], Sampler]:
    """Decorator: registers a sampler under `name` (names must be unique)."""

    def wrap(fn: Sampler) -> Sampler:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        SAMPLERS[name] = fn
        return fn

    return wrap


def get_sampler(name: str) -> Sampler:
    """Looks up a sampler by name; the error lists the registered names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; available: {sorted(SAMPLERS)}") from None


def available_samplers() -> list[str]:
    """Sorted names of the registered samplers."""
    return sorted(SAMPLERS)


# ---- time grids ---------------------------------------------------------------------------------------
def euler_time_grid(nfe: int, t_min: float = 1e-3) -> np.ndarray:
    """Spec §9.2 grid, descending: linspace(t_min, 1, nfe) reversed, then 0. Shape (nfe + 1,), float32.

    Step i goes from grid[i] to grid[i + 1] and calls the network once at grid[i]: nfe calls in total.
    """
    if int(nfe) != nfe or nfe < 2:
        raise ValueError(f"nfe must be an int >= 2 for the Euler samplers, got {nfe}")
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must be in (0, 1), got {t_min}")
    grid = np.concatenate([[0.0], np.linspace(t_min, 1.0, int(nfe))])[::-1]
    return grid.astype(np.float32)


def _eps(model_fn: ModelFn, x: jax.Array, s: jax.Array) -> jax.Array:
    t_vec = jnp.full((x.shape[0],), s, jnp.float32)
    return model_fn(x, t_vec).astype(jnp.float32)


def _euler(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None,
    t_min: float,
    stochastic: bool,
) -> jax.Array:
    """Shared Euler loop for the probability-flow ODE and the Euler-Maruyama SDE (spec §9.2).

    From s to t < s, Delta = t - s, beta = beta_c(s), eps-hat = model_fn(x, s), score = -eps-hat / sigma_s:
        ODE: x <- x + (-beta x / 2 - beta score / 2) Delta
        SDE: x <- x + (-beta x / 2 - beta score) Delta + sqrt(beta |Delta|) z   (no z on the step to t = 0)
    """
    grid = jnp.asarray(euler_time_grid(nfe, t_min))
    x = x_T.astype(jnp.float32)
    if stochastic and key is None:
        raise ValueError("euler_maruyama needs a PRNG key")
    score_factor = 1.0 if stochastic else 0.5

    def body(i, x):
        s, t = grid[i], grid[i + 1]
        delta = t - s  # < 0
        beta = schedule.beta_c(s)
        score = -_eps(model_fn, x, s) / schedule.sigma(s)
        x_new = x + (-0.5 * beta * x - score_factor * beta * score) * delta
        if stochastic:
            z = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
            noise_scale = jnp.where(t > 0, jnp.sqrt(-beta * delta), 0.0)
            x_new = x_new + noise_scale * z
        return x_new

    return jax.lax.fori_loop(0, int(nfe), body, x)


@register_sampler("euler_ode")
def euler_ode(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
    *,
    t_min: float = 1e-3,
) -> jax.Array:
    """Euler probability-flow ODE (spec §9.2; the poster's 'Euler ODE / DDIM' columns). Deterministic; key unused.

    Grid: 1 = t_0 > ... > t_{nfe-1} = t_min > t_nfe = 0 (uniform between t_min and 1); nfe network calls.
    Returns x_0 (B, ...) float32.
    """
    del key
    return _euler(model_fn, schedule, x_T, nfe, None, t_min, stochastic=False)


@register_sampler("euler_maruyama")
def euler_maruyama(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
    *,
    t_min: float = 1e-3,
) -> jax.Array:
    """Euler-Maruyama reverse SDE (spec §9.2). Same grid as `euler_ode`; the last step (to t = 0) adds no noise.

    key: required; step i draws its noise from fold_in(key, i). Returns x_0 (B, ...) float32.
    """
    return _euler(model_fn, schedule, x_T, nfe, key, t_min, stochastic=True)

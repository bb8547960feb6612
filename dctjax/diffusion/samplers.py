"""Samplers (spec dctdiff §9, spectral §3.3) behind a name registry.

Every sampler has the signature

    sample(model_fn, schedule, x_T, nfe, key=None, **kw) -> x_0

- model_fn(x, t) -> prediction with x (B, ...) float32 and t (B,) float32, continuous in [0, 1]. Its output
  is cast to float32 before any solver arithmetic. Class labels, classifier-free guidance
  (`guidance.guided_model_fn`) or x0/v-prediction networks are handled by wrapping model_fn (e.g.
  `lambda x, t: net(x, t, labels)`, `objectives.as_eps_model`, `objectives.x_to_velocity`), so callers
  never change.
- schedule: a `VPSchedule` (the same snr_scale as training) for the VP samplers, whose model_fn returns
  eps-hat and whose network multiplies t by 999 itself; a `FlowSchedule` for the rectified-flow samplers,
  whose model_fn returns the velocity v-hat (t = 0 noise, t = 1 data).
- x_T: the starting noise (B, ...): x_T ~ N(0, I) at t = 1 for VP; z ~ noise_scale N(0, I) at t = 0 for flows
  (the caller multiplies by noise_scale). The state is kept in float32.
- nfe: number of network calls, a Python int (static: it fixes the time grid).
- key: PRNG key, required by stochastic samplers only.
- **kw: sampler-specific keyword-only options (t_min, t_end, order, eta, skip_type); configs pass them
  through as a dict. Bad options raise ValueError before anything is traced.

Registered samplers:

    VP (schedule: VPSchedule, model_fn -> eps-hat)
      euler_ode       Euler probability-flow ODE (§9.2), grid to t = 0; nfe calls
      euler_maruyama  Euler-Maruyama reverse SDE (§9.2); key
      dpm_solver      DPM-Solver singlestep "fast" version, orders 1/2/3 (§9.1), to t_end; nfe calls
      ddim            DDIM, eta = 0 (= DPM-Solver-1) or eta > 0 (key) (§9.3), to t_end; nfe calls
      dpm_solver_pp   DPM-Solver++(2M), data prediction, multistep (§9.3), to t_end; nfe calls
    Flow (schedule: FlowSchedule, model_fn -> v-hat)
      heun            JiT Heun + final Euler step (spectral §3.3); 2 ((nfe + 1) // 2) - 1 calls
      euler_flow      Euler only; nfe calls

Each sampler runs as one compiled loop (`lax.fori_loop` over a precomputed time grid, plus for DPM-Solver
and Heun a static tail of at most two steps), so the traced program does not grow with nfe. Wrap the call
in `jax.jit` (with nfe static) to compile it.

To add a sampler:

    @register_sampler("my_sampler")
    def my_sampler(model_fn, schedule, x_T, nfe, key=None, *, t_end=1e-4): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.diffusion.schedules import FlowSchedule, VPSchedule
from dctjax.registry import Registry

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
Schedule = VPSchedule | FlowSchedule
SKIP_TYPES = ("logSNR", "time_uniform")


class Sampler(Protocol):
    def __call__(
        self,
        model_fn: ModelFn,
        schedule: Schedule,
        x_T: jax.Array,
        nfe: int,
        key: jax.Array | None = None,
        **kw,
    ) -> jax.Array: ...


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register_sampler(name: str) -> Callable[[Sampler], Sampler]:
    """Decorator: registers a sampler under `name` (names must be unique)."""
    return SAMPLERS.register(name)


def get_sampler(name: str) -> Sampler:
    """Looks up a sampler by name; the error lists the registered names."""
    return SAMPLERS.get(name)


def available_samplers() -> list[str]:
    """Sorted names of the registered samplers."""
    return SAMPLERS.names()


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


def vp_time_grid(
    schedule: VPSchedule, steps: int, t_end: float = 1e-4, skip_type: str = "logSNR"
) -> jax.Array:
    """Descending grid 1 = t_0 > ... > t_steps = t_end, shape (steps + 1,) float32 (spec §9.1, §9.3).

    'logSNR': lambda_i uniform between lambda(1) and lambda(t_end), t_i = t(lambda_i) by the closed-form
    inverse (the end points are pinned to 1 and t_end exactly); 'time_uniform': linspace(1, t_end).
    """
    _check_skip_type(skip_type)
    t_end = _check_t_end(t_end)
    if skip_type == "time_uniform":
        return jnp.asarray(np.linspace(1.0, t_end, steps + 1), jnp.float32)
    lam = jnp.linspace(schedule.marginal_lambda(1.0), schedule.marginal_lambda(t_end), steps + 1)
    return schedule.inverse_lambda(lam).at[0].set(1.0).at[-1].set(t_end)


# ---- argument checks (plain Python, before tracing) ------------------------------------------------------
def _check_nfe(nfe: int, minimum: int = 1) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, int | np.integer) or nfe < minimum:
        raise ValueError(f"nfe must be a Python int >= {minimum}, got {nfe!r}")
    return int(nfe)


def _check_t_end(t_end: float) -> float:
    if not 0.0 < t_end < 1.0:
        raise ValueError(f"t_end must be in (0, 1), got {t_end}")
    return float(t_end)


def _check_skip_type(skip_type: str) -> None:
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"unknown skip_type {skip_type!r}; available: {list(SKIP_TYPES)}")


def _check_schedule(schedule: Schedule, cls: type, sampler: str) -> None:
    if not isinstance(schedule, cls):
        raise TypeError(f"{sampler} needs a {cls.__name__}, got {type(schedule).__name__}")


def _call_model(model_fn: ModelFn, x: jax.Array, s: jax.Array) -> jax.Array:
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
    _check_schedule(schedule, VPSchedule, "euler_maruyama" if stochastic else "euler_ode")
    grid = jnp.asarray(euler_time_grid(nfe, t_min))
    x = x_T.astype(jnp.float32)
    if stochastic and key is None:
        raise ValueError("euler_maruyama needs a PRNG key")
    score_factor = 1.0 if stochastic else 0.5

    def body(i, x):
        s, t = grid[i], grid[i + 1]
        delta = t - s  # < 0
        beta = schedule.beta_c(s)
        score = -_call_model(model_fn, x, s) / schedule.sigma(s)
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


# ---- DPM-Solver (spec §9.1) ------------------------------------------------------------------------------
def dpm_solver_orders(nfe: int, order: int = 3) -> list[int]:
    """Orders of the singlestep intervals for `nfe` calls; they sum to nfe.

    order 3 (spec §9.1): K = nfe // 3 + 1 intervals, [3] (K - 2) + [2, 1], [3] (K - 1) + [1] or
    [3] (K - 1) + [2] for nfe mod 3 = 0, 1, 2. Orders 1 and 2 (the reference's
    get_orders_and_timesteps_for_singlestep_solver): [1] nfe; [2] (nfe // 2), plus [1] if nfe is odd.
    """
    nfe = _check_nfe(nfe)
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order!r}")
    if order == 3:
        tail = {0: [2, 1], 1: [1], 2: [2]}[nfe % 3]
        return [3] * (nfe // 3 + 1 - len(tail)) + tail
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    return [1] * nfe


def dpm_solver_time_grid(
    schedule: VPSchedule,
    nfe: int,
    order: int = 3,
    t_end: float = 1e-4,
    skip_type: str = "logSNR",
) -> tuple[jax.Array, list[int]]:
    """(t grid (K + 1,) float32 descending from 1 to t_end, orders (K,)) of the singlestep solver.

    'logSNR': K intervals uniform in lambda. 'time_uniform' (as the reference): the points of
    linspace(1, t_end, nfe + 1) at the cumulative sums of the orders, so an order-k interval spans k fine steps.
    """
    orders = dpm_solver_orders(nfe, order)
    if skip_type == "time_uniform":
        fine = vp_time_grid(schedule, int(nfe), t_end, skip_type)
        return fine[np.cumsum([0, *orders])], orders
    return vp_time_grid(schedule, len(orders), t_end, skip_type), orders


def dpm_solver_step(
    model_fn: ModelFn, schedule: VPSchedule, x: jax.Array, s: jax.Array, t: jax.Array, order: int
) -> jax.Array:
    """One singlestep DPM-Solver-`order` update from s to t < s (spec §9.1): `order` network calls.

    x: (B, ...) float32; s, t: scalars. h = lambda_t - lambda_s; intermediate times s1, s2 = t(lambda_s + r h)
    with r1 = 1/2 (order 2) or r1 = 1/3, r2 = 2/3 (order 3). Returns x_t (B, ...) float32.
    """
    lam_s = schedule.marginal_lambda(s)
    h = schedule.marginal_lambda(t) - lam_s
    log_alpha_s = schedule.log_alpha(s)
    eps_s = _call_model(model_fn, x, s)

    def linear(u, r):
        """(time, alpha_u / alpha_s x - sigma_u (e^{r h} - 1) eps_s, sigma_u) at lambda_u = lambda_s + r h."""
        if u is None:
            u = schedule.inverse_lambda(lam_s + r * h)
        sigma_u = schedule.sigma(u)
        x_u = jnp.exp(schedule.log_alpha(u) - log_alpha_s) * x - sigma_u * jnp.expm1(r * h) * eps_s
        return u, x_u, sigma_u

    _, x_t, sigma_t = linear(t, 1.0)
    if order == 1:
        return x_t
    if order == 2:
        r1 = 0.5
        s1, u, _ = linear(None, r1)
        return x_t - (sigma_t / (2.0 * r1)) * jnp.expm1(h) * (_call_model(model_fn, u, s1) - eps_s)
    if order != 3:
        raise ValueError(f"DPM-Solver order must be 1, 2 or 3, got {order!r}")
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, u1, _ = linear(None, r1)
    d1 = _call_model(model_fn, u1, s1) - eps_s
    s2, u2, sigma_s2 = linear(None, r2)
    u2 = u2 - (sigma_s2 * r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1
    d2 = _call_model(model_fn, u2, s2) - eps_s
    return x_t - (sigma_t / r2) * (jnp.expm1(h) / h - 1.0) * d2


@register_sampler("dpm_solver")
def dpm_solver(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
    *,
    order: int = 3,
    t_end: float = 1e-4,
    skip_type: str = "logSNR",
) -> jax.Array:
    """DPM-Solver v1, singlestep "fast" version (spec §9.1; the reference default). Deterministic; key unused.

    Exactly nfe network calls over the intervals of `dpm_solver_time_grid`; the state at t_end is the sample
    (no denoising step). The orders are [order] * n followed by at most two lower-order steps: one
    `fori_loop` runs the n equal-order steps and the short tail is unrolled.
    Options: order (1, 2, 3), t_end, skip_type ('logSNR' or 'time_uniform'). Returns (B, ...) float32.
    """
    del key
    _check_schedule(schedule, VPSchedule, "dpm_solver")
    ts, orders = dpm_solver_time_grid(schedule, nfe, order, t_end, skip_type)
    n_main = next((i for i, o in enumerate(orders) if o != orders[0]), len(orders))

    def body(i, x):
        return dpm_solver_step(model_fn, schedule, x, ts[i], ts[i + 1], orders[0])

    x = jax.lax.fori_loop(0, n_main, body, x_T.astype(jnp.float32))
    for i in range(n_main, len(orders)):
        x = dpm_solver_step(model_fn, schedule, x, ts[i], ts[i + 1], orders[i])
    return x


# ---- DDIM and DPM-Solver++(2M) (spec §9.3) ----------------------------------------------------------------
@register_sampler("ddim")
def ddim(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
    *,
    eta: float = 0.0,
    t_end: float = 1e-4,
    skip_type: str = "time_uniform",
) -> jax.Array:
    """DDIM (spec §9.3) on `vp_time_grid(schedule, nfe, t_end, skip_type)`: nfe steps, one call each.

    From s to t, x0-hat = (x_s - sigma_s eps-hat) / alpha_s and
        x_t = alpha_t x0-hat + sqrt(sigma_t^2 - rho^2) eps-hat + rho z,
        rho = eta (sigma_t / sigma_s) sqrt(1 - alpha_s^2 / alpha_t^2).
    eta = 0 is deterministic and equals DPM-Solver-1 on the same grid; eta = 1 is the ancestral (DDPM)
    sampler. eta in [0, 1]; key required when eta > 0 (step i draws fold_in(key, i)). The default grid is
    uniform in t (skip_type='logSNR': uniform in lambda). Returns (B, ...) float32 at t_end.
    """
    _check_schedule(schedule, VPSchedule, "ddim")
    nfe = _check_nfe(nfe)
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim eta must be in [0, 1], got {eta}")
    if eta > 0.0 and key is None:
        raise ValueError("ddim with eta > 0 needs a PRNG key")
    ts = vp_time_grid(schedule, nfe, t_end, skip_type)

    def body(i, x):
        s, t = ts[i], ts[i + 1]
        eps = _call_model(model_fn, x, s)
        x0 = (x - schedule.sigma(s) * eps) / schedule.alpha(s)
        alpha_t, sigma_t = schedule.alpha(t), schedule.sigma(t)
        if eta == 0.0:
            return alpha_t * x0 + sigma_t * eps
        # 1 - alpha_s^2 / alpha_t^2 = -expm1(2 (log alpha_s - log alpha_t)), accurate for short steps.
        rho_sq = (
            eta**2
            * schedule.sigma_sq(t)
            / schedule.sigma_sq(s)
            * -jnp.expm1(2.0 * (schedule.log_alpha(s) - schedule.log_alpha(t)))
        )
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        eps_coef = jnp.sqrt(jnp.maximum(schedule.sigma_sq(t) - rho_sq, 0.0))
        return alpha_t * x0 + eps_coef * eps + jnp.sqrt(rho_sq) * z

    return jax.lax.fori_loop(0, nfe, body, x_T.astype(jnp.float32))


@register_sampler("dpm_solver_pp")
def dpm_solver_pp(
    model_fn: ModelFn,
    schedule: VPSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
    *,
    t_end: float = 1e-4,
    skip_type: str = "logSNR",
) -> jax.Array:
    """DPM-Solver++(2M), data prediction, multistep (spec §9.3). Deterministic; key unused.

    model_fn returns eps-hat; x0-hat = (x - sigma eps-hat) / alpha. nfe steps on `vp_time_grid`, one call each,
    with h = lambda_t - lambda_s:
        first step:  x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0-hat_s
        later steps: r = h_prev / h, D = (1 + 1/(2r)) x0-hat_s - x0-hat_prev / (2r),
                     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D.
    No lower-order final step. Returns (B, ...) float32 at t_end.
    """
    del key
    _check_schedule(schedule, VPSchedule, "dpm_solver_pp")
    nfe = _check_nfe(nfe)
    ts = vp_time_grid(schedule, nfe, t_end, skip_type)
    lam = schedule.marginal_lambda(ts)
    hs = lam[1:] - lam[:-1]
    h_prev = jnp.concatenate([hs[:1], hs[:-1]])

    def body(i, carry):
        x, x0_prev = carry
        s, t, h = ts[i], ts[i + 1], hs[i]
        x0 = (x - schedule.sigma(s) * _call_model(model_fn, x, s)) / schedule.alpha(s)
        half_inv_r = 0.5 * h / h_prev[i]  # 1 / (2r)
        d = jnp.where(i == 0, x0, (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev)
        x = (schedule.sigma(t) / schedule.sigma(s)) * x - schedule.alpha(t) * jnp.expm1(-h) * d
        return x, x0

    x = x_T.astype(jnp.float32)
    return jax.lax.fori_loop(0, nfe, body, (x, jnp.zeros_like(x)))[0]


# ---- rectified flow (spectral §3.3) ----------------------------------------------------------------------
def flow_time_grid(steps: int) -> np.ndarray:
    """linspace(0, 1, steps + 1), float32, ascending (t = 0 noise, t = 1 data)."""
    return np.linspace(0.0, 1.0, steps + 1).astype(np.float32)


def _flow(
    model_fn: ModelFn, schedule: FlowSchedule, z: jax.Array, steps: int, heun: bool, name: str
) -> jax.Array:
    _check_schedule(schedule, FlowSchedule, name)
    grid = jnp.asarray(flow_time_grid(steps))
    z = z.astype(jnp.float32)

    def euler(i, z):
        t, t_next = grid[i], grid[i + 1]
        return z + (t_next - t) * _call_model(model_fn, z, t)

    def heun_step(i, z):
        t, t_next = grid[i], grid[i + 1]
        dt = t_next - t
        v1 = _call_model(model_fn, z, t)
        v2 = _call_model(model_fn, z + dt * v1, t_next)
        return z + dt * 0.5 * (v1 + v2)

    if not heun:
        return jax.lax.fori_loop(0, steps, euler, z)
    if steps > 1:
        z = jax.lax.fori_loop(0, steps - 1, heun_step, z)
    return euler(steps - 1, z)  # never evaluates the network at t = 1


@register_sampler("heun")
def heun(
    model_fn: ModelFn,
    schedule: FlowSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
) -> jax.Array:
    """JiT sampler (spectral §3.3): Heun on the first steps - 1 intervals of linspace(0, 1, steps + 1), Euler
    on the last. Deterministic; key unused.

    model_fn(z, t) -> v-hat (wrap x-prediction nets with `objectives.x_to_velocity`). x_T: z at t = 0,
    already noise_scale N(0, I). steps = (nfe + 1) // 2, i.e. 2 steps - 1 network calls: nfe = 99 is JiT's
    50 steps; an even nfe uses nfe - 1 calls. Returns z at t = 1 (B, ...) float32.
    """
    del key
    nfe = _check_nfe(nfe)
    return _flow(model_fn, schedule, x_T, (nfe + 1) // 2, heun=True, name="heun")


@register_sampler("euler_flow")
def euler_flow(
    model_fn: ModelFn,
    schedule: FlowSchedule,
    x_T: jax.Array,
    nfe: int,
    key: jax.Array | None = None,
) -> jax.Array:
    """Euler-only option of the JiT sampler: nfe Euler steps on linspace(0, 1, nfe + 1), one call each at the
    left end of each interval. Same conventions as `heun`. Returns (B, ...) float32."""
    del key
    nfe = _check_nfe(nfe)
    return _flow(model_fn, schedule, x_T, nfe, heun=False, name="euler_flow")

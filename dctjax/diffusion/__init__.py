"""Diffusion math for DCTdiff and the pixel baseline, as small pure modules (spec dctdiff §6, §7, §9).

Modules: `schedules` (linear VP-SDE with SNR scaling c, log-SNR and its closed-form inverse, the 999 t
network-time convention), `objectives` (the eps / x0 / v regression loss with per-feature weights) and
`samplers` (a name registry; Euler probability-flow ODE and Euler-Maruyama SDE, each one compiled loop).

Time convention: models are always called as model_fn(x_t, t) with continuous t in [0, 1], shape (B,);
the network multiplies by 999 (`network_time`).
"""

from dctjax.diffusion.objectives import (
    PREDICTIONS,
    as_eps_model,
    diffusion_loss,
    eps_to_v,
    eps_to_x0,
    get_prediction,
    score,
    v_to_eps,
    x0_to_eps,
)
from dctjax.diffusion.samplers import (
    SAMPLERS,
    available_samplers,
    euler_maruyama,
    euler_ode,
    euler_time_grid,
    get_sampler,
    register_sampler,
)
from dctjax.diffusion.schedules import NETWORK_TIME_SCALE, VPSchedule, network_time

__all__ = [
    "NETWORK_TIME_SCALE",
    "PREDICTIONS",
    "SAMPLERS",
    "VPSchedule",
    "as_eps_model",
    "available_samplers",
    "diffusion_loss",
    "eps_to_v",
    "eps_to_x0",
    "euler_maruyama",
    "euler_ode",
    "euler_time_grid",
    "get_prediction",
    "get_sampler",
    "network_time",
    "register_sampler",
    "score",
    "v_to_eps",
    "x0_to_eps",
]

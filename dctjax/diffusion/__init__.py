"""Diffusion math for DCTdiff, the pixel baseline and JiT-style flows, as small pure modules
(spec dctdiff §6, §7, §9; spectral §3).

Modules: `schedules` (linear VP-SDE with SNR scaling c, log-SNR and its closed-form inverse, the 999 t
network-time convention; `FlowSchedule` for rectified flow), `objectives` (the eps / x0 / v regression loss
with per-feature weights, prediction conversions, `x_to_velocity`), `guidance` (classifier-free guidance as a
model_fn wrapper) and `samplers` (a name registry, each sampler one compiled loop: Euler probability-flow ODE,
Euler-Maruyama SDE, DPM-Solver fast version, DDIM, DPM-Solver++(2M); Heun and Euler for flows).

Time convention: models are always called as model_fn(x_t, t) with continuous t in [0, 1], shape (B,).
VP: t = 1 is noise and the network multiplies by 999 (`network_time`). Flow: t = 0 is noise, t = 1 data.
"""

from dctjax.diffusion.guidance import guided_model_fn
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
    x_to_velocity,
)
from dctjax.diffusion.samplers import (
    SAMPLERS,
    available_samplers,
    ddim,
    dpm_solver,
    dpm_solver_orders,
    dpm_solver_pp,
    dpm_solver_step,
    dpm_solver_time_grid,
    euler_flow,
    euler_maruyama,
    euler_ode,
    euler_time_grid,
    flow_time_grid,
    get_sampler,
    heun,
    register_sampler,
    vp_time_grid,
)
from dctjax.diffusion.schedules import NETWORK_TIME_SCALE, FlowSchedule, VPSchedule, network_time

__all__ = [
    "NETWORK_TIME_SCALE",
    "PREDICTIONS",
    "SAMPLERS",
    "FlowSchedule",
    "VPSchedule",
    "as_eps_model",
    "available_samplers",
    "ddim",
    "diffusion_loss",
    "dpm_solver",
    "dpm_solver_orders",
    "dpm_solver_pp",
    "dpm_solver_step",
    "dpm_solver_time_grid",
    "eps_to_v",
    "eps_to_x0",
    "euler_flow",
    "euler_maruyama",
    "euler_ode",
    "euler_time_grid",
    "flow_time_grid",
    "get_prediction",
    "get_sampler",
    "guided_model_fn",
    "heun",
    "network_time",
    "register_sampler",
    "score",
    "v_to_eps",
    "vp_time_grid",
    "x0_to_eps",
    "x_to_velocity",
]

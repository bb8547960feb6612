"""DPM-Solver, DDIM, DPM-Solver++(2M), the flow Heun sampler and CFG (spec dctdiff §9.1, §9.3; spectral §3.3).

Two independent checks:
- Gaussian data N(MU, diag S^2) with its exact eps-hat (VP) or velocity (flow). Every deterministic sampler
  is then an affine map x_0 = A x_T + b, so its output moments from the exact t = 1 (t = 0 for flows)
  marginal are exact: mean A m_1 + b, variance A^2 v_1. Stochastic samplers are compared with a float64
  moment recursion of the spec's update. A Monte Carlo batch (N_MC x 4) run in the same call checks mean
  and covariance of real samples.
- A float64 NumPy transcription of the spec formulas (grid and updates) with a nonlinear eps function.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dctjax.diffusion import (
    FlowSchedule,
    VPSchedule,
    ddim,
    dpm_solver,
    dpm_solver_orders,
    dpm_solver_pp,
    dpm_solver_step,
    dpm_solver_time_grid,
    euler_flow,
    get_sampler,
    guided_model_fn,
    heun,
    x_to_velocity,
)
from tests.diffusion.test_samplers import MU, C, S, exact_eps_model, ref_moments

N_MC = 20000
B0, B1 = 0.1, 20.0


# ---- float64 transcription of spec §6 ---------------------------------------------------------------------
def np_alpha_sigma(t, c):
    ab = np.exp(-(B0 * t + 0.5 * (B1 - B0) * t * t))
    abc = c * ab / (1 + (c - 1) * ab)
    return np.sqrt(abc), np.sqrt(1 - abc)


def np_lambda(t, c):
    a, s = np_alpha_sigma(t, c)
    return np.log(a) - np.log(s)


def np_inv_lambda(lam, c):
    a = np.log(1 + c * np.exp(-2 * lam))
    return (np.sqrt(B0**2 + 2 * (B1 - B0) * a) - B0) / (B1 - B0)


def nl_eps(xp, x, t):
    """A nonlinear stand-in for a network; t broadcasts against x."""
    return xp.tanh(x) * (0.5 + t) + 0.2 * xp.sin(3.0 * t * x) - 0.3 * t


def jnp_nl_model(x, t):
    return nl_eps(jnp, x, t[:, None])


# ---- float64 transcription of the spec updates -------------------------------------------------------------
def np_dpm_step(eps, x, s, t, order, c):
    """Spec §9.1 update s -> t of DPM-Solver-`order` (float64)."""
    lam_s, lam_t = np_lambda(s, c), np_lambda(t, c)
    h = lam_t - lam_s
    (a_s, _), (a_t, sg_t) = np_alpha_sigma(s, c), np_alpha_sigma(t, c)
    e_s = eps(x, s)
    x_t = (a_t / a_s) * x - sg_t * np.expm1(h) * e_s
    if order == 1:
        return x_t
    if order == 2:
        r1 = 0.5
        s1 = np_inv_lambda(lam_s + r1 * h, c)
        a1, sg1 = np_alpha_sigma(s1, c)
        u = (a1 / a_s) * x - sg1 * np.expm1(r1 * h) * e_s
        return x_t - (sg_t / (2 * r1)) * np.expm1(h) * (eps(u, s1) - e_s)
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = np_inv_lambda(lam_s + r1 * h, c), np_inv_lambda(lam_s + r2 * h, c)
    (a1, sg1), (a2, sg2) = np_alpha_sigma(s1, c), np_alpha_sigma(s2, c)
    u1 = (a1 / a_s) * x - sg1 * np.expm1(r1 * h) * e_s
    d1 = eps(u1, s1) - e_s
    u2 = (
        (a2 / a_s) * x
        - sg2 * np.expm1(r2 * h) * e_s
        - (sg2 * r2 / r1) * (np.expm1(r2 * h) / (r2 * h) - 1) * d1
    )
    d2 = eps(u2, s2) - e_s
    return x_t - (sg_t / r2) * (np.expm1(h) / h - 1) * d2


def np_grid(n, c, t_end, skip_type):
    if skip_type == "logSNR":
        return np_inv_lambda(np.linspace(np_lambda(1.0, c), np_lambda(t_end, c), n + 1), c)
    return np.linspace(1.0, t_end, n + 1)


def np_dpm_solver(eps, x, orders, c, t_end=1e-4, skip_type="logSNR"):
    if skip_type == "logSNR":
        ts = np_grid(len(orders), c, t_end, skip_type)
    else:
        ts = np_grid(sum(orders), c, t_end, skip_type)[np.cumsum([0, *orders])]
    for i, order in enumerate(orders):
        x = np_dpm_step(eps, x, ts[i], ts[i + 1], order, c)
    return x


def np_ddim(eps, x, nfe, c, t_end=1e-4, skip_type="time_uniform"):
    ts = np_grid(nfe, c, t_end, skip_type)
    for s, t in zip(ts[:-1], ts[1:], strict=True):
        (a_s, sg_s), (a_t, sg_t) = np_alpha_sigma(s, c), np_alpha_sigma(t, c)
        e = eps(x, s)
        x = a_t * (x - sg_s * e) / a_s + sg_t * e
    return x


def np_dpm_solver_pp(eps, x, nfe, c, t_end=1e-4):
    ts = np_grid(nfe, c, t_end, "logSNR")
    x0_prev, h_prev = None, None
    for s, t in zip(ts[:-1], ts[1:], strict=True):
        (a_s, sg_s), (a_t, sg_t) = np_alpha_sigma(s, c), np_alpha_sigma(t, c)
        h = np_lambda(t, c) - np_lambda(s, c)
        x0 = (x - sg_s * eps(x, s)) / a_s
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - x0_prev / (2 * r)
        x = (sg_t / sg_s) * x - a_t * np.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def ddim_moments(nfe, eta, c, m, v, t_end=1e-4):
    """Exact mean / variance after stochastic DDIM (spec §9.3, uniform t) with the Gaussian eps-hat."""
    ts = np.linspace(1.0, t_end, nfe + 1)
    for s, t in zip(ts[:-1], ts[1:], strict=True):
        (a_s, sg_s), (a_t, sg_t) = np_alpha_sigma(s, c), np_alpha_sigma(t, c)
        k = sg_s / (a_s**2 * S**2 + sg_s**2)  # eps-hat = k (x - a_s MU)
        rho = eta * (sg_t / sg_s) * np.sqrt(1 - a_s**2 / a_t**2)
        ce = np.sqrt(sg_t**2 - rho**2)
        lin = a_t * (1 - sg_s * k) / a_s + ce * k  # x_t = lin x + off + rho z
        off = a_t * sg_s * k * MU - ce * k * a_s * MU
        m, v = lin * m + off, lin * lin * v + rho**2
    return m, v


# ---- running the samplers on Gaussian data ----------------------------------------------------------------
def t1_marginal(c):
    """Exact mean / variance at t = 1."""
    a1, s1 = np_alpha_sigma(1.0, c)
    return a1 * MU, a1 * a1 * S**2 + s1 * s1


def mc_batch(m, v):
    """Rows 0 and 1 (for the affine map) followed by N_MC draws of N(m, diag v)."""
    draws = m + np.sqrt(v) * np.random.default_rng(0).standard_normal((N_MC, 4))
    return jnp.asarray(np.concatenate([np.zeros((1, 4)), np.ones((1, 4)), draws]), jnp.float32)


def vp_fn(name: str, nfe: int, c: float = C, **kw):
    """The jitted sampler (x_T, key) -> x_0 with the exact Gaussian eps-hat, compiled once per setting."""
    return _vp_fn(name, nfe, float(c), tuple(sorted(kw.items())))


@functools.cache
def _vp_fn(name, nfe, c, kw):
    sch = VPSchedule(snr_scale=c)
    return jax.jit(
        lambda x, k: get_sampler(name)(exact_eps_model(sch), sch, x, nfe, key=k, **dict(kw))
    )


def run_vp(name: str, nfe: int, c: float = C, **kw) -> np.ndarray:
    """Output (2 + N_MC, 4) float64 for the inputs `mc_batch` of the t = 1 marginal (cached)."""
    return _run_vp(name, nfe, float(c), tuple(sorted(kw.items())))


@functools.cache
def _run_vp(name, nfe, c, kw):
    out = vp_fn(name, nfe, c, **dict(kw))(mc_batch(*t1_marginal(c)), jax.random.key(1))
    return np.asarray(out, np.float64)


def affine_errors(out: np.ndarray, c: float) -> tuple[float, float]:
    """(max |mean - MU|, max |var - S^2|) of the exact output law of a deterministic sampler."""
    a, b = out[1] - out[0], out[0]
    m1, v1 = t1_marginal(c)
    return np.abs(a * m1 + b - MU).max(), np.abs(a * a * v1 - S**2).max()


def assert_mc_close(samples: np.ndarray, mean, var, slack_mean=0.0, slack_var=0.0):
    """Sample mean / covariance vs N(mean, diag var), within 5 standard errors plus a slack."""
    n = samples.shape[0]
    se_mean = np.sqrt(var / n)
    # sd of a sample covariance: sqrt((v_i v_j + cov_ij^2) / n)
    se_cov = np.sqrt((np.outer(var, var) + np.diag(var**2)) / n)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se_mean + slack_mean)
    cov_err = np.abs(np.cov(samples.T) - np.diag(var))
    np.testing.assert_array_less(cov_err, 5 * se_cov + slack_var)


# (sampler, options, c, order of convergence, max error at NFE 100). Measured at c = 12, NFE 50 / 100:
# dpm1 0.23 / 0.12, dpm2 0.056 / 0.014, dpm3 2.1e-3 / 2.2e-4, ddim 0.14 / 0.069, dpm_pp 0.013 / 3.2e-3,
# euler_ode 0.014 / 7.0e-3.
DETERMINISTIC = {
    "dpm1": ("dpm_solver", {"order": 1}, C, 1, 0.15),
    "dpm2": ("dpm_solver", {"order": 2}, C, 2, 0.02),
    "dpm3": ("dpm_solver", {}, C, 3, 5e-4),
    "dpm3_c1": ("dpm_solver", {}, 1.0, 3, 5e-4),
    "ddim": ("ddim", {}, C, 1, 0.1),
    "dpm_pp": ("dpm_solver_pp", {}, C, 2, 5e-3),
    "euler_ode": ("euler_ode", {}, C, 1, 0.01),
}


@pytest.mark.parametrize("case", list(DETERMINISTIC))
def test_deterministic_samplers_converge(case):
    """Exact output moments converge to the data law at the expected order; MC samples agree at NFE 100."""
    name, kw, c, order, tol = DETERMINISTIC[case]
    errs = [max(affine_errors(run_vp(name, n, c, **kw), c)) for n in (50, 100)]
    assert errs[1] < tol, errs
    assert errs[0] / errs[1] > 0.8 * 2**order, errs  # NFE 50 -> 100 at the expected order
    out = run_vp(name, 100, c, **kw)
    err_mean, err_var = affine_errors(out, c)
    assert_mc_close(out[2:], MU, S**2, err_mean, err_var)


@pytest.mark.parametrize(
    "name,kw,c,nfes,tol",
    [
        ("ddim", {"eta": 1.0}, C, (25, 100), 0.15),
        ("ddim", {"eta": 1.0}, 1.0, (100,), 0.15),
        ("euler_maruyama", {}, C, (25, 100), 0.05),
    ],
)
def test_stochastic_samplers_converge(name, kw, c, nfes, tol):
    """MC moments match the float64 moment recursion of the spec update; its error shrinks with NFE."""
    m1, v1 = t1_marginal(c)
    errs = []
    for nfe in nfes:
        if name == "ddim":
            m_ref, v_ref = ddim_moments(nfe, kw["eta"], c, m1, v1)
        else:
            m_ref, v_ref = ref_moments(nfe, sde=True, c=c, m0=m1, v0=v1)
        samples = run_vp(name, nfe, c, **kw)[2:]
        n = samples.shape[0]
        np.testing.assert_array_less(np.abs(samples.mean(0) - m_ref), 5 * np.sqrt(v_ref / n))
        np.testing.assert_array_less(np.abs(samples.var(0) - v_ref), 5 * v_ref * math.sqrt(2 / n))
        errs.append(max(np.abs(m_ref - MU).max(), np.abs(v_ref - S**2).max()))
    assert errs[-1] < tol, errs
    if len(errs) > 1:
        assert errs[0] / errs[1] > 0.8 * 4, errs  # first order, NFE 25 -> 100
    assert_mc_close(samples, MU, S**2, errs[-1], errs[-1])


def test_dpm_solver_3_beats_euler_ode():
    """Third order vs first order. On this toy the uniform-lambda grid spends few steps where alpha s ~ sigma,
    so at NFE <= 20 only DPM-Solver's mean is better (exact: the linear part is integrated exactly); from
    NFE 50 on its whole error is far smaller."""
    for nfe in (10, 20):
        dpm_mean, _ = affine_errors(run_vp("dpm_solver", nfe), C)
        euler_mean, _ = affine_errors(run_vp("euler_ode", nfe), C)
        assert dpm_mean < 1e-4 < 5e-3 < euler_mean
    for nfe, factor in ((50, 5), (100, 25)):
        dpm = max(affine_errors(run_vp("dpm_solver", nfe), C))
        euler = max(affine_errors(run_vp("euler_ode", nfe), C))
        assert dpm * factor < euler, (nfe, dpm, euler)


# ---- DPM-Solver structure -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "nfe,k,orders",
    [
        (10, 4, [3, 3, 3, 1]),
        (20, 7, [3] * 6 + [2]),
        (50, 17, [3] * 16 + [2]),
        (100, 34, [3] * 33 + [1]),
    ],
)
def test_dpm_solver_step_allocation_table(nfe, k, orders):
    assert dpm_solver_orders(nfe) == orders and len(orders) == k


def test_dpm_solver_allocation_all_orders():
    assert dpm_solver_orders(9) == [3, 3, 2, 1]
    assert dpm_solver_orders(3) == [2, 1] and dpm_solver_orders(1) == [1]
    assert (
        dpm_solver_orders(7, order=2) == [2, 2, 2, 1] and dpm_solver_orders(6, order=2) == [2] * 3
    )
    assert dpm_solver_orders(5, order=1) == [1] * 5
    for order in (1, 2, 3):
        for nfe in range(1, 40):
            orders = dpm_solver_orders(nfe, order)
            assert sum(orders) == nfe and max(orders) <= order
            assert orders == sorted(orders, reverse=True) and len(set(orders[:-2])) <= 1


@pytest.mark.parametrize("c", [1.0, C])
def test_dpm_solver_grid(c):
    sch = VPSchedule(snr_scale=c)
    ts, orders = dpm_solver_time_grid(sch, 20)
    ts = np.asarray(ts, np.float64)
    assert len(ts) == len(orders) + 1 == 8 and ts[0] == 1.0 and ts[-1] == np.float32(1e-4)
    np.testing.assert_allclose(ts, np_grid(7, c, 1e-4, "logSNR"), rtol=2e-5)
    steps = np.diff(np_lambda(ts, c))
    np.testing.assert_allclose(steps, steps.mean(), rtol=1e-4)  # uniform in lambda
    ts_u, orders_u = dpm_solver_time_grid(sch, 20, skip_type="time_uniform", t_end=1e-3)
    fine = np.linspace(1.0, 1e-3, 21)
    np.testing.assert_allclose(ts_u, fine[np.cumsum([0, *orders_u])], rtol=1e-6)


def counted_calls(sampler, schedule, nfe, **kw):
    """Runs `sampler` op by op (no jit) and records the network's time argument at every call."""
    seen = []

    def model(x, t):
        assert t.shape == (x.shape[0],) and x.dtype == jnp.float32
        seen.append(float(t[0]))
        return jnp.tanh(x) * 0.1

    with jax.disable_jit():
        out = sampler(model, schedule, jnp.ones((3, 2)), nfe, key=jax.random.key(0), **kw)
    assert out.shape == (3, 2) and out.dtype == jnp.float32
    return np.array(seen)


@pytest.mark.parametrize("order,nfe", [(1, 7), (2, 7), (3, 10), (3, 12)])
def test_dpm_solver_calls_the_network_nfe_times(order, nfe):
    sch = VPSchedule(snr_scale=C)
    seen = counted_calls(dpm_solver, sch, nfe, order=order)
    assert len(seen) == nfe
    ts, orders = dpm_solver_time_grid(sch, nfe, order)
    starts = np.cumsum([0, *orders])[:-1]
    np.testing.assert_allclose(seen[starts], np.asarray(ts)[:-1], rtol=1e-6)  # eps_s at each s
    assert seen[0] == 1.0 and np.all(seen >= 1e-4) and np.all(np.diff(seen[starts]) < 0)


@pytest.mark.parametrize("sampler", [ddim, dpm_solver_pp])
def test_multistep_samplers_call_once_per_step(sampler):
    seen = counted_calls(sampler, VPSchedule(snr_scale=C), 7)
    assert len(seen) == 7 and seen[0] == 1.0 and np.all(np.diff(seen) < 0) and seen[-1] > 1e-4


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_step_matches_float64_transcription(order):
    """One interval, nonlinear eps: the spec formulas in float64 NumPy agree with the float32 step."""
    sch = VPSchedule(snr_scale=C)
    x = np.random.default_rng(1).standard_normal((5, 3))
    for s, t in ((1.0, 0.6), (0.4, 0.05), (0.02, 1e-4)):
        got = dpm_solver_step(jnp_nl_model, sch, jnp.asarray(x, jnp.float32), s, t, order)
        want = np_dpm_step(lambda x_, t_: nl_eps(np, x_, t_), x, s, t, order, C)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "nfe,order,skip_type", [(4, 3, "logSNR"), (6, 3, "time_uniform"), (5, 2, "logSNR")]
)
def test_dpm_solver_matches_float64_transcription(nfe, order, skip_type):
    """Whole sampler ([3, 1], [3, 2, 1], [2, 2, 1]) vs the NumPy transcription of grid and steps."""
    sch = VPSchedule(snr_scale=C)
    x = np.random.default_rng(2).standard_normal((5, 3))
    got = dpm_solver(
        jnp_nl_model, sch, jnp.asarray(x, jnp.float32), nfe, order=order, skip_type=skip_type
    )
    orders = {4: [3, 1], 6: [3, 2, 1], 5: [2, 2, 1]}[nfe]
    want = np_dpm_solver(lambda x_, t_: nl_eps(np, x_, t_), x, orders, C, skip_type=skip_type)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


def test_ddim_and_dpm_solver_pp_match_float64_transcription():
    sch = VPSchedule(snr_scale=C)
    x = np.random.default_rng(3).standard_normal((5, 3))
    eps = lambda x_, t_: nl_eps(np, x_, t_)  # noqa: E731
    got = ddim(jnp_nl_model, sch, jnp.asarray(x, jnp.float32), 6)
    np.testing.assert_allclose(np.asarray(got), np_ddim(eps, x, 6, C), rtol=2e-4, atol=2e-4)
    got = dpm_solver_pp(jnp_nl_model, sch, jnp.asarray(x, jnp.float32), 6)
    np.testing.assert_allclose(
        np.asarray(got), np_dpm_solver_pp(eps, x, 6, C), rtol=2e-4, atol=2e-4
    )


@pytest.mark.parametrize("skip_type", ["time_uniform", "logSNR"])
def test_ddim_eta0_is_dpm_solver_1(skip_type):
    sch = VPSchedule(snr_scale=C)
    x = jax.random.normal(jax.random.key(4), (8, 3))
    a = ddim(jnp_nl_model, sch, x, 12, skip_type=skip_type)
    b = dpm_solver(jnp_nl_model, sch, x, 12, order=1, skip_type=skip_type)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


# ---- stochastic samplers, errors ----------------------------------------------------------------------------
def test_stochastic_ddim_keys():
    """Same key, same samples; another key, other samples; eta = 0 ignores the key."""
    fn, x = vp_fn("ddim", 25, eta=1.0), mc_batch(*t1_marginal(C))
    a, b, c = (np.asarray(fn(x, jax.random.key(i))) for i in (6, 6, 7))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2
    det = vp_fn("ddim", 20)
    np.testing.assert_array_equal(np.asarray(det(x, jax.random.key(6))), run_vp("ddim", 20))


def _never_called(x, t):
    raise AssertionError("the model must not be reached")


@pytest.mark.parametrize(
    "sampler,nfe,kw,match",
    [
        (dpm_solver, 0, {}, "nfe"),
        (dpm_solver, 2.5, {}, "nfe"),
        (dpm_solver, True, {}, "nfe"),
        (dpm_solver, 10, {"order": 4}, "order"),
        (dpm_solver, 10, {"order": 0}, "order"),
        (dpm_solver, 10, {"skip_type": "time_quadratic"}, "skip_type"),
        (dpm_solver, 10, {"t_end": 0.0}, "t_end"),
        (ddim, 0, {}, "nfe"),
        (ddim, 10, {"eta": 0.5}, "key"),
        (ddim, 10, {"eta": -1.0}, "eta"),
        (ddim, 10, {"skip_type": "uniform"}, "skip_type"),
        (dpm_solver_pp, -1, {}, "nfe"),
        (dpm_solver_pp, 10, {"skip_type": "logsnr"}, "skip_type"),
    ],
)
def test_vp_argument_errors(sampler, nfe, kw, match):
    with pytest.raises(ValueError, match=match):
        sampler(_never_called, VPSchedule(), jnp.zeros((2, 3)), nfe, **kw)


def test_flow_argument_errors():
    with pytest.raises(ValueError, match="nfe"):
        heun(_never_called, FlowSchedule(), jnp.zeros((2, 3)), 0)
    with pytest.raises(TypeError, match="FlowSchedule"):
        heun(_never_called, VPSchedule(), jnp.zeros((2, 3)), 9)
    with pytest.raises(TypeError, match="VPSchedule"):
        dpm_solver(_never_called, FlowSchedule(), jnp.zeros((2, 3)), 9)
    with pytest.raises(ValueError, match="t_eps"):
        FlowSchedule(t_eps=0.0)


# ---- rectified flow (spectral §3.3) -------------------------------------------------------------------------
def exact_velocity(noise_scale):
    """z = t x + (1 - t) eps, x ~ N(MU, S^2), eps ~ N(0, n^2): v = E[x - eps | z]
    = MU + (t S^2 - (1 - t) n^2)(z - t MU) / (t^2 S^2 + (1 - t)^2 n^2)."""
    mu, s2, n2 = jnp.asarray(MU, jnp.float32), jnp.asarray(S**2, jnp.float32), noise_scale**2

    def model(z, t):
        t = t[:, None]
        return mu + (t * s2 - (1 - t) * n2) * (z - t * mu) / (t * t * s2 + (1 - t) ** 2 * n2)

    return model


@functools.cache
def run_flow(name: str, nfe: int, noise_scale: float = 1.0) -> np.ndarray:
    sch = FlowSchedule(noise_scale=noise_scale)
    fn = jax.jit(lambda x: get_sampler(name)(exact_velocity(noise_scale), sch, x, nfe))
    return np.asarray(fn(mc_batch(np.zeros(4), np.full(4, noise_scale**2))), np.float64)


def flow_error(out, noise_scale=1.0):
    a, b = out[1] - out[0], out[0]
    return max(np.abs(b - MU).max(), np.abs(a * a * noise_scale**2 - S**2).max())


def test_heun_converges_and_beats_euler():
    errs = []
    for nfe in (9, 19, 49):
        errs.append(flow_error(run_flow("heun", nfe)))
        assert errs[-1] * 4 < flow_error(run_flow("euler_flow", nfe)), nfe
    assert errs[0] > errs[1] > errs[2] and errs[2] < 5e-3, errs
    assert errs[1] / errs[2] > 0.8 * (50 / 20) ** 2, errs  # second order (steps 10 -> 25)
    out = run_flow("heun", 49)
    err = flow_error(out)
    assert_mc_close(out[2:], MU, S**2, err, err)
    assert flow_error(run_flow("heun", 49, noise_scale=2.0), 2.0) < 1e-2


def test_flow_network_calls():
    """heun: nfe = 2 steps - 1 calls on linspace(0, 1, steps + 1), never at t = 1; euler_flow: nfe calls."""
    seen = counted_calls(heun, FlowSchedule(), 9)
    grid = np.linspace(0, 1, 6)
    np.testing.assert_allclose(seen[:-1:2], grid[:4], atol=1e-7)  # Heun: v(z, t) then v(z', t + dt)
    np.testing.assert_allclose(seen[1:-1:2], grid[1:5], atol=1e-7)
    assert len(seen) == 9 and seen[-1] == np.float32(0.8) and seen.max() < 1.0
    assert len(counted_calls(heun, FlowSchedule(), 10)) == 9  # even nfe: nfe - 1 calls
    assert len(counted_calls(heun, FlowSchedule(), 1)) == 1
    seen = counted_calls(euler_flow, FlowSchedule(), 4)
    np.testing.assert_allclose(seen, [0.0, 0.25, 0.5, 0.75])


def test_x_to_velocity():
    sch = FlowSchedule(t_eps=0.05)
    x_hat = jnp.asarray([[1.0, -2.0]])
    pred = lambda z, t, y=None: jnp.broadcast_to(x_hat, z.shape)  # noqa: E731
    v_fn = x_to_velocity(pred, sch)
    z = jnp.full((3, 2), 0.5)
    t = jnp.asarray([0.0, 0.5, 0.99])
    want = (np.asarray(x_hat) - 0.5) / np.array([1.0, 0.5, 0.05])[:, None]  # clamp at t > 0.95
    np.testing.assert_allclose(np.asarray(v_fn(z, t)), want, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(v_fn(z, t, 3)), want, rtol=1e-6
    )  # extra args pass through


# ---- classifier-free guidance -------------------------------------------------------------------------------
def labelled_model(calls):
    def model(x, t, y):
        calls.append(x.shape[0])
        return (jnp.sin(x) * (y[:, None] + 1.0) + t[:, None]).astype(jnp.bfloat16)

    return model


def test_cfg_limits_and_batching():
    calls = []
    model = labelled_model(calls)
    x, t, y = jax.random.normal(jax.random.key(8), (4, 3)), jnp.full((4,), 0.3), jnp.arange(4)
    cond = np.asarray(model(x, t, y).astype(jnp.float32))
    uncond = np.asarray(model(x, t, jnp.full_like(y, 10)).astype(jnp.float32))
    calls.clear()
    for w, want in ((1.0, cond), (0.0, uncond), (2.5, uncond + 2.5 * (cond - uncond))):
        out = guided_model_fn(model, y, null_label=10, guidance=w)(x, t)
        assert out.dtype == jnp.float32
        if w == 1.0:
            np.testing.assert_array_equal(np.asarray(out), cond)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    assert calls == [8, 8, 8]  # one batched call (2B) per guided call


def test_cfg_interval():
    calls = []
    model = labelled_model(calls)
    x, y = jnp.ones((4, 3)), jnp.zeros(4, jnp.int32)
    t = jnp.asarray([0.05, 0.1, 0.5, 1.0])
    guided = guided_model_fn(model, y, null_label=7, guidance=3.0, interval=(0.1, 1.0))(x, t)
    plain = guided_model_fn(model, y, null_label=7, guidance=3.0)(x, t)
    cond = model(x, t, y).astype(jnp.float32)
    inside = np.array([False, False, True, False])  # t_lo < t < t_hi, both strict
    np.testing.assert_array_equal(np.asarray(guided)[~inside], np.asarray(cond)[~inside])
    np.testing.assert_array_equal(np.asarray(guided)[inside], np.asarray(plain)[inside])
    from_zero = guided_model_fn(model, y, null_label=7, guidance=3.0, interval=(0.0, 0.6))(x, t)
    np.testing.assert_array_equal(
        np.asarray(from_zero)[:3], np.asarray(plain)[:3]
    )  # t_lo = 0: no lower bound
    np.testing.assert_array_equal(np.asarray(from_zero)[3], np.asarray(cond)[3])


def test_cfg_in_a_sampler_keeps_nfe():
    """Under jit: 4 traced calls ([3, 3, 1]: a 3-call loop body and a 1-call tail), 7 executed calls."""
    traced, executed = [], []
    model = labelled_model(traced)

    def counting_model(x, t, y):
        jax.debug.callback(lambda: executed.append(1), ordered=True)
        return model(x, t, y)

    guided = guided_model_fn(counting_model, jnp.arange(3), null_label=5, guidance=2.0)
    fn = jax.jit(lambda x: dpm_solver(guided, VPSchedule(snr_scale=C), x, 7))
    out = fn(jnp.ones((3, 2))).block_until_ready()
    jax.effects_barrier()
    assert traced == [6] * 4 and len(executed) == 7
    assert out.shape == (3, 2) and out.dtype == jnp.float32

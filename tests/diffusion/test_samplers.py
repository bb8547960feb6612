"""Euler ODE / Euler-Maruyama samplers with the exact eps-predictor of Gaussian data (spec §9.2).

For data N(mu, diag(s^2)) the marginal is x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2) and
E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2). With this predictor one Euler step is
affine in x, so (i) the ODE sampler is an affine map x_0 = A x_T + b whose output moments are exact
(mean A m_T + b, variance A^2 v_T), and (ii) an independent float64 NumPy recursion of the spec's
update gives the exact moments of the discretised SDE / ODE for any NFE.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dctjax.diffusion import (
    SAMPLERS,
    FlowSchedule,
    VPSchedule,
    available_samplers,
    euler_maruyama,
    euler_ode,
    euler_time_grid,
    get_sampler,
    register_sampler,
)

MU = np.array([0.5, -1.0, 2.0, 0.0])
S = np.array([0.3, 1.0, 1.5, 0.7])
C = 12.0  # the SNR scale of most DCTdiff configs; c != 1 throughout


def np_coefs(t, c, b0=0.1, b1=20.0):
    """alpha, sigma, beta_c of spec §6 in float64."""
    ab = np.exp(-(b0 * t + 0.5 * (b1 - b0) * t * t))
    abc = c * ab / (1 + (c - 1) * ab)
    return np.sqrt(abc), np.sqrt(1 - abc), (b0 + (b1 - b0) * t) / (1 + (c - 1) * ab)


def ref_moments(nfe, sde, c=C, m0=0.0, v0=1.0, t_min=1e-3, model_c=None):
    """Exact mean / variance after the spec §9.2 Euler scheme, from x_T ~ N(m0, v0) (float64)."""
    model_c = c if model_c is None else model_c
    grid = np.concatenate([[0.0], np.linspace(t_min, 1.0, nfe)])[::-1]
    m, v = np.broadcast_to(m0, MU.shape).astype(float), np.broadcast_to(v0, MU.shape).astype(float)
    for s_, t_ in zip(grid[:-1], grid[1:], strict=True):
        d = t_ - s_
        _, sg, beta = np_coefs(s_, c)
        am, sm, _ = np_coefs(s_, model_c)
        var_t = am * am * S**2 + sm * sm
        k = sm / var_t  # eps_hat = k (x - am mu)
        w = 1.0 if sde else 0.5
        lin = 1 - 0.5 * beta * d + w * beta * d * k / sg
        m = lin * m - w * beta * d * k * am * MU / sg
        v = lin * lin * v + (beta * -d if (sde and t_ > 0) else 0.0)
    return m, v


def exact_eps_model(sch):
    mu, s2 = jnp.asarray(MU, jnp.float32), jnp.asarray(S**2, jnp.float32)

    def model(x, t):
        a, sg = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
        return sg * (x - a * mu) / (a * a * s2 + sg * sg)

    return model


def ode_affine(sch, nfe, model=None):
    """(A, b) of the sampler's affine map x_T -> x_0, from the two inputs 0 and 1 (per coordinate)."""
    model = exact_eps_model(sch) if model is None else model
    out = jax.jit(lambda x: euler_ode(model, sch, x, nfe))(jnp.stack([jnp.zeros(4), jnp.ones(4)]))
    out = np.asarray(out, np.float64)
    return out[1] - out[0], out[0]


def test_time_grid():
    g = euler_time_grid(5)
    np.testing.assert_allclose(g, [1.0, 0.75025, 0.5005, 0.25075, 1e-3, 0.0], rtol=1e-6)
    assert g.dtype == np.float32 and g.shape == (6,)
    assert euler_time_grid(100, t_min=1e-4)[-2] == np.float32(1e-4)
    with pytest.raises(ValueError):
        euler_time_grid(1)


def test_network_calls_follow_the_grid():
    """nfe calls, at t = 1, ..., t_min (never at 0), with t of shape (B,)."""
    seen = []

    def model(x, t):
        jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t, ordered=True)
        return jnp.zeros_like(x)

    sch = VPSchedule(snr_scale=C)
    jax.jit(lambda x: euler_ode(model, sch, x, 5))(jnp.ones((3, 2))).block_until_ready()
    jax.effects_barrier()
    assert len(seen) == 5
    assert all(s.shape == (3,) and np.all(s == s[0]) for s in seen)
    np.testing.assert_allclose([s[0] for s in seen], euler_time_grid(5)[:-1])


@pytest.mark.parametrize("c", [1.0, C])
def test_euler_ode_matches_reference_discretisation(c):
    sch = VPSchedule(snr_scale=c)
    a, b = ode_affine(sch, 20)
    m_ref, v_ref = ref_moments(20, sde=False, c=c)  # from N(0, 1): mean b, variance A^2
    np.testing.assert_allclose(b, m_ref, atol=2e-5)
    np.testing.assert_allclose(a * a, v_ref, rtol=1e-4)


def test_euler_ode_error_shrinks_with_nfe():
    """From the exact t = 1 marginal the ODE reproduces N(mu, s^2); the error falls ~ 1/NFE."""
    sch = VPSchedule(snr_scale=C)
    a1, s1, _ = np_coefs(1.0, C)
    m1, v1 = a1 * MU, a1 * a1 * S**2 + s1 * s1
    errs = []
    for nfe in (50, 200, 1000):
        a, b = ode_affine(sch, nfe)
        err_mean = np.abs(a * m1 + b - MU).max()
        err_var = np.abs(a * a * v1 - S**2).max()
        errs.append(max(err_mean, err_var))
        # From x_T ~ N(0, I), the target is the data law pushed through the exact flow:
        # x_0 = mu + (s / std_1)(x_T - alpha_1 mu), mean mu (1 - s alpha_1 / std_1), var s^2 / v1.
        err_prior = max(
            np.abs(b - MU * (1 - S * a1 / np.sqrt(v1))).max(), np.abs(a * a - S**2 / v1).max()
        )
        assert err_prior < 1.5 * errs[-1] + 1e-4
    assert errs[0] < 0.03 and errs[2] < 1.5e-3, errs
    assert errs[0] > errs[1] > errs[2], errs  # monotone
    assert errs[0] / errs[2] > 10, errs


def test_snr_scale_is_used_consistently():
    """A predictor built for c = 1 under the c = 12 sampler is far off; the matched one is not."""
    sch = VPSchedule(snr_scale=C)
    a, b = ode_affine(sch, 50, exact_eps_model(VPSchedule(snr_scale=1.0)))
    m_ref, v_ref = ref_moments(50, sde=False, model_c=1.0)
    np.testing.assert_allclose(b, m_ref, atol=2e-4)  # the sampler really uses c = 12
    np.testing.assert_allclose(a * a, v_ref, rtol=2e-4)
    assert np.abs(a * a - S**2).max() > 0.5


@pytest.mark.parametrize("nfe,t_min", [(3, 0.5), (20, 1e-3), (200, 1e-3)])
def test_euler_maruyama_moments(nfe, t_min):
    """Monte Carlo moments match the exact discretised moments; at NFE 200 they match the data.

    (3, 0.5) makes the last step (0.5 -> 0) long, so noise added there would show.
    """
    sch = VPSchedule(snr_scale=C)
    n = 16384
    x_T = jax.random.normal(jax.random.key(0), (n, 4))
    sample = jax.jit(
        lambda x, k: euler_maruyama(exact_eps_model(sch), sch, x, nfe, key=k, t_min=t_min)
    )
    out = np.asarray(sample(x_T, jax.random.key(1)), np.float64)
    m_ref, v_ref = ref_moments(nfe, sde=True, t_min=t_min)
    se_m, se_v = np.sqrt(v_ref / n), v_ref * math.sqrt(2 / n)
    np.testing.assert_array_less(np.abs(out.mean(0) - m_ref), 5 * se_m)
    np.testing.assert_array_less(np.abs(out.var(0) - v_ref), 5 * se_v)
    if nfe == 3:  # noise on the last step would add beta_c(0.5) * 0.5 to the variance: detectable
        _, _, beta = np_coefs(0.5, C)  # in 3 of 4 coordinates (the s = 0.3 one is blown up by
        assert (beta * 0.5 > 10 * se_v).sum() >= 3  # the coarse Euler steps)
    if nfe == 200:
        disc = max(np.abs(m_ref - MU).max(), np.abs(v_ref - S**2).max())
        assert disc < 0.02
        np.testing.assert_array_less(np.abs(out.mean(0) - MU), disc + 5 * se_m)
        np.testing.assert_array_less(np.abs(out.var(0) - S**2), disc + 5 * se_v)
    if nfe == 20:  # the coarse grid is measurably worse than NFE 200
        assert np.abs(v_ref - S**2).max() > 0.1


# Traced network calls per sampler: a loop body plus, for DPM-Solver (orders [3] * n + [1] at NFE 10 and
# 100) and Heun, a static tail that is the same at both NFE.
TRACED_CALLS = {
    "euler_ode": 1,
    "euler_maruyama": 1,
    "ddim": 1,
    "dpm_solver_pp": 1,
    "dpm_solver": 4,
    "heun": 3,
    "euler_flow": 1,
}


@pytest.mark.parametrize("name", list(TRACED_CALLS))
def test_one_compiled_loop(name):
    """The jaxpr holds one loop and a fixed number of traced network calls; its size does not depend on NFE."""
    sampler = get_sampler(name)
    sch = FlowSchedule() if name in ("heun", "euler_flow") else VPSchedule(snr_scale=C)
    kw = {"eta": 1.0} if name == "ddim" else {}
    sizes = []
    for nfe in (10, 100):
        traces = []

        def model(x, t, traces=traces):
            traces.append(1)
            return x * t[:, None]

        jaxpr = jax.make_jaxpr(lambda x, k: sampler(model, sch, x, nfe, key=k, **kw))(  # noqa: B023
            jnp.ones((2, 4)), jax.random.key(0)
        )
        prims = {e.primitive.name for e in jaxpr.eqns}
        assert prims & {"while", "scan"}, prims
        assert len(traces) == TRACED_CALLS[name]
        sizes.append((len(jaxpr.eqns), len(str(jaxpr))))
    assert sizes[0][0] == sizes[1][0]
    # Only printed trip counts and grid lengths (f32[11] vs f32[101]) differ.
    assert abs(sizes[0][1] - sizes[1][1]) < 0.02 * sizes[0][1], sizes


def test_keys_and_dtypes():
    sch = VPSchedule(snr_scale=C)
    model = exact_eps_model(sch)
    x_T = jax.random.normal(jax.random.key(2), (8, 4)).astype(jnp.bfloat16)
    # bf16 input and bf16 network output: the state and the result stay float32.
    bf16_model = lambda x, t: model(x, t).astype(jnp.bfloat16)  # noqa: E731
    sde = jax.jit(lambda x, k: euler_maruyama(bf16_model, sch, x, 10, key=k))
    a, b, c = (np.asarray(sde(x_T, jax.random.key(i))) for i in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2
    assert sde(x_T, jax.random.key(3)).dtype == jnp.float32 and np.all(np.isfinite(a))


def test_registry_and_errors():
    assert set(TRACED_CALLS) <= set(available_samplers())
    assert get_sampler("euler_ode") is euler_ode
    with pytest.raises(ValueError, match="euler_maruyama.*euler_ode|euler_ode.*euler_maruyama"):
        get_sampler("dpm_solver_typo")
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("euler_ode")(euler_ode)
    sch, x = VPSchedule(), jnp.zeros((2, 3))
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="key"):
        euler_maruyama(zero, sch, x, 10)
    with pytest.raises(ValueError, match="nfe"):
        euler_ode(zero, sch, x, 1)
    with pytest.raises(TypeError):
        euler_ode(zero, sch, x, 10, t_end=1e-4)  # unknown sampler option
    # A new sampler slots in with the same call signature.
    name = "test_identity_sampler"

    @register_sampler(name)
    def _identity(model_fn, schedule, x_T, nfe, key=None):
        return x_T.astype(jnp.float32)

    try:
        assert get_sampler(name)(zero, sch, x, 4).shape == x.shape
    finally:
        SAMPLERS.unregister(name)

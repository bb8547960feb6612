"""VPSchedule against float64 NumPy closed forms (spec §6), finite differences and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dctjax.diffusion import NETWORK_TIME_SCALE, VPSchedule, network_time

B0, B1 = 0.1, 20.0
T_GRID = np.concatenate([[0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3], np.linspace(0.01, 1.0, 100)])
SCALES = [0.5, 1.0, 4.0, 12.0]


def np_alpha_bar(t):
    return np.exp(-(B0 * t + 0.5 * (B1 - B0) * t**2))


def np_alpha_bar_c(t, c):
    ab = np_alpha_bar(t)
    return c * ab / (1 + (c - 1) * ab)


def f32(x):
    return np.asarray(x, np.float64)


@pytest.mark.parametrize("c", SCALES)
def test_alpha_bar_c_matches_closed_form(c):
    sch = VPSchedule(snr_scale=c)
    t = jnp.asarray(T_GRID, jnp.float32)
    t64 = np.asarray(t, np.float64)  # the exact float32 grid points
    np.testing.assert_allclose(f32(sch.alpha_bar(t)), np_alpha_bar(t64), rtol=2e-6)
    np.testing.assert_allclose(f32(sch.alpha_bar_c(t)), np_alpha_bar_c(t64, c), rtol=2e-6)
    np.testing.assert_allclose(f32(sch.alpha(t)), np.sqrt(np_alpha_bar_c(t64, c)), rtol=2e-6)
    # sigma in float32 keeps its relative accuracy near t = 0 (expm1), unlike sqrt(1 - alpha^2).
    sig_ref = np.sqrt(1 - np_alpha_bar_c(t64, c))
    np.testing.assert_allclose(f32(sch.sigma(t)), sig_ref, rtol=2e-6, atol=0)
    np.testing.assert_allclose(
        f32(sch.sigma_sq(t)), (1 - np_alpha_bar(t64)) / (1 + (c - 1) * np_alpha_bar(t64)), rtol=2e-6
    )
    np.testing.assert_allclose(f32(sch.alpha(t) ** 2 + sch.sigma(t) ** 2), 1.0, atol=2e-7)
    assert sch.alpha(t).dtype == jnp.float32


@pytest.mark.parametrize("c", SCALES)
def test_snr_ratio_is_c(c):
    t = jnp.asarray(T_GRID[1:], jnp.float32)
    base, scaled = VPSchedule(), VPSchedule(snr_scale=c)
    # Within the implementation: a constant log-SNR shift of log c.
    np.testing.assert_allclose(
        f32(scaled.log_snr(t) - base.log_snr(t)), math.log(c), atol=2e-6 * max(1, abs(math.log(c)))
    )
    # Against the float64 unscaled SNR: (alpha^2 / sigma^2) / SNR == c.
    t64 = np.asarray(t, np.float64)
    ab = np_alpha_bar(t64)
    snr_c = f32(scaled.alpha(t)) ** 2 / f32(scaled.sigma(t)) ** 2
    np.testing.assert_allclose(snr_c / (ab / (1 - ab)), c, rtol=2e-5)
    np.testing.assert_allclose(f32(scaled.log_snr(t)), 2 * f32(scaled.marginal_lambda(t)))
    np.testing.assert_allclose(
        f32(scaled.marginal_lambda(t)),
        f32(scaled.log_alpha(t)) - f32(scaled.log_sigma(t)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("c", SCALES)
def test_inverse_lambda(c):
    sch = VPSchedule(snr_scale=c)
    t = jnp.asarray(T_GRID[4:], jnp.float32)  # t >= 1e-4
    np.testing.assert_allclose(f32(sch.inverse_lambda(sch.marginal_lambda(t))), f32(t), rtol=3e-5)
    # The spec's literal formula in float64.
    lam = np.linspace(-6.0, 8.0, 57)
    ref = (np.sqrt(B0**2 + 2 * (B1 - B0) * np.log(1 + c * np.exp(-2 * lam))) - B0) / (B1 - B0)
    np.testing.assert_allclose(
        f32(sch.inverse_lambda(jnp.asarray(lam, jnp.float32))), ref, rtol=2e-5
    )
    assert float(sch.inverse_lambda(jnp.inf)) == 0.0
    assert float(sch.marginal_lambda(0.0)) == np.inf


@pytest.mark.parametrize("c", SCALES)
def test_beta_c_is_derivative_of_minus_log_alpha_bar_c(c):
    # Central differences of the implementation's own log alpha_bar_c, in float64.
    h = 1e-5
    t = np.linspace(2e-5, 1 - 2e-5, 41)
    with jax.enable_x64(True):
        sch = VPSchedule(snr_scale=c)
        fd = -(np.asarray(sch.log_alpha_bar_c(t + h)) - np.asarray(sch.log_alpha_bar_c(t - h))) / (
            2 * h
        )
        beta_c64 = np.asarray(sch.beta_c(t))
    np.testing.assert_allclose(beta_c64, fd, rtol=1e-7)
    # float32 path, and the spec's form beta / (1 + (c - 1) alpha_bar).
    ref = (B0 + (B1 - B0) * t) / (1 + (c - 1) * np_alpha_bar(t))
    np.testing.assert_allclose(f32(sch.beta_c(jnp.asarray(t, jnp.float32))), ref, rtol=2e-6)
    # The scaled process is a VP-SDE: d log alpha / dt = -beta_c / 2 (autodiff check).
    dlog_alpha = jax.vmap(jax.grad(sch.log_alpha))(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(f32(dlog_alpha), -0.5 * ref, rtol=1e-5)


def test_c_one_is_plain_vp_and_endpoints():
    t = jnp.asarray(T_GRID, jnp.float32)
    plain = VPSchedule()
    np.testing.assert_allclose(f32(plain.alpha_bar_c(t)), f32(plain.alpha_bar(t)), rtol=1e-6)
    np.testing.assert_allclose(f32(plain.beta_c(t)), f32(plain.beta(t)), rtol=1e-6)
    np.testing.assert_allclose(float(plain.alpha_bar(1.0)), math.exp(-10.05), rtol=1e-5)
    assert float(plain.alpha_bar(1.0)) == pytest.approx(4.3e-5, rel=0.02)
    c12 = VPSchedule(snr_scale=12.0)
    assert float(c12.alpha_bar_c(1.0)) == pytest.approx(5.2e-4, rel=0.02)
    assert float(c12.sigma(1.0)) == pytest.approx(0.99974, abs=1e-5)
    assert float(c12.alpha(0.0)) == 1.0 and float(c12.sigma(0.0)) == 0.0
    # c > 1 means less noise at every t > 0.
    assert bool(jnp.all(c12.sigma(t[1:]) < plain.sigma(t[1:])))


def test_vectorised_shapes_and_network_time():
    sch = VPSchedule(snr_scale=4.0)
    t = jnp.linspace(0.0, 1.0, 6).reshape(2, 3)
    for fn in (sch.alpha, sch.sigma, sch.beta_c, sch.marginal_lambda, sch.alpha_bar_c):
        assert fn(t).shape == (2, 3)
    assert sch.alpha(3).dtype == jnp.float32  # integers are promoted
    assert NETWORK_TIME_SCALE == 999.0
    np.testing.assert_allclose(f32(network_time(jnp.array([0.0, 0.5, 1.0]))), [0.0, 499.5, 999.0])
    assert hash(sch) == hash(VPSchedule(snr_scale=4.0))  # usable as a static jit argument
    with pytest.raises(ValueError):
        VPSchedule(snr_scale=0.0)
    with pytest.raises(ValueError):
        VPSchedule(beta_min=1.0, beta_max=0.5)


@pytest.mark.parametrize("t_val", [0.05, 0.4, 0.9])
def test_q_sample_monte_carlo(t_val):
    sch = VPSchedule(snr_scale=12.0)
    n, f = 100_000, 3
    x0 = jnp.broadcast_to(jnp.array([1.5, -0.7, 0.0]), (n, f))
    eps = jnp.asarray(np.random.default_rng(0).standard_normal((n, f)), jnp.float32)
    x_t = np.asarray(sch.q_sample(x0, jnp.full((n,), t_val), eps), np.float64)
    a, s = float(sch.alpha(t_val)), float(sch.sigma(t_val))
    se_mean, se_var = s / math.sqrt(n), s**2 * math.sqrt(2 / n)
    np.testing.assert_allclose(x_t.mean(0), a * np.asarray(x0[0]), atol=5 * se_mean)
    np.testing.assert_allclose(x_t.var(0), s**2, atol=5 * se_var)


def test_q_sample_broadcasts_per_sample_t():
    sch = VPSchedule(snr_scale=2.0)
    rng = np.random.default_rng(1)
    x0 = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
    t = jnp.array([0.0, 0.5, 1.0])
    out = np.asarray(sch.q_sample(x0, t, eps))
    a, s = np.asarray(sch.alpha(t))[:, None, None], np.asarray(sch.sigma(t))[:, None, None]
    np.testing.assert_allclose(out, a * np.asarray(x0) + s * np.asarray(eps), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[0], np.asarray(x0[0]))

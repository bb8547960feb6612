"""diffusion_loss against the closed-form optimum for Gaussian data, and exact deterministic cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from dctjax.diffusion import (
    VPSchedule,
    as_eps_model,
    diffusion_loss,
    eps_to_v,
    eps_to_x0,
    get_prediction,
    score,
    v_to_eps,
    x0_to_eps,
)

MU = np.array([0.5, -1.0, 2.0])
S = np.array([0.3, 1.0, 1.5])
W = np.array([3.0, 0.5, 1.25])

# Data shape shared by the Monte Carlo tests (eager op compilations are cached per shape).
N_MC, T_MC = 4096, 8


def np_alpha_sigma(t, c):
    ab = np.exp(-(0.1 * t + 0.5 * 19.9 * t * t))
    abc = c * ab / (1 + (c - 1) * ab)
    return np.sqrt(abc), np.sqrt(1 - abc)


def gaussian_data(n, tokens, seed=0):
    """x0 ~ N(MU, diag(S^2)) per feature, shape (n, tokens, F)."""
    z = np.random.default_rng(seed).standard_normal((n, tokens, MU.size))
    return jnp.asarray(MU + S * z, jnp.float32)


def optimal_models(sch):
    """Posterior means E[eps | x_t], E[x0 | x_t], E[v | x_t] for Gaussian data, from the closed form."""
    mu, s2 = jnp.asarray(MU, jnp.float32), jnp.asarray(S**2, jnp.float32)

    def coefs(t):
        return sch.alpha(t)[:, None, None], sch.sigma(t)[:, None, None]

    def eps_fn(x, t):
        a, sg = coefs(t)
        return sg * (x - a * mu) / (a * a * s2 + sg * sg)

    def x0_fn(x, t):
        a, sg = coefs(t)
        return mu + a * s2 * (x - a * mu) / (a * a * s2 + sg * sg)

    def v_fn(x, t):
        a, sg = coefs(t)
        return a * eps_fn(x, t) - sg * x0_fn(x, t)

    return {"eps": eps_fn, "x0": x0_fn, "v": v_fn}


@pytest.mark.parametrize("c", [1.0, 12.0])
def test_optimal_eps_loss_matches_closed_form_minimum(c):
    """min E||eps - eps_hat||^2_w = int_0^1 mean_f w_f Var(eps_f | x_t) dt, Var = a^2 s^2 / (a^2 s^2 + sigma^2)."""
    sch = VPSchedule(snr_scale=c)

    def integrand(t):
        a, sg = np_alpha_sigma(t, c)
        return np.mean(W * a * a * S**2 / (a * a * S**2 + sg * sg))

    expected, _ = integrate.quad(integrand, 0.0, 1.0, epsabs=1e-10, limit=200)
    x0 = gaussian_data(N_MC, T_MC)
    loss, aux = diffusion_loss(
        optimal_models(sch)["eps"], x0, jax.random.key(3), sch, jnp.asarray(W)
    )
    per = np.asarray(aux["loss_per_sample"], np.float64)
    t = np.asarray(aux["t"], np.float64)
    assert float(loss) == pytest.approx(per.mean(), rel=1e-5)
    # Unconditional: the batch loss is an MC estimate of the integral (spread dominated by t).
    se = per.std() / math.sqrt(per.size)
    assert abs(float(loss) - expected) < 5 * se, (float(loss), expected, se)
    # Conditional on each sample's t, a sharper check: E[loss_i | t_i] = integrand(t_i).
    resid = per - np.array([integrand(ti) for ti in t])
    se_resid = resid.std() / math.sqrt(resid.size)
    assert se_resid < 0.01 * expected
    assert abs(resid.mean()) < 5 * se_resid, (resid.mean(), se_resid)
    # Any other predictor does worse: e.g. the unit-variance-data predictor.
    naive = lambda x, t: sch.sigma(t)[:, None, None] * x  # noqa: E731  (optimal for N(0, I) data)
    loss_naive, _ = diffusion_loss(naive, x0, jax.random.key(3), sch, jnp.asarray(W))
    assert float(loss_naive) > float(loss) + 10 * se


def test_t_is_uniform_without_clamp():
    sch = VPSchedule()
    x0 = gaussian_data(N_MC, T_MC)
    _, aux = diffusion_loss(lambda x, t: jnp.zeros_like(x), x0, jax.random.key(0), sch)
    t = np.asarray(aux["t"])
    assert t.shape == (N_MC,) and t.min() >= 0.0 and t.max() < 1.0
    assert t.min() < 1e-3  # no lower clamp (e.g. the 1e-5 / 1e-3 clamps of other codebases)
    assert abs(t.mean() - 0.5) < 5 / math.sqrt(12 * t.size)


@pytest.mark.parametrize("c", [1.0, 4.0])
def test_x0_and_v_losses_are_consistent_with_eps(c):
    """Same (t, eps): L_x0 = (sigma/alpha)^2 L_eps and L_v = L_eps / alpha^2 per sample."""
    sch = VPSchedule(snr_scale=c)
    models = optimal_models(sch)
    x0 = gaussian_data(N_MC, T_MC, seed=1)
    key = jax.random.key(7)
    per = {}
    for name in ("eps", "x0", "v"):
        _, aux = diffusion_loss(models[name], x0, key, sch, jnp.asarray(W), prediction=name)
        per[name] = np.asarray(aux["loss_per_sample"], np.float64)
        t = np.asarray(aux["t"], np.float64)
    a, sg = np_alpha_sigma(t, c)
    np.testing.assert_allclose(per["x0"], (sg / a) ** 2 * per["eps"], rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(per["v"], per["eps"] / a**2, rtol=2e-3)


def _manual_loss(delta, w):
    """mean over tokens and features of w_f delta[b, t, f]^2, then over the batch (float64)."""
    d = np.asarray(delta, np.float64)
    wd = d**2 * (1.0 if w is None else np.asarray(w, np.float64))
    return wd.reshape(d.shape[0], -1).mean(1)


@pytest.mark.parametrize("tokens,feats", [(5, 3), (4, 4)])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_weights_broadcast_over_tokens(tokens, feats, prediction):
    """A model that returns target + delta has per-sample loss mean_{tokens, f} w_f delta^2."""
    rng = np.random.default_rng(tokens * 10 + feats)
    x0 = jnp.asarray(rng.standard_normal((2, tokens, feats)), jnp.float32)
    delta = jnp.asarray(rng.standard_normal((2, tokens, feats)), jnp.float32)
    w = jnp.asarray(rng.uniform(0.1, 3.0, feats), jnp.float32)
    sch = VPSchedule(snr_scale=3.0)

    def model(x_t, t):  # recover the target from x_t and the known x0
        a, sg = sch.alpha(t)[:, None, None], sch.sigma(t)[:, None, None]
        eps = (x_t - a * x0) / sg
        target = {"eps": eps, "x0": x0, "v": a * eps - sg * x0}[prediction]
        return target + delta

    for weights in (w, None):
        loss, aux = diffusion_loss(model, x0, jax.random.key(5), sch, weights, prediction)
        ref = _manual_loss(delta, weights)
        np.testing.assert_allclose(np.asarray(aux["loss_per_sample"]), ref, rtol=1e-4)
        np.testing.assert_allclose(float(loss), ref.mean(), rtol=1e-4)
    # A bf16 network output is promoted to float32 in the loss.
    bf16 = lambda x_t, t: model(x_t, t).astype(jnp.bfloat16)  # noqa: E731
    assert diffusion_loss(bf16, x0, jax.random.key(5), sch, w, prediction)[0].dtype == jnp.float32


def test_weight_shape_errors_labels_and_registry():
    sch = VPSchedule()
    x0 = jnp.zeros((2, 5, 3))
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="broadcast"):  # (T,) instead of (F,)
        jax.eval_shape(lambda: diffusion_loss(zero, x0, key, sch, jnp.ones(5)))
    with pytest.raises(
        ValueError, match=r"unknown prediction .score.; choose one of \[.eps., .v., .x0.\]"
    ):
        jax.eval_shape(lambda: diffusion_loss(zero, x0, key, sch, prediction="score"))
    with pytest.raises(ValueError, match="shape"):
        jax.eval_shape(lambda: diffusion_loss(lambda x, t: x[..., :2], x0, key, sch))

    def cond_model(x, t, labels):  # x0 = 0 and x0-prediction: per-sample loss = labels^2
        assert t.shape == (2,)
        return jnp.zeros_like(x) + labels[:, None, None].astype(x.dtype)

    _, aux = diffusion_loss(cond_model, x0, key, sch, prediction="x0", labels=jnp.array([3, 7]))
    np.testing.assert_allclose(np.asarray(aux["loss_per_sample"]), [9.0, 49.0])
    assert get_prediction("v").name == "v"


def test_jit_and_grad():
    sch = VPSchedule(snr_scale=12.0)
    x0 = gaussian_data(64, 4)
    w = jnp.asarray(W, jnp.float32)

    def loss_of(params, x0, key):
        model = lambda x, t: x @ params["k"] + params["b"] * t[:, None, None]  # noqa: E731
        return diffusion_loss(model, x0, key, sch, w)[0]

    params = {"k": jnp.eye(3) * 0.5, "b": jnp.ones(3)}
    key = jax.random.key(11)
    val, grads = jax.jit(jax.value_and_grad(loss_of))(params, x0, key)
    assert val.dtype == jnp.float32 and val.shape == ()
    assert all(
        bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in grads.values()
    )


def test_conversions_round_trip():
    sch = VPSchedule(snr_scale=5.0)
    rng = np.random.default_rng(2)
    x_t, eps = (jnp.asarray(rng.standard_normal((4, 2, 3)), jnp.float32) for _ in range(2))
    t = jnp.array([0.01, 0.3, 0.7, 1.0])
    a, sg = np.asarray(sch.alpha(t))[:, None, None], np.asarray(sch.sigma(t))[:, None, None]
    x0 = eps_to_x0(sch, x_t, t, eps)
    np.testing.assert_allclose(
        np.asarray(x0), (np.asarray(x_t) - sg * np.asarray(eps)) / a, rtol=1e-5
    )
    np.testing.assert_allclose(np.asarray(x0_to_eps(sch, x_t, t, x0)), np.asarray(eps), atol=2e-4)
    v = eps_to_v(sch, x_t, t, eps)
    np.testing.assert_allclose(np.asarray(v), a * np.asarray(eps) - sg * np.asarray(x0), atol=1e-4)
    np.testing.assert_allclose(np.asarray(v_to_eps(sch, x_t, t, v)), np.asarray(eps), atol=2e-4)
    np.testing.assert_allclose(
        np.asarray(score(sch, x_t, t, eps)), -np.asarray(eps) / sg, rtol=1e-6
    )
    # as_eps_model turns the optimal x0 / v predictors into the optimal eps predictor.
    models = optimal_models(sch)
    ref = np.asarray(models["eps"](x_t, t))
    for name in ("x0", "v"):
        got = as_eps_model(models[name], sch, name)(x_t, t)
        np.testing.assert_allclose(np.asarray(got), ref, atol=2e-4)
    assert as_eps_model(models["eps"], sch) is models["eps"]

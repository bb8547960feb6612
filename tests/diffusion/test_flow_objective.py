"""JiT's rectified-flow objective (spec spectral §3.1) against float64 NumPy transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from dctjax.codec.spectral import spectral_forcing
from dctjax.diffusion.objectives import flow_loss, logit_normal_t, x_to_velocity
from dctjax.diffusion.schedules import FlowSchedule


def _draws(key, x_shape):
    """The (t, noise) flow_loss draws from `key`, re-derived with the same splits."""
    key_t, key_eps = jax.random.split(key)
    n = jax.random.normal(key_t, (x_shape[0],), jnp.float32)
    noise = jax.random.normal(key_eps, x_shape, jnp.float32)
    return np.asarray(n, np.float64), np.asarray(noise, np.float64)


def numpy_v_loss(x, x_hat_fn, n, noise, noise_scale, t_eps, p_mean=-0.8, p_std=0.8):
    t = 1.0 / (1.0 + np.exp(-(p_mean + p_std * n)))
    tb = t.reshape(-1, *([1] * (x.ndim - 1)))
    z = tb * x + (1 - tb) * noise_scale * noise
    d = np.maximum(1 - tb, t_eps)
    v, v_hat = (x - z) / d, (x_hat_fn(z, t) - z) / d
    return np.mean((v - v_hat) ** 2), t, z


def test_logit_normal_t_moments():
    t = np.asarray(logit_normal_t(jax.random.key(0), 200_000, -0.8, 0.8), np.float64)
    logit = np.log(t / (1 - t))
    assert abs(logit.mean() + 0.8) < 0.01 and abs(logit.std() - 0.8) < 0.01
    assert t.min() > 0 and t.max() < 1


@pytest.mark.parametrize("noise_scale", [1.0, 2.0])
def test_x_prediction_v_loss_matches_numpy(noise_scale):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (6, 4, 4, 3)).astype(np.float32)
    w = rng.normal(size=(3,)).astype(np.float32)

    def x_hat(z, t):  # any deterministic function of (z, t)
        return np.tanh(z * w) * t.reshape(-1, 1, 1, 1)

    key = jax.random.key(3)
    sch = FlowSchedule(noise_scale=noise_scale, t_eps=0.05)
    loss, aux = flow_loss(lambda z, t: x_hat(z, t), jnp.asarray(x), key, sch)
    n, noise = _draws(key, x.shape)
    want, t, _ = numpy_v_loss(x.astype(np.float64), x_hat, n, noise, noise_scale, 0.05)
    np.testing.assert_allclose(np.asarray(aux["t"]), t, rtol=1e-6)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    # The clamp: with t close to 1 the weight is 1 / t_eps^2, not 1 / (1 - t)^2.
    assert (t > 0.95).any() or (t < 0.95).all()


def test_v_prediction_target_is_x_minus_eps():
    x = np.full((3, 2), 0.5, np.float32)
    key = jax.random.key(1)
    sch = FlowSchedule(noise_scale=2.0)
    zero = flow_loss(lambda z, t: jnp.zeros_like(z), jnp.asarray(x), key, sch, pred_param="v")[0]
    _, noise = _draws(key, x.shape)
    np.testing.assert_allclose(float(zero), np.mean((x - 2.0 * noise) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="pred_param"):
        flow_loss(lambda z, t: z, jnp.asarray(x), key, sch, pred_param="eps")


def test_exact_posterior_mean_minimises_the_loss_on_gaussian_data():
    """x ~ N(mu, s^2): E[x | z] = mu + t s^2 (z - t mu) / (t^2 s^2 + (1 - t)^2), the loss minimiser."""
    mu, s = 0.3, 0.5
    x = jnp.asarray(mu + s * np.random.default_rng(0).normal(size=(20_000, 1)), jnp.float32)
    sch = FlowSchedule()

    def posterior_mean(shift):
        def f(z, t):
            t = t[:, None]
            return mu + t * s**2 * (z - t * mu) / (t * t * s**2 + (1 - t) ** 2) + shift

        return f

    key = jax.random.key(5)
    best = float(flow_loss(posterior_mean(0.0), x, key, sch)[0])
    for shift in (-0.05, 0.05):
        assert float(flow_loss(posterior_mean(shift), x, key, sch)[0]) > best


def _numpy_sf(z, t, kappa=30.0, c_min=0.05, c_max=1.0):
    """Independent Spectral Forcing: scipy's orthonormal DCT-II, the sigmoid mask of spec §2.3."""
    n = z.shape[1]
    u = np.arange(n)
    r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2) / (np.sqrt(2) * (n - 1))
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        c = c_min + (c_max - c_min) * np.clip(t[i], 0, 1)
        mask = 1 / (1 + np.exp(-kappa * (c - r)))
        coeffs = scipy.fft.dctn(z[i], type=2, norm="ortho", axes=(0, 1))
        out[i] = scipy.fft.idctn(coeffs * mask[:, :, None], type=2, norm="ortho", axes=(0, 1))
    return out


def test_spectral_forcing_filters_the_input_only():
    """A network whose x-hat is its own SF-filtered input: the target and the x -> v conversion use the
    unfiltered z, so v-hat = (SF(z) - z) / d and v = (x - z) / d (not (x - SF(z)) / d)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    key = jax.random.key(7)
    sch = FlowSchedule()
    loss, _ = flow_loss(lambda z, t: spectral_forcing(z, t), jnp.asarray(x), key, sch)
    n, noise = _draws(key, x.shape)
    want, t, z = numpy_v_loss(x.astype(np.float64), _numpy_sf, n, noise, 1.0, 0.05)
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    # The sampler's velocity: v-hat = (SF(z) - z) / d with the unfiltered z (were z filtered
    # before the conversion, v-hat would be 0 for this network).
    v_fn = x_to_velocity(lambda z_, t_: spectral_forcing(z_, t_), sch)
    v_hat = np.asarray(v_fn(jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32)))
    d = np.maximum(1 - t, 0.05).reshape(-1, 1, 1, 1)
    want_v = (_numpy_sf(z, t) - z) / d
    np.testing.assert_allclose(v_hat, want_v, atol=2e-4)
    assert np.abs(want_v).mean() > 0.05
    # v-prediction: the target x - eps is built from the unfiltered noise too.
    loss_v, _ = flow_loss(
        lambda z_, t_: spectral_forcing(z_, t_), jnp.asarray(x), key, sch, pred_param="v"
    )
    np.testing.assert_allclose(
        float(loss_v), np.mean((x - noise - _numpy_sf(z, t)) ** 2), rtol=1e-4
    )

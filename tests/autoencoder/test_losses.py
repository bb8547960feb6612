"""Autoencoder losses against hand-computed values and closed forms (scipy for the Gaussian KL)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from dctjax.autoencoder import losses as L


def test_hinge_d_loss_hand_computed():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 0.5])
    # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 1.5] -> 5/6
    np.testing.assert_allclose(float(L.hinge_d_loss(real, fake)), 0.5 * (5 / 6 + 5 / 6), rtol=1e-6)
    # perfect discriminator: zero loss
    assert float(L.hinge_d_loss(jnp.full((2, 4, 4, 1), 3.0), jnp.full((2, 4, 4, 1), -3.0))) == 0.0


def test_vanilla_d_loss_closed_form():
    real = np.array([[1.5, -0.5], [0.0, 3.0]])
    fake = np.array([-1.0, 0.25, 2.0])
    want = 0.5 * (np.mean(np.log1p(np.exp(-real))) + np.mean(np.log1p(np.exp(fake))))
    np.testing.assert_allclose(float(L.vanilla_d_loss(real, fake)), want, rtol=1e-6)
    # at zero logits both terms are log 2
    np.testing.assert_allclose(float(L.vanilla_d_loss(jnp.zeros(3), jnp.zeros(5))), np.log(2.0))


def test_generator_loss():
    np.testing.assert_allclose(float(L.generator_loss(jnp.array([[1.0, -3.0], [2.0, 4.0]]))), -1.0)


@pytest.mark.parametrize("step,want", [(0, 0.0), (9, 0.0), (10, 0.5), (11, 0.5), (50_001, 0.5)])
def test_adopt_weight_traced_step(step, want):
    f = jax.jit(lambda s: L.adopt_weight(0.5, s, 10))
    assert float(f(jnp.int32(step))) == want
    assert float(L.adopt_weight(0.5, step, 10)) == want


def test_adopt_weight_traced_threshold_and_array_weight():
    w = jnp.array([1.0, 2.0])
    out = jax.jit(L.adopt_weight)(w, jnp.int32(3), jnp.int32(4))
    np.testing.assert_array_equal(np.asarray(out), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(L.adopt_weight(w, 4, 4)), [1.0, 2.0])


def test_adaptive_weight_formula_and_clip():
    nll = jnp.array([3.0, 4.0])  # norm 5
    g = jnp.array([[1.0, 0.0], [0.0, 0.0]])  # norm 1
    np.testing.assert_allclose(float(L.adaptive_weight(nll, g)), 5.0 / (1.0 + 1e-4), rtol=1e-6)
    # pytrees: the global norm over all leaves
    tree = {"w": jnp.array([[3.0]]), "b": jnp.array([4.0])}
    np.testing.assert_allclose(float(L.adaptive_weight(tree, [g])), 5.0 / (1.0 + 1e-4), rtol=1e-6)
    # clipped at max_weight: ||g|| = 0 gives 5 / 1e-4 = 5e4 -> 1e4
    assert float(L.adaptive_weight(nll, jnp.zeros(2))) == 1e4
    assert float(L.adaptive_weight(nll, jnp.zeros(2), max_weight=100.0)) == 100.0
    # zero nll grads -> 0
    assert float(L.adaptive_weight(jnp.zeros(2), g)) == 0.0


def test_adaptive_weight_stops_gradient():
    nll = jnp.array([3.0, 4.0])
    g = jnp.array([1.0, 2.0])
    gn, gg = jax.grad(L.adaptive_weight, argnums=(0, 1))(nll, g)
    np.testing.assert_array_equal(np.asarray(gn), 0.0)
    np.testing.assert_array_equal(np.asarray(gg), 0.0)


def test_kl_divergence_closed_form_and_quadrature():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 2, 2, 4))
    logvar = rng.normal(scale=0.5, size=(3, 2, 2, 4))
    got = np.asarray(L.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)))
    s = np.exp(0.5 * logvar)
    closed = (np.log(1.0 / s) + (s**2 + mean**2) / 2.0 - 0.5).reshape(3, -1).sum(-1)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, closed, rtol=1e-5)

    # a few elements by numerical integration of p log(p / q)
    def kl_quad(m, sd):
        p, q = scipy.stats.norm(m, sd), scipy.stats.norm(0.0, 1.0)
        val, _ = scipy.integrate.quad(
            lambda t: p.pdf(t) * (p.logpdf(t) - q.logpdf(t)), m - 12 * sd, m + 12 * sd
        )
        return val

    m1, lv1 = mean[0, 0, 0, :3], logvar[0, 0, 0, :3]
    want = sum(kl_quad(m, np.exp(0.5 * lv)) for m, lv in zip(m1, lv1, strict=True))
    got1 = float(L.kl_divergence(jnp.asarray(m1[None]), jnp.asarray(lv1[None]))[0])
    np.testing.assert_allclose(got1, want, rtol=1e-5)
    # N(0, 1) has zero KL
    np.testing.assert_array_equal(
        np.asarray(L.kl_divergence(jnp.zeros((2, 5)), jnp.zeros((2, 5)))), 0.0
    )


def test_l1_loss_per_example():
    x = jnp.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    y = jnp.array([[[1.0, 0.0], [3.0, 8.0]], [[1.0, -1.0], [2.0, -2.0]]])
    np.testing.assert_allclose(np.asarray(L.l1_loss(x, y)), [6.0 / 4, 6.0 / 4])
    with pytest.raises(ValueError, match="same shape"):
        L.l1_loss(x, y[:, :1])
    with pytest.raises(ValueError, match="same shape"):
        L.kl_divergence(x, y[:1])

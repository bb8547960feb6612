"""Spectral tools against independent references: scipy.fft.dctn/idctn(norm='ortho'), numpy FFT and
closed-form math (spec/spectral.md §1, §2.3, §2.4, §4.4, §5, §6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from dctjax.codec import spectral as sp


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _windows(x: np.ndarray, n: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H/n, n, W/n, n, C); the window axes are 2 and 4."""
    b, h, w, c = x.shape
    return x.reshape(b, h // n, n, w // n, n, c)


def _scipy_windowed_dct(x: np.ndarray, n: int) -> np.ndarray:
    return scipy.fft.dctn(_windows(x, n), axes=(2, 4), norm="ortho").reshape(x.shape)


def _scipy_windowed_idct(x: np.ndarray, n: int) -> np.ndarray:
    return scipy.fft.idctn(_windows(x, n), axes=(2, 4), norm="ortho").reshape(x.shape)


def _np_sf_mask(t: np.ndarray, n: int, kappa=30.0, c_min=0.05, c_max=1.0) -> np.ndarray:
    """Closed form of spec §2.3: (batch, n, n) float64."""
    u = np.arange(n)
    r = np.hypot(u[:, None], u[None, :]) / (np.sqrt(2.0) * (n - 1))
    c = c_min + (c_max - c_min) * np.clip(t, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(-kappa * (c[:, None, None] - r)))


def _power_law_images(num: int, size: int, alpha: float, k: float, seed: int) -> np.ndarray:
    """White noise shaped by sqrt(K) |w|^(-alpha/2): orthonormal-DFT power K |w|^(-alpha)."""
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    amp = np.zeros_like(radius)
    amp[radius > 0] = np.sqrt(k) * radius[radius > 0] ** (-alpha / 2)
    white = _rng(seed).normal(size=(num, size, size, 1))
    spec = np.fft.fft2(white, axes=(1, 2), norm="ortho") * amp[None, :, :, None]
    return np.real(np.fft.ifft2(spec, axes=(1, 2), norm="ortho")).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Windowed DCT
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_windowed_dct_matches_scipy_and_round_trips(n):
    x = _rng(n).normal(size=(2, 32, 64, 3)).astype(np.float32)
    coeffs = jax.jit(sp.windowed_dct, static_argnums=1)(x, n)
    np.testing.assert_allclose(coeffs, _scipy_windowed_dct(x, n), atol=2e-5)
    np.testing.assert_allclose(sp.windowed_idct(coeffs, n), x, atol=2e-5)
    np.testing.assert_allclose(sp.windowed_idct(x, n), _scipy_windowed_idct(x, n), atol=2e-5)


@pytest.mark.parametrize("shape", [(1, 256, 256, 2), (2, 24, 40, 3)])
def test_full_image_dct_matches_scipy_and_round_trips(shape):
    x = _rng(1).normal(size=shape).astype(np.float32)
    coeffs = sp.windowed_dct(x)
    np.testing.assert_allclose(
        coeffs, scipy.fft.dctn(x, axes=(1, 2), norm="ortho"), atol=3e-5, rtol=1e-5
    )
    np.testing.assert_allclose(sp.windowed_idct(coeffs), x, atol=3e-5)


def test_windowed_dct_gradient_is_the_inverse_transform():
    # For an orthonormal transform the adjoint is the inverse: d<DCT(x), w>/dx = IDCT(w).
    x = _rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
    w = _rng(3).normal(size=x.shape).astype(np.float32)
    g = jax.grad(lambda a: jnp.sum(sp.windowed_dct(a, 8) * w))(x)
    np.testing.assert_allclose(g, _scipy_windowed_idct(w, 8), atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Spectral Forcing
# ---------------------------------------------------------------------------------------------


def test_radial_frequency_closed_form():
    r = sp.radial_frequency(5)
    u = np.arange(5)
    np.testing.assert_allclose(r, np.hypot(u[:, None], u[None, :]) / (4 * np.sqrt(2)), rtol=1e-6)
    assert r[0, 0] == 0 and r[-1, -1] == pytest.approx(1.0)
    rect = sp.radial_frequency(3, 5)
    assert rect.shape == (3, 5) and rect[-1, -1] == pytest.approx(1.0)


def test_sf_mask_reference_values_n256():
    # Spec §2.3 table, N = 256, kappa = 30, c(t) = 0.05 + 0.95 t.
    m = np.asarray(sp.sf_mask(jnp.array([0.0, 0.5, 1.0]), 256))
    assert m.shape == (3, 256, 256)
    m0, m5, m1 = m
    assert m0[0, 0] == pytest.approx(0.818, abs=5e-4)
    assert m0.mean() == pytest.approx(0.009, abs=5e-4)
    assert np.mean(m0 > 0.5) == pytest.approx(0.004, abs=5e-4)
    assert m5.mean() == pytest.approx(0.438, abs=5e-4)
    assert np.mean(m5 > 0.5) == pytest.approx(0.43, abs=5e-3)
    assert m1[0, 0] == pytest.approx(1.0, abs=5e-4)
    assert m1.mean() == pytest.approx(0.996, abs=5e-4)
    assert m1[-1, -1] == pytest.approx(0.5, abs=1e-6)
    assert np.mean(m1 < 0.99) == pytest.approx(0.051, abs=1e-3)
    np.testing.assert_allclose(m, _np_sf_mask(np.array([0.0, 0.5, 1.0]), 256), atol=1e-6)


def test_sf_mask_per_sample_t_and_clamping():
    t = np.array([-0.3, 0.1, 0.6, 1.7], np.float32)
    m = np.asarray(sp.sf_mask(t, 16))
    np.testing.assert_allclose(m, _np_sf_mask(t, 16), atol=1e-6)
    for i, ti in enumerate(t):
        np.testing.assert_array_equal(sp.sf_mask(float(ti), 16), m[i])
    np.testing.assert_allclose(m[0], _np_sf_mask(np.array([0.0]), 16)[0], atol=1e-6)


@pytest.mark.parametrize("window_size", [None, 16])
def test_spectral_forcing_matches_scipy(window_size):
    z = _rng(4).normal(size=(2, 64, 64, 3)).astype(np.float32)
    t = np.array([0.2, 0.7], np.float32)
    n = 64 if window_size is None else window_size
    mask = _np_sf_mask(t, n)[:, None, :, None, :, None]
    coeffs = scipy.fft.dctn(_windows(z.astype(np.float64), n), axes=(2, 4), norm="ortho")
    expected = scipy.fft.idctn(coeffs * mask, axes=(2, 4), norm="ortho").reshape(z.shape)
    out = jax.jit(sp.spectral_forcing, static_argnums=2)(z, t, window_size)
    np.testing.assert_allclose(out, expected, atol=3e-5)


def test_spectral_forcing_scalar_t_broadcasts_and_vmaps():
    z = _rng(5).normal(size=(3, 32, 32, 3)).astype(np.float32)
    t = jnp.array([0.1, 0.5, 0.9])
    batched = sp.spectral_forcing(z, t, 8)
    mapped = jax.vmap(lambda zi, ti: sp.spectral_forcing(zi[None], ti, 8)[0])(z, t)
    np.testing.assert_allclose(mapped, batched, atol=1e-6)
    np.testing.assert_allclose(
        sp.spectral_forcing(z, 0.5, 8), sp.spectral_forcing(z, jnp.full(3, 0.5), 8), atol=1e-6
    )


def test_spectral_forcing_all_ones_mask_is_identity():
    z = _rng(6).normal(size=(2, 32, 32, 3)).astype(np.float32)
    # c = 2 > max r = 1 with a steep sigmoid: the mask is exactly 1.
    mask = sp.sf_mask(jnp.ones(2), 32, kappa=1e3, c_min=2.0, c_max=2.0)
    np.testing.assert_array_equal(mask, 1.0)
    out = sp.spectral_forcing(z, jnp.array([0.0, 1.0]), kappa=1e3, c_min=2.0, c_max=2.0)
    np.testing.assert_allclose(out, z, atol=2e-5)


def test_spectral_forcing_gradient_is_the_operator():
    # IDCT diag(M) DCT is symmetric, so d<SF(z), w>/dz = SF(w).
    z = _rng(7).normal(size=(2, 16, 16, 3)).astype(np.float32)
    w = _rng(8).normal(size=z.shape).astype(np.float32)
    t = jnp.array([0.3, 0.8])
    g = jax.grad(lambda a: jnp.sum(sp.spectral_forcing(a, t) * w))(z)
    np.testing.assert_allclose(g, sp.spectral_forcing(w, t), atol=2e-5)


def test_fixed_scale_replaces_t():
    t = jnp.array([0.0, 0.4, 1.0])
    m = sp.sf_mask(t, 32, fixed_scale=1.0)
    np.testing.assert_allclose(m, _np_sf_mask(np.ones(3), 32), atol=1e-6)
    quarter = sp.sf_mask(t, 32, fixed_scale=0.25)
    np.testing.assert_allclose(quarter, _np_sf_mask(np.full(3, 0.25), 32), atol=1e-6)
    np.testing.assert_array_equal(sp.sf_mask(t, 32, fixed_scale=5.0), m)  # clamped to 1
    z = _rng(9).normal(size=(3, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(
        sp.spectral_forcing(z, t, fixed_scale=1.0), sp.spectral_forcing(z, jnp.ones(3)), atol=1e-6
    )


def test_contour_cutoff_closed_form():
    t = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0], np.float32)
    k0, n = 20.0, 256
    c = np.asarray(sp.sf_cutoff(t, schedule="contour", k0=k0, window_size=n))
    with np.errstate(divide="ignore"):
        k_star = k0 * (t.astype(np.float64) / (1 - t)) ** (2 / 2.0)
    expected = np.clip(k_star / (np.sqrt(2) * (n - 1)), 0.05, 1.0)
    np.testing.assert_allclose(c, expected, rtol=1e-5)
    assert c[0] == pytest.approx(0.05) and c[-1] == 1.0 and np.all(np.diff(c) >= 0)
    np.testing.assert_allclose(sp.sf_cutoff(t), 0.05 + 0.95 * t, rtol=1e-6)
    m = sp.sf_mask(jnp.asarray(t), n, schedule="contour", k0=k0)
    assert m.shape == (8, n, n) and np.isfinite(np.asarray(m)).all()


# ---------------------------------------------------------------------------------------------
# RAPSD
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["dft", "dct"])
def test_rapsd_white_noise_is_flat_at_sigma2(transform):
    sigma = 0.5
    x = (sigma * _rng(10).normal(size=(8, 64, 64, 3))).astype(np.float32)
    res = jax.jit(sp.rapsd, static_argnums=(1, 2))(x, 16, transform)
    power, counts = np.asarray(res.power), np.asarray(res.counts)
    assert res.freqs.shape == (16,) and counts.sum() == 64 * 64 - 1
    # Per bin: a mean of >= counts * 8 * 3 / 2 independent chi-square variables (Hermitian pairs
    # for the DFT), so 5 standard errors is a safe bound.
    tol = 5.0 / np.sqrt(counts * 8 * 3 / 2)
    assert np.all(np.abs(power / sigma**2 - 1) < tol)
    assert np.average(power, weights=counts) == pytest.approx(sigma**2, rel=0.02)
    # Bins span [0, r_max]: the DFT corner (-0.5, -0.5), the DCT corner (63/128, 63/128).
    r_max = np.sqrt(0.5) if transform == "dft" else np.sqrt(2) * 63 / 128
    edges = np.linspace(0, r_max, 17)
    np.testing.assert_allclose(res.freqs, (edges[1:] + edges[:-1]) / 2, rtol=1e-6)


def test_rapsd_dc_and_frequency_units():
    # A cosine at 8 cycles over 64 pixels (0.125 cycles/pixel) plus a constant offset.
    i = np.arange(64)
    img = 0.5 + np.cos(2 * np.pi * 8 * i / 64)[:, None] * np.ones(64)[None, :]
    res = sp.rapsd(img[None, :, :, None].astype(np.float32), num_bins=32)
    peak = int(np.nanargmax(np.asarray(res.power)))
    edges = np.linspace(0, np.sqrt(0.5), 33)
    assert edges[peak] <= 0.125 <= edges[peak + 1]
    assert float(res.dc) == pytest.approx((0.5 * 64) ** 2, rel=1e-5)  # DC of ortho DFT = mean * N
    res_dct = sp.rapsd(img[None, :, :, None].astype(np.float32), num_bins=32, transform="dct")
    assert float(res_dct.dc) == pytest.approx((0.5 * 64) ** 2, rel=1e-5)
    # More bins than radii: empty bins report NaN and a zero count.
    sparse = sp.rapsd(np.ones((1, 4, 4, 1), np.float32), num_bins=40)
    empty = np.asarray(sparse.counts) == 0
    assert empty.any() and np.isnan(np.asarray(sparse.power)[empty]).all()
    assert not np.isnan(np.asarray(sparse.power)[~empty]).any()


@pytest.mark.parametrize("transform", ["dft", "dct"])
def test_rapsd_vp_identity_on_power_law_images(transform):
    # Spec §5.2: E RAPSD(a x0 + s eps) = a^2 RAPSD(x0) + s^2.
    x0 = _power_law_images(8, 64, alpha=2.0, k=0.01, seed=11)
    draws = 8
    eps = _rng(12).normal(size=(draws, *x0.shape)).astype(np.float32)
    res0 = sp.rapsd(x0, 16, transform)
    base, counts = np.asarray(res0.power, np.float64), np.asarray(res0.counts)
    # Given x0, each coefficient's power |a X0 + s E|^2 has variance s^4 + 2 a^2 P0 s^2; a DFT
    # Hermitian pair counts once.
    n_eff = counts * x0.shape[0] * draws / (2 if transform == "dft" else 1)
    for a, s in [(0.9, 0.3), (0.6, 0.8), (0.2, 0.98)]:
        xt = (a * x0[None] + s * eps).reshape(-1, 64, 64, 1)
        got = np.asarray(sp.rapsd(xt, 16, transform).power)
        expected = a**2 * base + s**2
        std_err = np.sqrt((s**4 + 2 * a**2 * base * s**2) / n_eff)
        assert np.all(np.abs(got - expected) < 5 * std_err + 1e-3 * expected)
        assert np.median(np.abs(got / expected - 1)) < 0.02


def test_rapsd_power_law_slope_and_level():
    alpha, k = 2.0, 0.01
    x0 = _power_law_images(16, 64, alpha=alpha, k=k, seed=13)
    res = sp.rapsd(x0, 16)
    f, p = np.asarray(res.freqs), np.asarray(res.power)
    mid = (f > 0.08) & (f < 0.4)
    slope = np.polyfit(np.log(f[mid]), np.log(p[mid]), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.1)
    # Level: mean of K |w|^-alpha over each bin's frequencies, computed directly.
    fr = np.fft.fftfreq(64)
    r = np.hypot(fr[:, None], fr[None, :]).ravel()[1:]
    edges = np.linspace(0, r.max(), 17)
    bins = np.clip(np.digitize(r, edges) - 1, 0, 15)
    expected = np.array([np.mean(k * r[bins == b] ** -alpha) for b in range(16)])
    np.testing.assert_allclose(p[mid], expected[mid], rtol=0.1)


# ---------------------------------------------------------------------------------------------
# DSM anti-diagonal masking
# ---------------------------------------------------------------------------------------------


def test_antidiagonal_mask_closed_form():
    for k, last_kept in [(8, 6), (10, 4), (12, 2)]:
        keep = sp.antidiagonal_mask(8, k)
        s = np.add.outer(np.arange(8), np.arange(8))
        np.testing.assert_array_equal(keep, s <= last_kept)
    assert sp.antidiagonal_mask(8, 0).all()
    assert not sp.antidiagonal_mask(8, 15).any()
    assert sp.antidiagonal_mask(4, 1).sum() == 16 - 1


@pytest.mark.parametrize("k,last_kept", [(8, 6), (10, 4), (12, 2)])
def test_dsm_lowpass_zeroes_exactly_the_top_antidiagonals(k, last_kept):
    x = _rng(14).normal(size=(2, 16, 24, 3)).astype(np.float32)
    out = np.asarray(sp.dsm_lowpass(x, k))
    c_in = scipy.fft.dctn(_windows(x.astype(np.float64), 8), axes=(2, 4), norm="ortho")
    c_out = scipy.fft.dctn(_windows(out.astype(np.float64), 8), axes=(2, 4), norm="ortho")
    s = np.add.outer(np.arange(8), np.arange(8))[None, None, :, None, :, None]
    s = np.broadcast_to(s, c_in.shape)
    np.testing.assert_allclose(c_out[s > last_kept], 0.0, atol=2e-5)
    np.testing.assert_allclose(c_out[s <= last_kept], c_in[s <= last_kept], atol=2e-5)
    # Traced k (one per step, or per sample) gives the same result.
    traced = jax.jit(sp.dsm_lowpass)(x, jnp.int32(k))
    np.testing.assert_allclose(traced, out, atol=1e-6)
    per_sample = np.asarray(sp.dsm_lowpass(x, jnp.array([k, 0], jnp.int32)))
    np.testing.assert_allclose(per_sample[0], out[0], atol=1e-6)
    np.testing.assert_allclose(per_sample[1], x[1], atol=2e-5)


def test_dsm_lowpass_identity_and_latents():
    x = _rng(15).normal(size=(2, 16, 16, 16)).astype(np.float32)  # an f16d16 latent at 256 px
    assert sp.dsm_lowpass(x, 0) is x
    out = sp.dsm_lowpass(x, 12)
    assert out.shape == x.shape and out.dtype == x.dtype
    # The masking is a projection: applying it twice changes nothing.
    np.testing.assert_allclose(sp.dsm_lowpass(out, 12), out, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# DCT upsampling
# ---------------------------------------------------------------------------------------------


def _box_down(x: np.ndarray) -> np.ndarray:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _scipy_dct_upsample(x: np.ndarray, b: int) -> np.ndarray:
    """Spec §6 steps, literally: B x B DCT, divide by 0.5 cos cos, zero-pad to 2B, 2B x 2B IDCT."""
    n, h, w, c = x.shape
    d_low = scipy.fft.dctn(_windows(x.astype(np.float64), b), axes=(2, 4), norm="ortho")
    cos = np.cos(np.arange(b) * np.pi / (4 * b))
    gain = 0.5 * np.outer(cos, cos)[None, None, :, None, :, None]
    d_high = np.zeros((n, h // b, 2 * b, w // b, 2 * b, c))
    d_high[:, :, :b, :, :b, :] = d_low / gain
    return scipy.fft.idctn(d_high, axes=(2, 4), norm="ortho").reshape(n, 2 * h, 2 * w, c)


@pytest.mark.parametrize("b", [2, 4, 8])
def test_dct_upsample_reproduces_basis_functions(b):
    m = scipy.fft.idct(np.eye(2 * b), axis=0, norm="ortho").T  # row k: the 2B-point basis k
    basis = np.stack([np.outer(m[k], m[l]) for k in range(b) for l in range(b)])
    high = np.tile(basis, (1, 2, 3))[..., None].astype(np.float32)  # tiled over 2 x 3 blocks
    up = sp.dct_upsample(_box_down(high), b)
    assert up.shape == high.shape
    np.testing.assert_allclose(up, high, atol=2e-6)


def test_dct_upsample_matches_spec_steps_and_beats_nearest():
    i = np.arange(64) / 64.0
    yy, xx = np.meshgrid(i, i, indexing="ij")
    smooth = np.stack(
        [
            np.sin(2 * np.pi * 1.5 * xx) * np.cos(2 * np.pi * yy),
            np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.05),
            0.3 * xx + 0.5 * yy**2,
        ],
        axis=-1,
    )[None].astype(np.float32)
    low = _box_down(smooth)
    up = np.asarray(sp.dct_upsample(low))
    np.testing.assert_allclose(up, _scipy_dct_upsample(low, 4), atol=2e-5)
    nearest = low.repeat(2, axis=1).repeat(2, axis=2)
    err_dct = np.mean((up - smooth) ** 2)
    err_nn = np.mean((nearest - smooth) ** 2)
    assert err_dct < 0.5 * err_nn


def test_box_relation_beats_inverse_cosine_on_power_law_images():
    # Spec §6: D_low ~ 0.5 cos cos D_high fits 1/f-like images better than dividing by cos cos.
    b = 4
    high = _power_law_images(4, 64, alpha=2.0, k=1.0, seed=16)
    d_high = _windows(np.asarray(sp.windowed_dct(high, 2 * b)), 2 * b)[:, :, :b, :, :b]
    d_low = _windows(np.asarray(sp.windowed_dct(_box_down(high), b)), b)
    cos = np.cos(np.arange(b) * np.pi / (4 * b))
    cc = np.outer(cos, cos)[None, None, :, None, :, None]
    err_cos = np.mean((d_low - 0.5 * cc * d_high) ** 2)
    err_inv = np.mean((d_low - 0.5 / cc * d_high) ** 2)
    assert err_cos < err_inv


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

_IMG = np.zeros((2, 16, 16, 3), np.float32)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sp.windowed_dct(np.zeros((16, 16, 3), np.float32)), "x must have rank 4"),
        (lambda: sp.windowed_dct(np.zeros((1, 16, 16, 3), np.int32)), "x must have dtype"),
        (lambda: sp.windowed_dct(_IMG, 5), "window_size=5 must divide"),
        (lambda: sp.windowed_dct(_IMG, 0), "window_size must be a positive int"),
        (lambda: sp.windowed_idct(_IMG, 3), "window_size=3 must divide"),
        (lambda: sp.radial_frequency(1), r"radial_frequency size \(n, m\) must be an int >= 2"),
        (lambda: sp.sf_mask(0.5, 1), "window_size must be an int >= 2"),
        (lambda: sp.sf_mask(0.5, 16, kappa=0.0), "kappa must be a positive"),
        (lambda: sp.sf_mask(0.5, 16, kappa=-3.0), "kappa must be a positive"),
        (lambda: sp.sf_mask(0.5, 16, schedule="cosine"), "schedule='cosine' is unknown"),
        (lambda: sp.sf_mask(0.5, 16, schedule="contour"), "k0 is required"),
        (lambda: sp.sf_mask(0.5, 16, schedule="contour", k0=-1.0), "k0 must be a positive"),
        (lambda: sp.sf_mask(0.5, 16, c_min=0.5, c_max=0.1), "c_min=0.5 must not exceed"),
        (lambda: sp.sf_mask(np.zeros((2, 2)), 16), "t must be a scalar"),
        (lambda: sp.sf_mask(0.5, 16, fixed_scale=float("nan")), "fixed_scale must be a finite"),
        (lambda: sp.sf_cutoff(0.5, schedule="contour", k0=1.0), "window_size is required"),
        (
            lambda: sp.spectral_forcing(_IMG, np.zeros(3)),
            r"t must be a scalar or have shape \(2,\)",
        ),
        (lambda: sp.spectral_forcing(_IMG, 0.5, window_size=6), "window_size=6 must divide"),
        (lambda: sp.rapsd(_IMG, num_bins=0), "num_bins must be a positive int"),
        (lambda: sp.rapsd(_IMG, transform="fft"), "transform='fft' is unknown"),
        (lambda: sp.rapsd(_IMG[0], 8), "images must have rank 4"),
        (lambda: sp.antidiagonal_mask(8, 16), "k=16 is out of range; valid values are 0..15"),
        (lambda: sp.antidiagonal_mask(8, -1), "k=-1 is out of range"),
        (lambda: sp.antidiagonal_mask(5, 1), "block_size=5 is not supported"),
        (lambda: sp.dsm_lowpass(_IMG, 16), "k=16 is out of range"),
        (lambda: sp.dsm_lowpass(_IMG, jnp.array([3, 20])), r"k=\[3, 20\] is out of range"),
        (lambda: sp.dsm_lowpass(_IMG, jnp.float32(8.0)), "k must be an int"),
        (lambda: sp.dsm_lowpass(_IMG, 8, block_size=32), "block_size=32 must divide"),
        (lambda: sp.dct_upsample(_IMG, 3), "block_size=3 is not supported"),
        (lambda: sp.dct_upsample(np.zeros((1, 12, 12, 3), np.float32), 8), "block_size=8"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="window_size=5 must divide"):
        jax.jit(lambda z, t: sp.spectral_forcing(z, t, 5))(_IMG, jnp.zeros(2))

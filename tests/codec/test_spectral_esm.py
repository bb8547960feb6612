"""ESM (spec/spectral.md §4.3) against independent oracles: torch's F.interpolate(bicubic) and grouped
conv2d, scipy.ndimage.convolve, and a float64 NumPy/SciPy transcription of the reference
`utils_DCT.py::latent_spectral_reg_dct` (NCHW, scipy.fft.dctn(norm='ortho'))."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.ndimage

from dctjax.codec import spectral as sp


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _kernel2d(size: int = 7, sigma: float = 1.2) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - size // 2
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    return k / k.sum()


def _torch_resize(x_nhwc: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    out = torch.nn.functional.interpolate(t, size=hw, mode="bicubic", align_corners=False)
    return out.numpy().transpose(0, 2, 3, 1)


def _scipy_blur(x_nhwc: np.ndarray, size: int = 7, sigma: float = 1.2) -> np.ndarray:
    k = _kernel2d(size, sigma)
    out = np.empty(x_nhwc.shape, np.float64)
    for n in range(x_nhwc.shape[0]):
        for c in range(x_nhwc.shape[3]):
            out[n, :, :, c] = scipy.ndimage.convolve(
                x_nhwc[n, :, :, c].astype(np.float64), k, mode="constant", cval=0.0
            )
    return out


# ------------------------------------------------------------------------------------------------
# Float64 transcription of the reference (NCHW, like the PyTorch code)
# ------------------------------------------------------------------------------------------------


def _ref_bin_map(h: int, w: int, n_bins: int) -> np.ndarray:
    rr = np.sqrt(np.arange(h)[:, None] ** 2.0 + np.arange(w)[None, :] ** 2.0)
    rmax = max(rr.max(), 1.0)
    return np.clip(np.floor(rr / rmax * n_bins).astype(np.int64), 0, n_bins - 1)


def _ref_power(x: np.ndarray, eps: float) -> np.ndarray:
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    big_x = scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")
    p = np.maximum((big_x**2).mean(axis=1), eps)
    p[:, 0, 0] = 0.0
    return p


def _ref_band(p: np.ndarray, n_bins: int, eps: float) -> np.ndarray:
    b, h, w = p.shape
    bin_id = _ref_bin_map(h, w, n_bins).ravel()
    counts = np.maximum(np.bincount(bin_id, minlength=n_bins), 1.0)
    s = np.zeros((b, n_bins))
    for i in range(b):
        np.add.at(s[i], bin_id, p[i].ravel())
    return s / (counts + eps)


def _ref_latent_spectral_reg_dct(x, z, delta, n_bins=16, eps=1e-8):
    """x: (B, 3, H, W), z: (B, C, h, w) float64 -> KL (center='mean', remove_dc, log_power)."""
    hz, wz = z.shape[2:]
    x_nhwc = x.transpose(0, 2, 3, 1)
    x_blur = x_nhwc if hz == 32 else _scipy_blur(x_nhwc)
    x_ds = _torch_resize(x_blur, (hz, wz)).transpose(0, 3, 1, 2)
    sx = _ref_band(_ref_power(x_ds, eps), n_bins, eps)
    sz = _ref_band(_ref_power(z, eps), n_bins, eps)
    f = np.arange(1, n_bins + 1, dtype=np.float64)[None]
    sx = sx * f**delta
    sx = np.maximum(np.log(sx + eps + 1.0), 0.0)
    sz = np.maximum(np.log(sz + eps + 1.0), 0.0)
    sx = sx / (sx.sum(1, keepdims=True) + eps)
    sz = sz / (sz.sum(1, keepdims=True) + eps)
    return (sx * (np.log(sx + eps) - np.log(sz + eps))).sum(1).mean()


# ------------------------------------------------------------------------------------------------
# Blur and resize
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_hw", [(8, 12), (40, 36), (7, 33), (24, 20), (1, 5)])
def test_resize_bicubic_matches_torch(out_hw):
    x = _rng(0).uniform(-1, 1, (2, 24, 20, 3))
    want = _torch_resize(x, out_hw)  # float64 torch
    got = jax.jit(sp.resize_bicubic, static_argnums=1)(x.astype(np.float32), out_hw)
    assert got.shape == (2, *out_hw, 3) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=0)


def test_resize_bicubic_is_not_jax_image_resize():
    # jax.image.resize (A = -0.5, antialiased) differs, so it is no oracle for the reference.
    x = _rng(1).uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32)
    ours = np.asarray(sp.resize_bicubic(x, (16, 16)))
    theirs = np.asarray(jax.image.resize(x, (1, 16, 16, 1), "bicubic"))
    assert np.abs(ours - theirs).max() > 1e-2


def test_gaussian_blur_matches_scipy_and_torch():
    x = _rng(2).uniform(-1, 1, (2, 19, 13, 3))
    got = np.asarray(sp.gaussian_blur(x.astype(np.float32)))
    np.testing.assert_allclose(got, _scipy_blur(x), atol=1e-6, rtol=0)
    torch = pytest.importorskip("torch")
    k = torch.from_numpy(_kernel2d()).view(1, 1, 7, 7).repeat(3, 1, 1, 1)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    want = torch.nn.functional.conv2d(t, k, padding=3, groups=3).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # zero padding: a constant image darkens at the border and is unchanged in the interior
    ones = np.asarray(sp.gaussian_blur(np.ones((1, 16, 16, 1), np.float32)))
    np.testing.assert_allclose(ones[0, 3:-3, 3:-3, 0], 1.0, atol=1e-6)
    assert ones[0, 0, 0, 0] < 0.5


def test_blur_resize_validation():
    x = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="odd"):
        sp.gaussian_blur(x, size=6)
    with pytest.raises(ValueError, match="sigma"):
        sp.gaussian_blur(x, sigma=0.0)
    with pytest.raises(ValueError, match="out_hw"):
        sp.resize_bicubic(x, 4)
    with pytest.raises(ValueError, match="out_hw"):
        sp.resize_bicubic(x, (4, 0))
    with pytest.raises(ValueError, match="rank 4"):
        sp.resize_bicubic(x[0], (4, 4))
    with pytest.raises(ValueError, match="dtype"):
        sp.gaussian_blur(x.astype(np.int32))


# ------------------------------------------------------------------------------------------------
# Bins, distribution
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h,w,nb", [(16, 16, 16), (32, 32, 16), (8, 12, 16), (64, 64, 16), (5, 9, 8)]
)
def test_esm_bins_brute_force(h, w, nb):
    got = sp.esm_bins(h, w, nb)
    r_max = math.sqrt((h - 1) ** 2 + (w - 1) ** 2)
    for u in range(h):
        for v in range(w):
            want = min(math.floor(nb * math.sqrt(u * u + v * v) / r_max), nb - 1)
            assert got[u, v] == want, (u, v)
    assert got[0, 0] == 0 and got[h - 1, w - 1] == nb - 1
    assert got.dtype.kind == "i" and got.shape == (h, w)


def test_esm_bins_exact_on_ties():
    # 17 x 17: r / r_max * 16 = k exactly on the diagonal (k, k), so (k, k) is in bin k.
    got = sp.esm_bins(17, 17, 16)
    assert [int(got[k, k]) for k in range(16)] == list(range(16))
    assert got[16, 16] == 15


def test_esm_distribution_delta_flattening():
    s = _rng(3).uniform(0.0, 2.0, (3, 16))
    k = np.arange(1, 17, dtype=np.float64)
    for delta in (0.0, 0.4, 1.0):
        got = np.asarray(sp.esm_distribution(s.astype(np.float32), delta))
        flat = s * k**delta  # bin k multiplied by k^delta
        want = np.log1p(flat + 1e-8) / (np.log1p(flat + 1e-8).sum(-1, keepdims=True) + 1e-8)
        # float32 log(1 + s) (as the reference computes it) loses ~1e-8 absolute for small s
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            got, np.asarray(sp.esm_distribution((s * k**delta).astype(np.float32), 0.0)), rtol=1e-5
        )
    # delta may be traced
    f = jax.jit(sp.esm_distribution)
    np.testing.assert_allclose(
        np.asarray(f(s.astype(np.float32), jnp.float32(1.0))),
        np.asarray(sp.esm_distribution(s.astype(np.float32), 1.0)),
        rtol=1e-6,
    )


# ------------------------------------------------------------------------------------------------
# The loss against the reference transcription
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_hw,z_shape", [((64, 64), (16, 16, 8)), ((64, 64), (32, 32, 4)), ((64, 48), (16, 12, 4))]
)
def test_esm_loss_matches_reference(x_hw, z_shape):
    pytest.importorskip("torch")
    rng = _rng(4)
    x = rng.uniform(-1, 1, (2, *x_hw, 3))
    z = rng.standard_normal((2, *z_shape))
    terms = jax.jit(sp.esm_terms)(x.astype(np.float32), z.astype(np.float32), 1.0)
    x_nchw, z_nchw = x.transpose(0, 3, 1, 2), z.transpose(0, 3, 1, 2)
    want1 = _ref_latent_spectral_reg_dct(x_nchw, z_nchw, delta=1.0)
    want0 = _ref_latent_spectral_reg_dct(x_nchw, z_nchw, delta=0.0)
    np.testing.assert_allclose(float(terms.loss), want1, rtol=1e-4)
    np.testing.assert_allclose(float(terms.loss_delta0), want0, rtol=1e-4)
    np.testing.assert_allclose(float(sp.esm_loss(x, z.astype(np.float32))), want1, rtol=1e-4)
    assert terms.p_x.shape == terms.p_z.shape == (2, 16)
    np.testing.assert_allclose(np.asarray(terms.p_z).sum(-1), 1.0, atol=1e-6)


def test_esm_spectrum_matches_reference():
    x = _rng(5).standard_normal((2, 16, 12, 5))
    want = _ref_band(_ref_power(x.transpose(0, 3, 1, 2), 1e-8), 16, 1e-8)
    got = np.asarray(sp.esm_spectrum(x.astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_esm_kl_zero_for_identical_spectra():
    # h == 32 with a 32 x 32 image: no blur, and the bicubic resize is the identity matrix, so
    # the image and z = x have bitwise-identical spectra.
    x = _rng(6).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    terms = sp.esm_terms(x, x, delta=1.0)
    assert float(terms.loss_delta0) == 0.0
    assert float(terms.loss) > 1e-3  # the flattened target differs from the raw spectrum
    # per-channel scale-free shift does not change the spectrum (mean subtraction): z = x + c
    terms2 = sp.esm_terms(x, x + np.float32([0.5, -0.25, 1.0]), delta=0.0)
    assert abs(float(terms2.loss)) < 1e-7
    # h != 32: z = blurred-then-resized image reproduces the target up to float32 rounding
    big = _rng(7).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    z = sp.resize_bicubic(sp.gaussian_blur(big), (16, 16))
    assert abs(float(sp.esm_loss(big, z, delta=0.0))) < 1e-6


def test_esm_loss_gradients():
    rng = _rng(8)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    z = rng.standard_normal((2, 16, 16, 4)).astype(np.float32)
    gz, gx = jax.jit(jax.grad(lambda z, x: sp.esm_loss(x, z), argnums=(0, 1)))(z, x)
    for g in (gz, gx):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    # a small step along -grad lowers the loss
    loss0 = float(sp.esm_loss(x, z))
    loss1 = float(sp.esm_loss(x, z - 50.0 * np.asarray(gz)))
    assert loss1 < loss0


def test_esm_validation():
    x = np.zeros((2, 64, 64, 3), np.float32)
    with pytest.raises(ValueError, match="batch"):
        sp.esm_loss(x, np.zeros((3, 16, 16, 4), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        sp.esm_loss(x, np.zeros((16, 16, 4), np.float32))
    with pytest.raises(ValueError, match="num_bins"):
        sp.esm_spectrum(x, num_bins=0)
    with pytest.raises(ValueError, match="delta"):
        sp.esm_distribution(np.ones((1, 16), np.float32), delta=float("nan"))

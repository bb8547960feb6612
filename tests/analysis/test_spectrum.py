"""dctjax.analysis.spectrum and launch/analyze_spectrum.py against independent references: a NumPy
RAPSD, the closed-form VP schedule, exact power laws and a brute-force crossover search (spec
spectral §5.2-§5.3, §6, §7)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dctjax.analysis import spectrum
from dctjax.codec import spectral
from dctjax.diffusion.schedules import VPSchedule
from dctjax.representations import Pixels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _power_law_images(num: int, size: int, alpha: float, k: float, seed: int) -> np.ndarray:
    """White noise shaped by sqrt(K) |f|^(-alpha/2): orthonormal-DFT power K |f|^-alpha."""
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    amp = np.zeros_like(radius)
    amp[radius > 0] = np.sqrt(k) * radius[radius > 0] ** (-alpha / 2)
    white = np.random.default_rng(seed).normal(size=(num, size, size, 1))
    spec = np.fft.fft2(white, axes=(1, 2), norm="ortho") * amp[None, :, :, None]
    return np.real(np.fft.ifft2(spec, axes=(1, 2), norm="ortho")).astype(np.float32)


def _np_rapsd(x: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """DFT RAPSD from its definition (spec §1): mean |fft2(ortho)|^2 over images and channels, then
    over equal-width radial bins on [0, r_max], DC excluded. Returns (power, counts)."""
    x = np.asarray(x, np.float64)
    p = np.mean(np.abs(np.fft.fft2(x, axes=(1, 2), norm="ortho")) ** 2, axis=(0, 3))
    r = np.hypot(np.fft.fftfreq(x.shape[1])[:, None], np.fft.fftfreq(x.shape[2])[None, :])
    edges = np.linspace(0, r.max(), num_bins + 1)
    b = np.clip(np.digitize(r, edges) - 1, 0, num_bins - 1)
    b[0, 0] = -1
    counts = np.array([np.sum(b == i) for i in range(num_bins)])
    return np.array([p[b == i].mean() for i in range(num_bins)]), counts


def _np_alpha_sigma(ts, b0=0.1, b1=20.0, c=1.0):
    """Closed-form VP coefficients with SNR scale c: alpha_bar_c = c ab / (1 + (c - 1) ab)."""
    t = np.asarray(ts, np.float64)
    ab = np.exp(-(b0 * t + 0.5 * (b1 - b0) * t**2))
    ab_c = c * ab / (1 + (c - 1) * ab)
    return np.sqrt(ab_c), np.sqrt(1 - ab_c)


# ---------------------------------------------------------------------------------------------
# Theorem 5.1, VP form
# ---------------------------------------------------------------------------------------------


def test_vp_identity_on_power_law_images():
    # Spec §5.2: E RAPSD(alpha_t x0 + sigma_t eps) = alpha_t^2 RAPSD(x0) + sigma_t^2, per bin.
    x0 = _power_law_images(8, 32, alpha=2.0, k=0.01, seed=0)
    # 11 bins: no 32 x 32 frequency lies on a bin edge, so the binning is free of rounding ties.
    ts, draws, bins = [0.1, 0.2, 0.3, 0.5, 0.8], 16, 11
    res = spectrum.noised_spectra(
        x0, VPSchedule(snr_scale=2.0), ts, seed=1, num_draws=draws, num_bins=bins, batch_size=5
    )  # batch_size 5: two uneven chunks
    a, s = _np_alpha_sigma(ts, c=2.0)
    np.testing.assert_allclose(res.alpha, a, rtol=1e-5)
    np.testing.assert_allclose(res.sigma, s, rtol=1e-5)
    p0, counts = _np_rapsd(x0, bins)
    np.testing.assert_allclose(res.clean, p0, rtol=1e-4)
    np.testing.assert_array_equal(res.counts, counts)
    expected = a[:, None] ** 2 * p0 + s[:, None] ** 2
    np.testing.assert_allclose(res.predicted, expected, rtol=1e-4)
    # Given x0, the power of a coefficient has variance s^4 + 2 a^2 P0 s^2; DFT Hermitian pairs
    # count once.
    n_eff = counts * x0.shape[0] * draws / 2
    std = np.sqrt((s[:, None] ** 4 + 2 * (a[:, None] ** 2) * p0 * s[:, None] ** 2) / n_eff)
    assert np.all(np.abs(res.measured - expected) < 5 * std + 1e-3 * expected)
    assert np.median(np.abs(res.measured / expected - 1)) < 0.02
    # The draws' own standard error is of the analytic size.
    assert 0.4 < np.median(res.std_err / std) < 2.5
    # The measured crossover follows the power law's (K SNR)^(1/alpha) and falls with t. Below
    # the third bin the bin means of K f^-alpha (the lowest annuli are wide relative to f) part
    # from the line, so only crossings above it are compared.
    cross = spectrum.crossovers(res, spectrum.fit_power_law(res.freqs, res.clean))
    inside = (cross["data"] > res.freqs[1]) & np.isfinite(cross["data"])
    assert inside.sum() >= 3
    np.testing.assert_allclose(cross["data"][inside], cross["power_law"][inside], rtol=0.15)
    np.testing.assert_allclose(cross["noisy"][inside], cross["data"][inside], rtol=0.15)
    assert np.all(np.diff(cross["data"]) <= 0)


@pytest.mark.parametrize("transform", ["dft", "dct"])
def test_white_noise_is_flat_at_sigma2(transform):
    # x0 = 0: x_t = sigma_t eps, white noise of variance sigma_t^2.
    x0 = np.zeros((4, 32, 32, 3), np.float32)
    ts, draws = [0.05, 0.5, 1.0], 4
    res = spectrum.noised_spectra(
        x0, VPSchedule(), ts, num_draws=draws, num_bins=8, transform=transform
    )
    _, s = _np_alpha_sigma(ts)
    tol = 5.0 / np.sqrt(res.counts * 4 * 3 * draws / 2)
    assert np.all(np.abs(res.measured / s[:, None] ** 2 - 1) < tol)
    np.testing.assert_allclose(res.predicted, np.broadcast_to(s[:, None] ** 2, (3, 8)), rtol=1e-5)
    # No signal anywhere: the noise dominates from the lowest bin.
    fit = spectrum.PowerLawFit(2.0, 1.0, (0.05, 0.4), 2, 1.0)
    assert np.all(spectrum.crossovers(res, fit)["data"] == 0.0)


def test_power_law_fit_recovers_alpha():
    f = np.linspace(0.02, 0.7, 16)
    fit = spectrum.fit_power_law(f, 3.0 * f**-1.7, (0.05, 0.4))
    assert fit.alpha == pytest.approx(1.7, rel=1e-9) and fit.k == pytest.approx(3.0, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.num_bins == np.sum((f >= 0.05) & (f <= 0.4))
    # A synthetic 1/f^alpha image batch, through the real RAPSD.
    for alpha in (1.5, 2.5):
        x = _power_law_images(16, 64, alpha=alpha, k=0.01, seed=2)
        res = jax.jit(spectral.rapsd, static_argnums=1)(x, 32)
        fit = spectrum.fit_power_law(res.freqs, res.power)
        assert fit.alpha == pytest.approx(alpha, abs=0.1)
        assert fit.k == pytest.approx(0.01, rel=0.25)
    with pytest.raises(ValueError, match="fewer than two"):
        spectrum.fit_power_law(f, f**-2, (0.8, 0.9))


def _brute_force_crossover(f, s, level, grid=200_001):
    """The first point of a dense log-f grid where the log-log interpolant of s is <= level."""
    lf = np.log(f)
    dense = np.linspace(lf[0], lf[-1], grid)
    below = np.interp(dense, lf, np.log(s)) <= np.log(level)
    return np.exp(dense[np.argmax(below)]), (lf[-1] - lf[0]) / (grid - 1)


def test_crossover_frequency_against_numpy():
    f = np.linspace(0.02, 0.7, 16)
    # An exact power law: the log-log interpolation is exact, f* = (K SNR)^(1/alpha).
    k, alpha = 0.01, 2.2
    for snr in (0.2, 2.0, 20.0):
        want = (k * snr) ** (1 / alpha)
        assert f[0] < want < f[-1]
        got = spectrum.crossover_frequency(f, snr * k * f**-alpha, 1.0)
        assert got == pytest.approx(want, rel=1e-9)
        fit = spectrum.PowerLawFit(alpha, k, (0.05, 0.4), 16, 1.0)
        assert spectrum.predicted_crossover(fit, snr) == pytest.approx(want, rel=1e-12)
    # A bumpy, non-monotone spectrum: the first crossing, found by brute force.
    rng = np.random.default_rng(3)
    for _ in range(20):
        s = 10.0 * f**-2 * np.exp(rng.normal(0, 0.4, f.size))
        level = np.exp(rng.uniform(np.log(s.min() * 1.01), np.log(s.max() * 0.99)))
        if s[0] <= level:
            continue
        want, step = _brute_force_crossover(f, s, level)
        got = spectrum.crossover_frequency(f, s, level)
        assert abs(np.log(got) - np.log(want)) <= 1.5 * step
    # No crossing: inf above, 0 below; NaN (empty) bins are skipped.
    s = f**-2.0
    assert spectrum.crossover_frequency(f, s, s.min() / 2) == np.inf
    assert spectrum.crossover_frequency(f, s, s.max() * 2) == 0.0
    assert spectrum.crossover_frequency(f, s, 0.0) == np.inf
    gappy = s.copy()
    gappy[3:6] = np.nan
    kept = np.isfinite(gappy)
    assert spectrum.crossover_frequency(f, gappy, s[7] * 1.1) == pytest.approx(
        spectrum.crossover_frequency(f[kept], s[kept], s[7] * 1.1)
    )


def test_snr_scale_moves_the_crossover_up_by_c_to_the_one_over_alpha():
    f = np.linspace(0.02, 0.7, 24)
    k, alpha, c = 0.01, 2.0, 4.0
    ts = np.array([0.2, 0.3, 0.4])
    out = {}
    for scale in (1.0, c):
        a, s = _np_alpha_sigma(ts, c=scale)
        clean = k * f**-alpha
        sp = spectrum.NoisedSpectra(
            "dft", f, np.ones(24), clean, 0.0, ts, a, s,
            a[:, None] ** 2 * clean + s[:, None] ** 2, None, None,
        )  # fmt: skip
        out[scale] = spectrum.crossovers(sp, spectrum.PowerLawFit(alpha, k, (0.05, 0.4), 24, 1.0))
    for kind in ("data", "power_law"):
        assert np.all((out[1.0][kind] > f[0]) & (out[c][kind] < f[-1]))
        np.testing.assert_allclose(out[c][kind] / out[1.0][kind], c ** (1 / alpha), rtol=1e-6)
    # The noisy-spectrum crossing (RAPSD(x_t) = 2 sigma^2) is the same point, up to the log-log
    # interpolation of alpha^2 P + sigma^2 between bins (not a straight line).
    np.testing.assert_allclose(out[c]["noisy"], out[c]["data"], rtol=0.02)


# ---------------------------------------------------------------------------------------------
# DCT upsampling
# ---------------------------------------------------------------------------------------------


def test_dct_upsampling_beats_nearest_on_smooth_images():
    i = np.arange(64) / 64.0
    yy, xx = np.meshgrid(i, i, indexing="ij")
    smooth = np.stack(
        [
            0.8 * np.sin(2 * np.pi * 1.5 * xx) * np.cos(2 * np.pi * yy),
            1.6 * np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.05) - 0.8,
            0.6 * xx + 0.8 * yy**2 - 0.7,
        ],
        axis=-1,
    )
    x = np.stack([smooth, smooth[::-1, ::-1]]).astype(np.float32)
    res = spectrum.compare_upsampling(x, 4, num_bins=15)  # 15: no 64 x 64 frequency on an edge
    psnr = {m: v["psnr_db"] for m, v in res["methods"].items()}
    assert set(psnr) == {"nearest", "bilinear", "bicubic", "dct"}
    assert psnr["dct"] > psnr["nearest"] + 3.0
    # Nearest, from its definition: each 2x2 box mean repeated over the box.
    low = x.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    nearest = np.clip(low.repeat(2, axis=1).repeat(2, axis=2), -1, 1)
    mse = np.mean((nearest.astype(np.float64) - x) ** 2)
    assert psnr["nearest"] == pytest.approx(10 * np.log10(4 / mse), abs=1e-3)
    want = _np_rapsd(x, 15)[0]  # atol: float32 round-off where the smooth images have no power
    np.testing.assert_allclose(res["rapsd_original"], want, rtol=1e-4, atol=1e-8 * want.max())
    for m in res["methods"].values():
        assert np.isfinite(m["high_band_log10_error"]) and m["high_band_log10_error"] >= 0
    with pytest.raises(ValueError, match="divisible by 8"):
        spectrum.compare_upsampling(x[:, :60, :60], 4)


def test_to_model_units_is_the_pixels_encoding():
    u = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(spectrum.to_model_units(u), Pixels(8).encode(u))
    with pytest.raises(ValueError, match="uint8"):
        spectrum.to_model_units(u.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# launch/analyze_spectrum.py
# ---------------------------------------------------------------------------------------------


def _script(*args):
    return subprocess.run(
        [sys.executable, "launch/analyze_spectrum.py", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip


def _no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def test_script_end_to_end_on_synthetic(tmp_path):
    out = tmp_path / "spectrum"
    args = ["--data=synthetic", f"--out={out}", "--num_images=6", "--ts=0,0.3,1"]
    # One transform keeps the compile time down; the DCT path is covered above.
    r = _script(*args, "--num_draws=2", "--snr_scale=2", "--transforms=dft")
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "spectrum.json") as f:
        res = json.load(f, parse_constant=_no_constants)
    assert res["num_images"] == 6 and res["image_shape"] == [32, 32, 3]
    assert res["schedule"] == {"beta_min": 0.1, "beta_max": 20.0, "snr_scale": 2.0}
    a, s = _np_alpha_sigma([0, 0.3, 1], c=2.0)
    np.testing.assert_allclose(res["alpha_t"], a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res["sigma_t"], s, rtol=1e-5, atol=1e-7)
    assert list(res["spectra"]) == ["dft"]
    for sp in res["spectra"].values():
        assert len(sp["rapsd_xt"]) == 3 and len(sp["rapsd_xt"][0]) == 16
        assert sp["vp_identity"]["median_rel_error"] < 0.05
        assert sp["power_law"]["alpha"] > 1
        assert sp["crossover"]["data"][0] is None  # t = 0: no noise
        assert sp["crossover"]["regime"][0] == "signal_everywhere"
    assert set(res["upsampling"]["methods"]) == {"nearest", "bilinear", "bicubic", "dct"}
    names = ["spectra_dft", "crossover", "upsampling", "upsampling_examples"]
    for name in names:
        with open(out / f"{name}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "PSNR" in r.stdout


def test_script_user_mistake_exits_2(tmp_path):
    r = _script("--data=synthetic", f"--out={tmp_path / 'x'}", "--fit_range=0.05")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: --fit_range takes two numbers" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# Latent spectra of an autoencoder (spec §4.3)
# ---------------------------------------------------------------------------------------------


def _to_uint8(x: np.ndarray, std: float = 0.3) -> np.ndarray:
    """Float images scaled to standard deviation `std` around 0, as uint8 (x = u / 127.5 - 1)."""
    x = x / x.std() * std
    return np.round(np.clip((x + 1.0) * 127.5, 0, 255)).astype(np.uint8)


def _fourier_crop(x) -> np.ndarray:
    """Ideal x1/2 decimation: keep the DFT coefficients |k| < N/4 per axis (a power law in cycles
    per image pixel stays one, with the same slope, in cycles per latent pixel)."""
    x = np.asarray(x, np.float64)
    n = x.shape[1]
    spec = np.fft.fftshift(np.fft.fft2(x, axes=(1, 2), norm="ortho"), axes=(1, 2))
    lo = n // 2 - n // 4
    small = np.fft.ifftshift(spec[:, lo : lo + n // 2, lo : lo + n // 2], axes=(1, 2))
    return np.real(np.fft.ifft2(small, axes=(1, 2), norm="ortho")).astype(np.float32)


@pytest.mark.parametrize("transform", ["dct", "dft"])
def test_latent_spectra_of_the_identity_encoder(transform):
    # z = x at 32 px: the same spectra and slopes, and the ESM code neither blurs (h = 32) nor
    # resizes (32 -> 32 bicubic is the identity), so the raw (delta = 0) KL vanishes.
    u = _to_uint8(_power_law_images(6, 32, alpha=2.0, k=1.0, seed=5).repeat(3, axis=-1))
    res = spectrum.latent_spectra(u, lambda x: x, batch_size=4, transform=transform)  # 2 chunks
    assert res["image_shape"] == res["latent_shape"] == [32, 32, 3] and res["num_images"] == 6
    for key in ("freqs", "counts", "rapsd", "rapsd_normalized"):
        np.testing.assert_allclose(res["latent"][key], res["image"][key], rtol=1e-12)
    assert res["latent"]["power_law"] == res["image"]["power_law"]
    assert res["image"]["power_law"]["alpha"] > 1
    assert abs(res["esm_kl_raw"]) < 1e-6 and res["esm_kl"] > 1e-3  # the delta = 1 target is flatter
    np.testing.assert_allclose(res["esm_p_x_raw"], res["esm_p_z"], atol=1e-6)
    for p in ("esm_p_x", "esm_p_x_raw", "esm_p_z"):
        assert res[p].shape == (16,) and res[p].sum() == pytest.approx(1.0, abs=1e-5)
    # Normalised: unit mean power per non-DC coefficient, the variance of the mean-removed images.
    x = spectrum.to_model_units(u).astype(np.float64)
    x -= x.mean(axis=(1, 2), keepdims=True)
    img = res["image"]
    assert img["variance"] == pytest.approx(np.sum(x**2) / (6 * 3 * (32 * 32 - 1)), rel=1e-4)
    np.testing.assert_allclose(img["rapsd_normalized"], img["rapsd"] / img["variance"])
    np.testing.assert_allclose(res["latent"]["channel_std"], x.std(axis=(0, 1, 2)), rtol=0.2)
    json.dumps(spectrum.to_json(res), allow_nan=False)


def test_latent_spectra_recover_the_power_law_on_both_grids():
    for alpha in (1.5, 2.5):
        u = _to_uint8(_power_law_images(16, 64, alpha=alpha, k=1.0, seed=6))
        calls = []

        def encode(x, calls=calls):
            calls.append(x.shape)
            z = _fourier_crop(x)
            return np.concatenate([z, -z, 2 * z, z], axis=-1), None  # (mean, logvar)

        res = spectrum.latent_spectra(u, encode, batch_size=16, transform="dft")
        assert calls == [(16, 64, 64, 1)] and res["latent_shape"] == [32, 32, 4]
        assert len(res["image"]["freqs"]) == 32 and len(res["latent"]["freqs"]) == 16
        assert max(res["latent"]["freqs"]) < 0.71 and max(res["image"]["freqs"]) < 0.71
        for side in ("image", "latent"):
            assert res[side]["power_law"]["alpha"] == pytest.approx(alpha, abs=0.1), side
        std = res["latent"]["channel_std"]
        np.testing.assert_allclose(std / std[0], [1, 1, 2, 1], rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, h, w, c\)"):
        spectrum.latent_spectra(u[:2], lambda x: x[0])


def test_script_latent_spectra_of_an_autoencoder(ae_workdir, tmp_path):
    # The analysis at 64 px, the autoencoder at 32 px: the same images are read again at 32 px.
    # The workdir twice: two entries, the second label made unique.
    out = tmp_path / "latent"
    r = _script(
        "--data=synthetic", f"--out={out}", "--num_images=6", "--ts=0,1", "--num_draws=1",
        "--transforms=dct", "--resolution=64", f"--autoencoder={ae_workdir},{ae_workdir}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "spectrum.json") as f:
        res = json.load(f, parse_constant=_no_constants)
    assert res["image_shape"] == [64, 64, 3]
    name = os.path.basename(str(ae_workdir))
    assert list(res["latent_spectra"]) == [name, f"{name}_2"]
    ls = res["latent_spectra"][name]
    assert ls["image_shape"] == [32, 32, 3] and ls["latent_shape"] == [16, 16, 4]
    assert ls["transform"] == "dct" and ls["num_images"] == 6 and ls["step"] == 4
    for side in ("image", "latent"):
        assert {"freqs", "rapsd", "rapsd_normalized", "variance", "power_law"} <= set(ls[side])
        assert ls[side]["power_law"]["alpha"] is not None
    assert len(ls["latent"]["channel_std"]) == 4 and ls["esm_kl"] >= 0 and ls["esm_kl_raw"] >= 0
    assert len(ls["esm_p_x"]) == len(ls["esm_p_z"]) == 16
    with open(out / "latent_spectra.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"[latent {name}]" in r.stdout and "ESM KL" in r.stdout
    # A workdir that does not exist is a user's mistake.
    r = _script("--data=synthetic", f"--out={tmp_path / 'y'}", f"--autoencoder={tmp_path / 'no'}")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

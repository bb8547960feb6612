"""Spectral analysis of an image set: diffusion as spectral autoregression (spec spectral §5.2-§5.3)
and DCT-domain upsampling (§6). The figures of `launch/analyze_spectrum.py`; plots in `plots.py`.

Units. Images are analysed as the pixel model sees them: uint8 u -> x = u / 127.5 - 1 in [-1, 1]
(the `pixels` representation), because sigma_t is defined in the model's data units. Spectra are
`codec.spectral.rapsd` (orthonormal DFT, or the full-image DCT with k -> k / 2N): frequencies in
cycles/pixel, power per coefficient, so white noise of variance s^2 has power s^2 in every bin.

1. Theorem 5.1 in its VP form (§5.2): for x_t = alpha_t x0 + sigma_t eps,
       E RAPSD(x_t)(f) = alpha_t^2 RAPSD(x0)(f) + sigma_t^2,
   with alpha_t, sigma_t from `VPSchedule` (its SNR scale c included). `noised_spectra` measures
   the left side with Monte-Carlo noise draws and predicts the right side from the clean spectrum;
   its standard error is the spread over the draws (conditional on x0). `fit_power_law` fits
   RAPSD(x0) ~ K f^-alpha over mid frequencies. The crossover frequency per t, above which noise
   dominates, comes three ways (`crossovers`):
     - 'data':      the first f where alpha_t^2 RAPSD(x0)(f) <= sigma_t^2 (the clean spectrum);
     - 'noisy':     the first f where RAPSD(x_t)(f) <= 2 sigma_t^2 (the noisy spectrum alone);
     - 'power_law': (K SNR_t)^(1/alpha) from the fit (§5.3), SNR_t = alpha_t^2 / sigma_t^2.
   The measured crossings interpolate linearly in log-log between the two bins around them.
2. DCT upsampling (§6): 2x2 box downsampling, then x2 upsampling by nearest, bilinear, bicubic
   (`jax.image.resize` 'nearest', 'linear', 'cubic' = Keys a = -0.5) or `dct_upsample`. Figures:
   PSNR against the original, and a spectral proxy, the mean |log10| ratio of the upsampled
   images' RAPSD to the original's over the band that downsampling removed (0.25 to 0.5
   cycles/pixel), with its sign (negative: too little high-frequency power). There is no
   classifier-feature Frechet distance: the FID Inception weights are not available offline, and
   on the few hundred small images this analysis uses an FD would be dominated by its bias.
3. Latent spectra of an autoencoder (the Spectrum Matching picture, spec §4.3): `latent_spectra`
   encodes the images (posterior means) and compares the RAPSD of the images with that of the
   latents, each on its own grid (cycles per image pixel and per latent pixel, both 0 to ~0.7),
   each normalised to unit mean power per non-DC coefficient (its variance after removing each
   channel's mean: a white spectrum is 1 in every bin whatever the grid), with both power-law
   slopes, and the ESM band distributions and KL (`spectral.esm_terms`, 16 bins): the image's
   flattened p_x (delta = 1, the ESM-AE target) and raw (delta = 0) against the latent's p_z.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks, spectral
from dctjax.diffusion.schedules import VPSchedule

__all__ = [
    "DEFAULT_FIT_RANGE",
    "DEFAULT_TS",
    "HIGH_BAND",
    "UPSAMPLERS",
    "NoisedSpectra",
    "PowerLawFit",
    "analyze",
    "box_downsample",
    "compare_upsampling",
    "crossover_frequency",
    "crossovers",
    "fit_power_law",
    "latent_spectra",
    "noised_spectra",
    "predicted_crossover",
    "sample_images",
    "to_json",
    "to_model_units",
    "upsample",
    "upsampling_examples",
]

DEFAULT_TS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Mid frequencies (cycles/pixel) for the power-law fit: above the lowest bins, which hold the
# image layout, and below the DFT's partial corner annuli (f > 0.5).
DEFAULT_FIT_RANGE = (0.05, 0.4)
# The band a 2x2 box downsampling removes: above the low-resolution Nyquist (0.25 cycles/pixel of
# the high-resolution image) up to the high-resolution Nyquist.
HIGH_BAND = (0.25, 0.5)
UPSAMPLERS = ("nearest", "bilinear", "bicubic", "dct")
_RESIZE_METHODS = {"nearest": "nearest", "bilinear": "linear", "bicubic": "cubic"}


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------


def to_model_units(images) -> np.ndarray:
    """(N, H, W, C) uint8 -> float32 in [-1, 1], x = u / 127.5 - 1, as the `pixels` representation."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (N, H, W, C), got {images.dtype} with shape {images.shape}."
        )
    return images.astype(np.float32) / 127.5 - 1.0


def sample_images(source, num_images: int, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """`num_images` random images (without replacement, in index order) of a source: uint8 NHWC."""
    _checks.check_int_range(num_images, "num_images", 1, 1 << 40)
    if len(source) == 0:
        raise ValueError(f"the source {source!r} is empty; check the dataset and split.")
    n = min(num_images, len(source))
    indices = np.sort(np.random.default_rng(seed).permutation(len(source))[:n])
    images = []
    for start in range(0, n, batch_size):
        items = source.__getitems__([int(i) for i in indices[start : start + batch_size]])
        images.extend(np.asarray(item["image"]) for item in items)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different shapes {sorted(shapes)}; pass a resolution.")
    return np.stack(images)


def _chunks(x: np.ndarray, batch_size: int):
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


# ------------------------------------------------------------------------------------------------
# Theorem 5.1, VP form (spec §5.2-§5.3)
# ------------------------------------------------------------------------------------------------


class PowerLawFit(NamedTuple):
    """RAPSD(f) ~ k f^-alpha, fitted by least squares in log-log over f in f_range."""

    alpha: float
    k: float
    f_range: tuple[float, float]
    num_bins: int
    r2: float


class NoisedSpectra(NamedTuple):
    """RAPSDs of x0 and of x_t = alpha_t x0 + sigma_t eps on a grid of t (numpy, float64).

    freqs, counts, clean: (bins,); clean_dc: DC power of x0; ts, alpha, sigma: (T,);
    measured, predicted, std_err: (T, bins), predicted = alpha^2 clean + sigma^2 and std_err the
    Monte-Carlo standard error of `measured` over the noise draws (NaN with one draw).
    """

    transform: str
    freqs: np.ndarray
    counts: np.ndarray
    clean: np.ndarray
    clean_dc: float
    ts: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    std_err: np.ndarray


# Everything below runs in a few jitted functions: on CPU each eager op would compile on its own.


@functools.partial(jax.jit, static_argnums=0)
def _coefficients(schedule: VPSchedule, ts):
    """alpha_t, sigma_t and log SNR_t of the schedule (SNR scale included)."""
    return schedule.alpha(ts), schedule.sigma(ts), schedule.log_snr(ts)


_clean_rapsd = jax.jit(spectral.rapsd, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnames=("num_draws", "num_bins", "transform"))
def _noised_rapsd(x, a, s, key, i, j, num_draws: int, num_bins: int, transform: str):
    """(num_draws, bins): the RAPSD of a x + s eps for each of num_draws noise draws."""
    key = jax.random.fold_in(jax.random.fold_in(key, i), j)

    def one(k):
        eps = jax.random.normal(k, x.shape, x.dtype)
        return spectral.rapsd(a * x + s * eps, num_bins, transform).power

    return jax.lax.map(one, jax.random.split(key, num_draws))


def noised_spectra(
    x0: np.ndarray,
    schedule: VPSchedule,
    ts: Sequence[float] = DEFAULT_TS,
    *,
    seed: int = 0,
    num_draws: int = 4,
    num_bins: int | None = None,
    transform: str = "dft",
    batch_size: int = 256,
) -> NoisedSpectra:
    """Measured and predicted RAPSD of x_t for each t in `ts` (spec §5.3 steps 2-4).

    x0: (N, H, W, C) float images in the model's units. Each t draws `num_draws` independent
    noise fields per image; the images are processed `batch_size` at a time.
    """
    x0 = np.asarray(x0, np.float32)
    if x0.ndim != 4 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be (N, H, W, C) with N >= 1, got shape {x0.shape}.")
    if transform not in spectral.RAPSD_TRANSFORMS:
        raise ValueError(f"transform={transform!r}; valid: {spectral.RAPSD_TRANSFORMS}.")
    _checks.check_int_range(num_draws, "num_draws", 1, 1 << 20)
    _checks.check_int_range(batch_size, "batch_size", 1, 1 << 20)
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.size == 0 or not np.all((ts >= 0) & (ts <= 1)):
        raise ValueError(f"ts must be a non-empty list of times in [0, 1], got {ts.tolist()}.")
    n = x0.shape[0]
    if num_bins is None:
        num_bins = max(min(x0.shape[1:3]) // 2, 1)
    clean = np.zeros(num_bins)
    clean_dc = 0.0
    for chunk in _chunks(x0, batch_size):
        res = _clean_rapsd(chunk, num_bins, transform)
        clean += np.asarray(res.power, np.float64) * chunk.shape[0] / n
        clean_dc += float(res.dc) * chunk.shape[0] / n
    freqs, counts = np.asarray(res.freqs, np.float64), np.asarray(res.counts)

    alpha, sigma, _ = (
        np.asarray(v, np.float64) for v in _coefficients(schedule, ts.astype(np.float32))
    )
    key = jax.random.key(seed)
    measured = np.zeros((ts.size, num_bins))
    std_err = np.zeros((ts.size, num_bins))
    for i, (a, s) in enumerate(zip(alpha, sigma, strict=True)):
        per_draw = np.zeros((num_draws, num_bins))
        for j, chunk in enumerate(_chunks(x0, batch_size)):
            p = _noised_rapsd(
                chunk, np.float32(a), np.float32(s), key, i, j, num_draws, num_bins, transform
            )
            per_draw += np.asarray(p, np.float64) * chunk.shape[0] / n
        measured[i] = per_draw.mean(axis=0)
        if num_draws > 1:
            std_err[i] = per_draw.std(axis=0, ddof=1) / math.sqrt(num_draws)
        else:
            std_err[i] = np.nan
    predicted = alpha[:, None] ** 2 * clean[None] + sigma[:, None] ** 2
    return NoisedSpectra(
        transform, freqs, counts, clean, clean_dc, ts, alpha, sigma, measured, predicted, std_err
    )


def fit_power_law(freqs, power, f_range: tuple[float, float] = DEFAULT_FIT_RANGE) -> PowerLawFit:
    """Least-squares fit of log power = log k - alpha log f over the bins with f in f_range.

    Empty (NaN) and non-positive bins are skipped; at least two bins must remain.
    """
    f, p = np.asarray(freqs, np.float64), np.asarray(power, np.float64)
    lo, hi = (float(v) for v in f_range)
    if not 0 < lo < hi:
        raise ValueError(f"f_range must be (lo, hi) with 0 < lo < hi, got {f_range}.")
    m = np.isfinite(p) & (p > 0) & (f >= lo) & (f <= hi)
    if m.sum() < 2:
        raise ValueError(
            f"fewer than two spectrum bins in f_range={f_range} cycles/pixel (bin centres "
            f"{np.round(f, 4).tolist()}); widen it or use more bins."
        )
    lf, lp = np.log(f[m]), np.log(p[m])
    slope, intercept = np.polyfit(lf, lp, 1)
    resid = lp - (slope * lf + intercept)
    total = np.sum((lp - lp.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / total if total > 0 else 1.0
    return PowerLawFit(float(-slope), float(np.exp(intercept)), (lo, hi), int(m.sum()), float(r2))


def crossover_frequency(freqs, signal, level: float) -> float:
    """The first frequency where `signal` falls to `level` or below (the noise takes over).

    Linear interpolation of log signal - log level in log f between the last bin above and the
    first bin at or below (that bin's frequency if the signal is 0 there). inf when the signal
    stays above the level in every bin (or level <= 0); 0.0 when it is already at or below it in
    the lowest bin. Empty (NaN) bins are skipped.
    """
    f, s = np.asarray(freqs, np.float64), np.asarray(signal, np.float64)
    level = float(level)
    keep = ~np.isnan(s) & (f > 0)
    f, s = f[keep], s[keep]
    if level <= 0 or f.size == 0:
        return math.inf
    below = s <= level
    if not below.any():
        return math.inf
    i = int(np.argmax(below))
    if i == 0:
        return 0.0
    if s[i] <= 0:
        return float(f[i])
    g0, g1 = math.log(s[i - 1] / level), math.log(s[i] / level)  # g0 > 0 >= g1
    w = g0 / (g0 - g1)
    return float(math.exp((1 - w) * math.log(f[i - 1]) + w * math.log(f[i])))


def predicted_crossover(fit: PowerLawFit, snr: float) -> float:
    """(K SNR)^(1/alpha): where alpha_t^2 K f^-alpha = sigma_t^2 (spec §5.3); inf for SNR = inf."""
    snr = float(snr)
    if not math.isfinite(snr):
        return math.inf
    if snr <= 0 or fit.alpha <= 0:
        return 0.0
    return float((fit.k * snr) ** (1.0 / fit.alpha))


def crossovers(spectra: NoisedSpectra, fit: PowerLawFit) -> dict[str, np.ndarray]:
    """Per t: the 'data', 'noisy' and 'power_law' crossover frequencies (module docstring)."""
    data, noisy, law = [], [], []
    for a, s, m in zip(spectra.alpha, spectra.sigma, spectra.measured, strict=True):
        data.append(crossover_frequency(spectra.freqs, a**2 * spectra.clean, s**2))
        noisy.append(crossover_frequency(spectra.freqs, m, 2 * s**2))
        law.append(predicted_crossover(fit, a**2 / s**2 if s > 0 else math.inf))
    return {"data": np.array(data), "noisy": np.array(noisy), "power_law": np.array(law)}


def _regime(f: float) -> str:
    if f == math.inf:
        return "signal_everywhere"
    return "noise_everywhere" if f == 0.0 else "crossing"


def _non_increasing(values: np.ndarray) -> bool:
    return bool(np.all(np.diff(values) <= 1e-12 * np.maximum(1.0, np.abs(values[:-1]))))


# ------------------------------------------------------------------------------------------------
# DCT upsampling against classical interpolation (spec §6)
# ------------------------------------------------------------------------------------------------


def _check_upsampling_shape(h: int, w: int, block_size: int) -> int:
    b = _checks.check_block_size(block_size)
    if h % (2 * b) or w % (2 * b):
        raise ValueError(
            f"DCT upsampling with block_size={b} needs H and W divisible by {2 * b} (2x2 box "
            f"downsampling, then {b}x{b} blocks), got H={h}, W={w}; choose another resolution "
            "or block size."
        )
    return b


def box_downsample(x, factor: int = 2) -> jnp.ndarray:
    """Mean over factor x factor boxes: (N, H, W, C) -> (N, H/factor, W/factor, C)."""
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"H={h}, W={w} must be divisible by the downsampling factor {factor}.")
    return jnp.mean(jnp.reshape(x, (n, h // factor, factor, w // factor, factor, c)), axis=(2, 4))


def upsample(x, method: str, block_size: int = 4) -> jnp.ndarray:
    """x2 upsampling (N, h, w, C) -> (N, 2h, 2w, C) by one of `UPSAMPLERS`."""
    if method == "dct":
        return spectral.dct_upsample(x, block_size)
    if method not in _RESIZE_METHODS:
        raise ValueError(f"unknown upsampler {method!r}; choose one of {UPSAMPLERS}.")
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, 2 * h, 2 * w, c), _RESIZE_METHODS[method])


@functools.partial(jax.jit, static_argnames=("block_size", "num_bins"))
def _upsampling_batch(x, block_size: int, num_bins: int):
    low = box_downsample(x)
    res = spectral.rapsd(x, num_bins)
    out = {"original": (res.freqs, res.power)}
    for method in UPSAMPLERS:
        up = jnp.clip(upsample(low, method, block_size), -1.0, 1.0)
        sq_err = jnp.sum((up - x) ** 2)
        out[method] = (sq_err, spectral.rapsd(up, num_bins).power)
    return out


def compare_upsampling(
    x0: np.ndarray,
    block_size: int = 4,
    *,
    num_bins: int | None = None,
    high_band: tuple[float, float] = HIGH_BAND,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Box-downsample x0 (model units, [-1, 1]) by 2, upsample back by each of `UPSAMPLERS`.

    Returns {'freqs', 'rapsd_original', 'high_band', 'methods': {name: {'psnr_db', 'mse',
    'rapsd', 'high_band_log10_error', 'high_band_log10_bias'}}}. The upsampled images are clipped
    to [-1, 1] (as decoding would) before the figures; PSNR is 10 log10(2^2 / MSE) over all
    pixels of all images (peak-to-peak 2 in [-1, 1], i.e. PSNR in uint8 units without rounding).
    The log10 errors are means over the bins in `high_band` of |log10 RAPSD(up) / RAPSD(x0)| and
    of the signed ratio (a spectral proxy, not a Frechet distance).
    """
    x0 = np.asarray(x0, np.float32)
    n, h, w, _ = x0.shape
    b = _check_upsampling_shape(h, w, block_size)
    if num_bins is None:
        num_bins = max(min(h, w) // 2, 1)
    sums = {name: [0.0, np.zeros(num_bins)] for name in UPSAMPLERS}
    original = np.zeros(num_bins)
    for chunk in _chunks(x0, batch_size):
        out = _upsampling_batch(chunk, b, num_bins)
        freqs, power = out.pop("original")
        original += np.asarray(power, np.float64) * chunk.shape[0] / n
        for name, (sq_err, power) in out.items():
            sums[name][0] += float(sq_err)
            sums[name][1] += np.asarray(power, np.float64) * chunk.shape[0] / n
    freqs = np.asarray(freqs, np.float64)
    band = (freqs >= high_band[0]) & (freqs <= high_band[1]) & np.isfinite(original)
    methods = {}
    for name in UPSAMPLERS:
        sq_err, power = sums[name]
        mse = sq_err / x0.size
        log_ratio = np.log10(np.maximum(power[band], 1e-30) / original[band])
        methods[name] = {
            "psnr_db": 10 * math.log10(4.0 / mse) if mse > 0 else math.inf,
            "mse": mse,
            "rapsd": power,
            "high_band_log10_error": float(np.mean(np.abs(log_ratio))),
            "high_band_log10_bias": float(np.mean(log_ratio)),
        }
    return {
        "freqs": freqs,
        "rapsd_original": original,
        "high_band": tuple(float(v) for v in high_band),
        "block_size": b,
        "methods": methods,
    }


def upsampling_examples(images, block_size: int = 4, num: int = 4) -> dict[str, np.ndarray]:
    """The first `num` images and their x2 reconstructions, uint8 (num, H, W, C) per key:
    'original', 'low' (the box-downsampled image, shown at full size by pixel repetition) and
    each of `UPSAMPLERS`."""
    return {
        k: np.asarray(v)
        for k, v in _examples(to_model_units(np.asarray(images)[:num]), block_size).items()
    }


@functools.partial(jax.jit, static_argnums=1)
def _examples(x, block_size: int) -> dict[str, jnp.ndarray]:
    low = box_downsample(x)
    out = {"original": x, "low": jnp.repeat(jnp.repeat(low, 2, axis=1), 2, axis=2)}
    for method in UPSAMPLERS:
        out[method] = upsample(low, method, block_size)
    return {
        k: jnp.round(jnp.clip((v + 1.0) * 127.5, 0, 255)).astype(jnp.uint8) for k, v in out.items()
    }


# ------------------------------------------------------------------------------------------------
# Latent spectra of an autoencoder (spec §4.3)
# ------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_bins", "esm_bins", "transform"))
def _latent_batch(x, z, delta, num_bins, esm_bins: int, transform: str):
    """RAPSDs of x and z (each channel's mean removed per image) and the ESM terms of the batch."""
    nb_x, nb_z = num_bins
    rx = spectral.rapsd(x - jnp.mean(x, axis=(1, 2), keepdims=True), nb_x, transform)
    rz = spectral.rapsd(z - jnp.mean(z, axis=(1, 2), keepdims=True), nb_z, transform)
    terms = spectral.esm_terms(x, z, delta, esm_bins)
    p_x_raw = spectral.esm_terms(x, z, 0.0, esm_bins).p_x
    return rx, rz, terms, p_x_raw


def _spectrum_entry(freqs, counts, power, fit_range) -> dict[str, Any]:
    """One side of `latent_spectra`: the RAPSD, its normalised form and its power-law fit."""
    counts = np.asarray(counts)
    ok = np.isfinite(power) & (counts > 0)
    variance = float(np.sum(power[ok] * counts[ok]) / np.sum(counts[ok]))
    normalized = power / variance if variance > 0 else np.full_like(power, np.nan)
    try:
        fit = fit_power_law(freqs, normalized, fit_range)
        law = {
            "alpha": fit.alpha,
            "k": fit.k,
            "f_range": list(fit.f_range),
            "num_bins": fit.num_bins,
            "r2": fit.r2,
        }
    except ValueError:  # a grid too small for two bins in the fit range
        law = {"alpha": None, "k": None, "f_range": list(fit_range), "num_bins": 0, "r2": None}
    return {
        "freqs": np.asarray(freqs, np.float64),
        "counts": counts,
        "rapsd": power,
        "variance": variance,
        "rapsd_normalized": normalized,
        "power_law": law,
    }


def latent_spectra(
    images: np.ndarray,
    encode_fn,
    num_bins: int | None = None,
    batch_size: int = 64,
    *,
    transform: str = "dct",
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    esm_delta: float = 1.0,
    esm_num_bins: int = 16,
) -> dict[str, Any]:
    """Image against latent spectra of an autoencoder (spec §4.3), as a dict of numpy arrays and
    floats (`to_json` makes it JSON-ready).

    images: uint8 (N, H, W, C), encoded as x = u / 127.5 - 1 (`to_model_units`). encode_fn: x
    (n, H, W, C) float32 in [-1, 1] -> the latent posterior means (n, h, w, c), or a tuple whose
    first element they are (an `Autoencoder.encode`'s (mean, logvar)); called `batch_size` images
    at a time. num_bins: radial bins of both RAPSDs (None: min(H, W) // 2 for the images and
    min(h, w) // 2 for the latents; an int may leave empty, NaN, bins on a small latent grid).

    Returns {'transform', 'num_images', 'image_shape', 'latent_shape', 'image', 'latent', 'esm_*'}:
    'image' and 'latent' each hold 'freqs' (cycles per pixel of their own grid), 'counts',
    'rapsd' (each channel's mean removed per image; the images in [-1, 1] units), 'variance' (the
    mean power per non-DC coefficient), 'rapsd_normalized' (rapsd / variance: a white spectrum is
    1) and 'power_law' (`fit_power_law` of the normalised RAPSD over `fit_range`: alpha, k, f_range,
    num_bins, r2; None values when fewer than two bins fall in the range); 'latent' also
    'channel_mean' and 'channel_std' (over all images and positions). The ESM figures
    (`spectral.esm_terms` of the images and the posterior means, averaged over the images):
    'esm_kl' (KL(p_x || p_z) with the flattened target, delta = `esm_delta`), 'esm_kl_raw'
    (delta = 0), 'esm_p_x', 'esm_p_x_raw', 'esm_p_z' (the mean band distributions, esm_num_bins),
    'esm_delta'.
    """
    x_all = to_model_units(images)
    if x_all.shape[0] == 0:
        raise ValueError("latent_spectra needs at least one image.")
    if transform not in spectral.RAPSD_TRANSFORMS:
        raise ValueError(f"transform={transform!r}; valid: {spectral.RAPSD_TRANSFORMS}.")
    _checks.check_int_range(batch_size, "batch_size", 1, 1 << 20)
    _checks.check_int_range(esm_num_bins, "esm_num_bins", 1, 1 << 20)
    if num_bins is not None:
        _checks.check_int_range(num_bins, "num_bins", 1, 1 << 20)
    n = x_all.shape[0]
    acc: dict[str, Any] = {}
    latent_shape = None
    for chunk in _chunks(x_all, batch_size):
        z = encode_fn(jnp.asarray(chunk))
        if isinstance(z, tuple | list):
            z = z[0]
        z = np.asarray(z, np.float32)
        if z.ndim != 4 or z.shape[0] != chunk.shape[0]:
            raise ValueError(
                f"encode_fn must return (n, h, w, c) latents for n = {chunk.shape[0]} images, got "
                f"shape {z.shape}."
            )
        if latent_shape is None:
            latent_shape = z.shape[1:]
            bins = tuple(
                num_bins if num_bins is not None else max(min(s[:2]) // 2, 1)
                for s in (x_all.shape[1:], latent_shape)
            )
        elif z.shape[1:] != latent_shape:
            raise ValueError(
                f"latent shapes differ between batches: {latent_shape}, {z.shape[1:]}."
            )
        rx, rz, terms, p_x_raw = _latent_batch(
            chunk, z, np.float32(esm_delta), bins, esm_num_bins, transform
        )
        w = chunk.shape[0] / n
        parts = {
            "image": np.asarray(rx.power, np.float64) * w,
            "latent": np.asarray(rz.power, np.float64) * w,
            "esm_kl": float(terms.loss) * w,
            "esm_kl_raw": float(terms.loss_delta0) * w,
            "esm_p_x": np.asarray(terms.p_x, np.float64).sum(0) / n,
            "esm_p_x_raw": np.asarray(p_x_raw, np.float64).sum(0) / n,
            "esm_p_z": np.asarray(terms.p_z, np.float64).sum(0) / n,
            "z_sum": z.astype(np.float64).sum(axis=(0, 1, 2)),
            "z_sq": (z.astype(np.float64) ** 2).sum(axis=(0, 1, 2)),
        }
        for k, v in parts.items():
            acc[k] = acc[k] + v if k in acc else v
        grids = {"image": rx, "latent": rz}
    count = n * latent_shape[0] * latent_shape[1]
    mean = acc["z_sum"] / count
    std = np.sqrt(np.maximum(acc["z_sq"] / count - mean**2, 0.0))
    sides = {
        name: _spectrum_entry(
            np.asarray(grids[name].freqs), np.asarray(grids[name].counts), acc[name], fit_range
        )
        for name in ("image", "latent")
    }
    sides["latent"].update(channel_mean=mean, channel_std=std)
    return {
        "transform": transform,
        "num_images": n,
        "image_shape": list(x_all.shape[1:]),
        "latent_shape": [int(v) for v in latent_shape],
        **sides,
        "esm_delta": float(esm_delta),
        **{k: acc[k] for k in ("esm_kl", "esm_kl_raw", "esm_p_x", "esm_p_x_raw", "esm_p_z")},
    }


# ------------------------------------------------------------------------------------------------
# Everything together
# ------------------------------------------------------------------------------------------------


def _spectra_figures(sp: NoisedSpectra, fit: PowerLawFit) -> dict[str, Any]:
    cross = crossovers(sp, fit)
    rel = np.abs(sp.measured / sp.predicted - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(sp.measured - sp.predicted) / sp.std_err
    measured = cross["data"][np.isfinite(cross["data"])]
    return {
        "freqs": sp.freqs,
        "counts": sp.counts,
        "rapsd_x0": sp.clean,
        "dc_x0": sp.clean_dc,
        "power_law": {
            "alpha": fit.alpha,
            "k": fit.k,
            "f_range": list(fit.f_range),
            "num_bins": fit.num_bins,
            "r2": fit.r2,
        },
        "rapsd_xt": sp.measured,
        "predicted": sp.predicted,
        "std_err": sp.std_err,
        # How well RAPSD(x_t) = alpha_t^2 RAPSD(x0) + sigma_t^2 holds over all t and bins.
        "vp_identity": {
            "max_rel_error": float(np.nanmax(rel)),
            "median_rel_error": float(np.nanmedian(rel)),
            # |measured - predicted| / std_err (from num_draws draws; about 0.7 when it holds).
            "median_abs_z": float(np.nanmedian(z[np.isfinite(z)]))
            if np.isfinite(z).any()
            else None,
        },
        "crossover": {
            **cross,
            "regime": [_regime(f) for f in cross["data"]],
            "data_non_increasing": _non_increasing(measured) if measured.size > 1 else True,
        },
    }


def analyze(
    images: np.ndarray,
    schedule: VPSchedule,
    ts: Sequence[float] = DEFAULT_TS,
    *,
    transforms: Sequence[str] = ("dft", "dct"),
    num_draws: int = 4,
    num_bins: int | None = None,
    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE,
    block_size: int = 4,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The figures of `launch/analyze_spectrum.py` for uint8 (N, H, W, C) images, as a nested dict
    of numpy arrays and floats (`to_json` makes it JSON-ready). Keys: 'units', 'num_images',
    'image_shape', 'schedule', 'ts', 'alpha_t', 'sigma_t', 'log_snr_t', 'spectra' (one entry per
    transform, see `_spectra_figures`), 'upsampling' (`compare_upsampling`)."""
    x0 = to_model_units(images)
    _check_upsampling_shape(x0.shape[1], x0.shape[2], block_size)  # before the long part
    if not transforms:
        raise ValueError("transforms must name at least one of ('dft', 'dct').")
    spectra = {}
    sp = None
    for transform in transforms:
        sp = noised_spectra(
            x0,
            schedule,
            ts,
            seed=seed,
            num_draws=num_draws,
            num_bins=num_bins,
            transform=transform,
            batch_size=batch_size,
        )
        spectra[transform] = _spectra_figures(sp, fit_power_law(sp.freqs, sp.clean, fit_range))
    log_snr = np.asarray(_coefficients(schedule, sp.ts.astype(np.float32))[2], np.float64)
    return {
        "units": "x = u / 127.5 - 1 in [-1, 1] (the pixels representation); frequencies in "
        "cycles/pixel; orthonormal transforms (white noise of variance s^2 has power s^2)",
        "num_images": int(x0.shape[0]),
        "image_shape": list(x0.shape[1:]),
        "schedule": {
            "beta_min": schedule.beta_min,
            "beta_max": schedule.beta_max,
            "snr_scale": schedule.snr_scale,
        },
        "num_draws": num_draws,
        "ts": sp.ts,
        "alpha_t": sp.alpha,
        "sigma_t": sp.sigma,
        "log_snr_t": log_snr,
        "spectra": spectra,
        "upsampling": compare_upsampling(x0, block_size, num_bins=num_bins, batch_size=batch_size),
    }


def to_json(value: Any) -> Any:
    """Arrays -> lists, numpy scalars -> Python numbers, NaN and +-inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""Spectral tools: windowed DCT, Spectral Forcing low-pass, RAPSD, Spectrum Matching (ESM loss,
DSM masking), DCT upsampling.

All image functions are pure jnp, batch-first NHWC, jit- and vmap-able. Transforms use the
orthonormal DCT-II in matrix form (`dct.dct_matrix`, precision=HIGHEST), computed in at least
float32 and cast back to the input dtype. Parameters are checked on static shapes before any XLA
work, and bad ones raise ValueError.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks
from dctjax.codec.dct import dct_matrix

__all__ = [
    "ESMTerms",
    "RAPSD",
    "SF_SCHEDULES",
    "RAPSD_TRANSFORMS",
    "antidiagonal_mask",
    "dct_upsample",
    "dsm_lowpass",
    "esm_bins",
    "esm_distribution",
    "esm_loss",
    "esm_spectrum",
    "esm_terms",
    "gaussian_blur",
    "radial_frequency",
    "rapsd",
    "resize_bicubic",
    "sf_cutoff",
    "sf_mask",
    "spectral_forcing",
    "windowed_dct",
    "windowed_idct",
]

SF_SCHEDULES = ("linear", "contour")
RAPSD_TRANSFORMS = ("dft", "dct")
_HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------------------------------------------
# Validation helpers
# ------------------------------------------------------------------------------------------------


def _check_float_images(x, name: str = "x"):
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    _checks.check_rank(x, 4, name, "batch, height, width, channels")
    _checks.check_dtype(x, ("floating",), name)
    return x


def _check_pos_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _check_finite(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}.") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return v


def _window_hw(height: int, width: int, window_size, name: str = "window_size") -> tuple[int, int]:
    """Window (nh, nw): the full image for None, else (n, n) with n dividing H and W."""
    if window_size is None:
        return int(height), int(width)
    n = _check_pos_int(window_size, name)
    if height % n or width % n:
        raise ValueError(
            f"{name}={n} must divide the image height and width, got H={height}, W={width}; "
            f"crop or pad to a multiple of {n}."
        )
    return n, n


def _mask_hw(window_size, name: str = "window_size") -> tuple[int, int]:
    """An int N or a pair (nh, nw), each >= 2 (the radius normalisation divides by N - 1)."""
    if isinstance(window_size, tuple | list) and len(window_size) == 2:
        nh, nw = window_size
    else:
        nh = nw = window_size
    for v in (nh, nw):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 2:
            raise ValueError(f"{name} must be an int >= 2 or a pair of them, got {window_size!r}.")
    return int(nh), int(nw)


def _check_t(t, name: str = "t"):
    if not hasattr(t, "dtype"):
        t = np.asarray(t, dtype=np.float32)
    if np.ndim(t) > 1:
        raise ValueError(
            f"{name} must be a scalar or have shape (batch,), got shape {np.shape(t)}."
        )
    return t


def _sf_params(c_min, c_max, schedule, k0, alpha, fixed_scale) -> dict:
    c_min = _check_finite(c_min, "c_min")
    c_max = _check_finite(c_max, "c_max")
    if c_min > c_max:
        raise ValueError(f"c_min={c_min} must not exceed c_max={c_max}.")
    if schedule not in SF_SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is unknown; valid schedules are {SF_SCHEDULES}.")
    if schedule == "contour":
        if k0 is None:
            raise ValueError("k0 is required for schedule='contour' (a positive radius, §2.4).")
        k0 = _checks.check_positive(k0, "k0")
        alpha = _checks.check_positive(alpha, "alpha")
    if fixed_scale is not None:
        fixed_scale = _check_finite(fixed_scale, "fixed_scale")
    return dict(c_min=c_min, c_max=c_max, schedule=schedule, k0=k0, alpha=alpha)


# ------------------------------------------------------------------------------------------------
# Windowed DCT
# ------------------------------------------------------------------------------------------------


def _compute_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _to_windows(x: jnp.ndarray, nh: int, nw: int) -> jnp.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // nh, nh, w // nw, nw, c)


def _from_windows(xw: jnp.ndarray) -> jnp.ndarray:
    n, hb, nh, wb, nw, c = xw.shape
    return xw.reshape(n, hb * nh, wb * nw, c)


def _apply_rows_cols(xw: jnp.ndarray, a: np.ndarray, b: np.ndarray) -> jnp.ndarray:
    """(n, hb, i, wb, j, c) -> (n, hb, u, wb, v, c) with y = A x B^T per window and channel."""
    a = jnp.asarray(a, xw.dtype)
    b = jnp.asarray(b, xw.dtype)
    return jnp.einsum("ui,vj,npiqjc->npuqvc", a, b, xw, precision=_HIGHEST)


def windowed_dct(x: jnp.ndarray, window_size: int | None = None) -> jnp.ndarray:
    """Orthonormal 2-D DCT-II per channel over non-overlapping n x n windows: (N, H, W, C) -> same.

    window_size=None transforms the full image (H != W allowed). Coefficient (u, v) of window (p, q)
    is stored at pixel (p*n + u, q*n + v), so the output keeps the layout of the input.
    """
    x = _check_float_images(x)
    nh, nw = _window_hw(x.shape[1], x.shape[2], window_size)
    dt = _compute_dtype(x.dtype)
    xw = _to_windows(jnp.asarray(x, dt), nh, nw)
    return _from_windows(_apply_rows_cols(xw, dct_matrix(nh), dct_matrix(nw))).astype(x.dtype)


def windowed_idct(coeffs: jnp.ndarray, window_size: int | None = None) -> jnp.ndarray:
    """Inverse of `windowed_dct`: (N, H, W, C) window-layout coefficients -> (N, H, W, C) image."""
    coeffs = _check_float_images(coeffs, "coeffs")
    nh, nw = _window_hw(coeffs.shape[1], coeffs.shape[2], window_size)
    dt = _compute_dtype(coeffs.dtype)
    cw = _to_windows(jnp.asarray(coeffs, dt), nh, nw)
    out = _apply_rows_cols(cw, dct_matrix(nh).T, dct_matrix(nw).T)
    return _from_windows(out).astype(coeffs.dtype)


# ------------------------------------------------------------------------------------------------
# Spectral Forcing (spec §2.3, §2.4)
# ------------------------------------------------------------------------------------------------


@functools.cache
def _radius64(nh: int, nw: int) -> np.ndarray:
    u = np.arange(nh, dtype=np.float64)[:, None] / (nh - 1)
    v = np.arange(nw, dtype=np.float64)[None, :] / (nw - 1)
    r = np.sqrt(u**2 + v**2) / np.sqrt(2.0)
    r.setflags(write=False)
    return r


def radial_frequency(n: int, m: int | None = None) -> np.ndarray:
    """(n, m) float32 normalised DCT radius r(u, v) = sqrt(u^2 + v^2) / (sqrt(2) (n - 1)) in [0, 1].

    DC is 0 and the highest corner 1. For m != n (a non-square full image) each axis is normalised
    by its own length, r = sqrt((u/(n-1))^2 + (v/(m-1))^2) / sqrt(2), i.e. the above when m == n.
    """
    nh, nw = _mask_hw((n, n if m is None else m), "radial_frequency size (n, m)")
    return _radius64(nh, nw).astype(np.float32)


def sf_cutoff(
    t,
    c_min: float = 0.05,
    c_max: float = 1.0,
    schedule: str = "linear",
    *,
    k0: float | None = None,
    alpha: float = 2.0,
    window_size: int | tuple[int, int] | None = None,
) -> jnp.ndarray:
    """Spectral Forcing cutoff c(t) (normalised radius): float32, t's shape; t clipped to [0, 1].

    Time convention: t = 0 noise, t = 1 data.
    schedule='linear' (the released code): c(t) = c_min + (c_max - c_min) t.
    schedule='contour' (spec §2.4): c(t) = clip(k*(t) / k_max, c_min, c_max) with
    k*(t) = k0 (t / (1 - t))^(2 / alpha), k0 in frequency-index units, k_max = sqrt(2)(N - 1);
    window_size (N, or (nh, nw) with k_max = hypot(nh - 1, nw - 1)) is then required.
    """
    p = _sf_params(c_min, c_max, schedule, k0, alpha, None)
    t = _check_t(t)
    if schedule == "contour" and window_size is None:
        raise ValueError("window_size is required for schedule='contour' (it sets k_max).")
    return _cutoff(t, p, None if window_size is None else _mask_hw(window_size))


def _cutoff(t, p: dict, hw: tuple[int, int] | None) -> jnp.ndarray:
    t = jnp.clip(jnp.asarray(t, jnp.float32), 0.0, 1.0)
    if p["schedule"] == "linear":
        return p["c_min"] + (p["c_max"] - p["c_min"]) * t
    nh, nw = hw
    k_max = float(np.hypot(nh - 1, nw - 1))
    # t / (1 - t) is +inf at t = 1, which the clip maps to c_max.
    k_star = p["k0"] * jnp.power(t / (1.0 - t), 2.0 / p["alpha"])
    return jnp.clip(k_star / k_max, p["c_min"], p["c_max"])


def sf_mask(
    t,
    window_size: int | tuple[int, int],
    kappa: float = 30.0,
    c_min: float = 0.05,
    c_max: float = 1.0,
    schedule: str = "linear",
    fixed_scale: float | None = None,
    *,
    k0: float | None = None,
    alpha: float = 2.0,
) -> jnp.ndarray:
    """Soft low-pass mask M_t(u, v) = sigmoid(kappa (c(t) - r(u, v))): t.shape + (N, N), float32.

    t has shape () or (batch,). window_size is N or a pair (nh, nw) for a non-square full image.
    fixed_scale (the time-independent ablation) replaces t for every sample, as the reference's
    `dct_fixed_scale` does, so fixed_scale=1.0 fixes c at c_max.
    """
    p = _sf_params(c_min, c_max, schedule, k0, alpha, fixed_scale)
    kappa = _checks.check_positive(kappa, "kappa")
    hw = _mask_hw(window_size)
    t = _check_t(t)
    return _mask(t, hw, kappa, p, fixed_scale)


def _mask(t, hw, kappa: float, p: dict, fixed_scale) -> jnp.ndarray:
    if fixed_scale is not None:
        t = jnp.full(jnp.shape(t), fixed_scale, jnp.float32)
    c = _cutoff(t, p, hw)
    r = jnp.asarray(_radius64(*hw), jnp.float32)
    return jax.nn.sigmoid(kappa * (c[..., None, None] - r))


def spectral_forcing(
    z: jnp.ndarray,
    t,
    window_size: int | None = None,
    kappa: float = 30.0,
    c_min: float = 0.05,
    c_max: float = 1.0,
    schedule: str = "linear",
    fixed_scale: float | None = None,
    *,
    k0: float | None = None,
    alpha: float = 2.0,
) -> jnp.ndarray:
    """Spectral Forcing operator IDCT(DCT(z) * M_t) per channel and window: (N, H, W, C) -> same.

    z: the noisy image in data units. t: shape () or (N,), rectified flow (t = 0 noise, t = 1 data).
    window_size=None is the full-image DCT (the reference default). One mask per sample, shared by
    all channels and windows. Filter the network input only; targets use the unfiltered z.
    """
    z = _check_float_images(z, "z")
    nb, h, w, _ = z.shape
    p = _sf_params(c_min, c_max, schedule, k0, alpha, fixed_scale)
    kappa = _checks.check_positive(kappa, "kappa")
    nh, nw = _window_hw(h, w, window_size)
    hw = _mask_hw((nh, nw))
    t = _check_t(t)
    if np.ndim(t) == 1 and np.shape(t)[0] != nb:
        raise ValueError(f"t must be a scalar or have shape ({nb},) to match z, got {np.shape(t)}.")
    mask = jnp.broadcast_to(_mask(t, hw, kappa, p, fixed_scale), (nb, nh, nw))

    dt = _compute_dtype(z.dtype)
    mh, mw = dct_matrix(nh), dct_matrix(nw)
    coeffs = _apply_rows_cols(_to_windows(jnp.asarray(z, dt), nh, nw), mh, mw)
    coeffs = coeffs * mask[:, None, :, None, :, None].astype(dt)
    return _from_windows(_apply_rows_cols(coeffs, mh.T, mw.T)).astype(z.dtype)


# ------------------------------------------------------------------------------------------------
# Radially averaged power spectral density (spec §1, §5.3)
# ------------------------------------------------------------------------------------------------


class RAPSD(NamedTuple):
    """Radially averaged power spectrum.

    freqs: (num_bins,) bin centres, cycles/pixel. power: (num_bins,) mean power per bin (NaN if the
    bin is empty). dc: () DC power. counts: (num_bins,) int32, coefficients per bin.
    """

    freqs: jnp.ndarray
    power: jnp.ndarray
    dc: jnp.ndarray
    counts: jnp.ndarray


@functools.cache
def _rapsd_bins(h: int, w: int, num_bins: int, transform: str):
    if transform == "dft":
        fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    else:
        fy, fx = np.arange(h) / (2.0 * h), np.arange(w) / (2.0 * w)
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).ravel()
    r_max = r.max()
    idx = np.minimum(np.floor(r / r_max * num_bins).astype(np.int32), num_bins - 1)
    idx[0] = num_bins  # DC (index 0 for both transforms) goes to an extra, dropped segment.
    counts = np.bincount(idx, minlength=num_bins + 1)[:num_bins]
    edges = np.linspace(0.0, r_max, num_bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    for arr in (idx, counts, centres):
        arr.setflags(write=False)
    return idx, counts, centres


def rapsd(images: jnp.ndarray, num_bins: int | None = None, transform: str = "dft") -> RAPSD:
    """RAPSD of a batch (N, H, W, C) -> `RAPSD` (freqs, power, dc, counts).

    Orthonormal 2-D transform per image and channel; power |X|^2 averaged over images and channels,
    then over `num_bins` equal-width radial bins spanning [0, r_max] (r_max: the largest radius, so
    every coefficient is counted). transform='dft': fft2(norm='ortho') with fftfreq frequencies;
    'dct': full-image DCT-II with frequency k -> k / (2N). Units are cycles/pixel. DC is excluded
    from the bins and returned as `dc`. num_bins=None means min(H, W) // 2. Stack noise draws into
    the batch to average over them. White noise of variance s^2 has expected power s^2 in each bin.
    """
    images = _check_float_images(images, "images")
    if transform not in RAPSD_TRANSFORMS:
        raise ValueError(
            f"transform={transform!r} is unknown; valid transforms are {RAPSD_TRANSFORMS}."
        )
    _, h, w, _ = images.shape
    if num_bins is None:
        num_bins = max(min(h, w) // 2, 1)
    num_bins = _check_pos_int(num_bins, "num_bins")
    if h * w < 2:
        raise ValueError(f"images must have more than one pixel, got H={h}, W={w}.")
    idx, counts, centres = _rapsd_bins(int(h), int(w), num_bins, transform)

    x = jnp.asarray(images, _compute_dtype(images.dtype))
    if transform == "dft":
        spec = jnp.fft.fft2(x, axes=(1, 2), norm="ortho")
        power = jnp.mean(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2, axis=(0, 3))
    else:
        mh, mw = dct_matrix(h), dct_matrix(w)
        spec = jnp.einsum("ui,vj,nijc->nuvc", mh, mw, x, precision=_HIGHEST)
        power = jnp.mean(spec**2, axis=(0, 3))
    sums = jax.ops.segment_sum(power.ravel(), jnp.asarray(idx), num_segments=num_bins + 1)
    denom = jnp.asarray(np.maximum(counts, 1), power.dtype)
    mean = jnp.where(jnp.asarray(counts) > 0, sums[:num_bins] / denom, jnp.nan)
    return RAPSD(
        freqs=jnp.asarray(centres, power.dtype),
        power=mean,
        dc=power[0, 0],
        counts=jnp.asarray(counts, jnp.int32),
    )


# ------------------------------------------------------------------------------------------------
# DSM anti-diagonal masking (spec §4.4)
# ------------------------------------------------------------------------------------------------


def antidiagonal_mask(block_size: int, k: int) -> np.ndarray:
    """(B, B) bool, True where a coefficient is kept: u + v < 2(B - 1) - (k - 1).

    The top k of the 2B - 1 anti-diagonals are dropped; k in 0..2B-1, k = 0 keeps everything.
    """
    b = _checks.check_block_size(block_size)
    k = _checks.check_int_range(k, "k", 0, 2 * b - 1)
    s = np.add.outer(np.arange(b), np.arange(b))
    return s < 2 * b - 1 - k


def dsm_lowpass(x: jnp.ndarray, k, block_size: int = 8) -> jnp.ndarray:
    """DSM spectral masking: B x B block DCT (no centring), drop the top k anti-diagonals, inverse.

    x: (N, H, W, C) image or latent, H and W divisible by B; returns the same shape. k: a Python int
    in 0..2B-1 (k = 0 returns x itself), or an integer array of shape () or (N,), which may
    be traced (traced values outside 0..2B-1 are clipped).
    """
    x = _check_float_images(x)
    b = _checks.check_block_size(block_size)
    nb, h, w, _ = x.shape
    _window_hw(h, w, b, "block_size")
    if isinstance(k, int | np.integer) and not isinstance(k, bool):
        keep = antidiagonal_mask(b, int(k))
        if int(k) == 0:
            return x
        keep = jnp.asarray(keep)[None]
    else:
        if not hasattr(k, "dtype") or not np.issubdtype(np.dtype(k.dtype), np.integer):
            raise ValueError(f"k must be an int or an integer array, got {k!r}.")
        if np.ndim(k) > 1 or (np.ndim(k) == 1 and np.shape(k)[0] != nb):
            raise ValueError(f"k must have shape () or ({nb},), got {np.shape(k)}.")
        try:
            kv = np.asarray(k)
        except jax.errors.TracerArrayConversionError:
            kv = None
        if kv is not None and (kv.min() < 0 or kv.max() > 2 * b - 1):
            raise ValueError(f"k={kv.tolist()} is out of range; valid values are 0..{2 * b - 1}.")
        s = jnp.asarray(np.add.outer(np.arange(b), np.arange(b)))
        thresh = 2 * b - 1 - jnp.clip(jnp.asarray(k), 0, 2 * b - 1)
        keep = jnp.broadcast_to(s < thresh.reshape(-1, 1, 1), (nb, b, b))

    dt = _compute_dtype(x.dtype)
    m = dct_matrix(b)
    coeffs = _apply_rows_cols(_to_windows(jnp.asarray(x, dt), b, b), m, m)
    coeffs = coeffs * keep[:, None, :, None, :, None].astype(dt)
    return _from_windows(_apply_rows_cols(coeffs, m.T, m.T)).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# DCT-domain x2 upsampling (spec §6)
# ------------------------------------------------------------------------------------------------


@functools.cache
def _upsample_matrix64(b: int) -> np.ndarray:
    # The 2-D gain 1 / (0.5 cos(k pi/4B) cos(l pi/4B)) factorises into sqrt(2) / cos per axis, so
    # the per-axis chain (B-point DCT, gain, zero-pad to 2B, 2B-point IDCT) is one (2B, B) matrix.
    k = np.arange(b)
    gain = np.sqrt(2.0) / np.cos(k * np.pi / (4 * b))
    a = dct_matrix(2 * b, np.float64)[:b].T @ (gain[:, None] * dct_matrix(b, np.float64))
    a.setflags(write=False)
    return a


def dct_upsample(x: jnp.ndarray, block_size: int = 4) -> jnp.ndarray:
    """DCT-domain x2 upsampling (DCTdiff): (N, h, w, C) -> (N, 2h, 2w, C).

    Per B x B block: D_high(k, l) = D_low(k, l) / (0.5 cos(k pi/4B) cos(l pi/4B)) for k, l < B and
    0 for the rest of the 2B x 2B block, then the 2B x 2B inverse DCT. h, w must be divisible by B.
    """
    x = _check_float_images(x)
    b = _checks.check_block_size(block_size)
    _window_hw(x.shape[1], x.shape[2], b, "block_size")
    dt = _compute_dtype(x.dtype)
    a = _upsample_matrix64(b)
    out = _apply_rows_cols(_to_windows(jnp.asarray(x, dt), b, b), a, a)
    return _from_windows(out).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# ESM: Encoding Spectrum Matching loss (spec §4.3, reference `utils_DCT.py::latent_spectral_reg_dct`)
# ------------------------------------------------------------------------------------------------

# The reference skips the anti-alias blur when the latent is this size (its f8 -> 32 x 32 case).
ESM_NO_BLUR_SIZE = 32
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (jax.image.resize uses -0.5 and antialiasing).


def _canon(dtype):
    """The dtype jax will actually use (float64 -> float32 unless x64 is enabled), so NumPy
    float64 inputs do not warn."""
    return jax.dtypes.canonicalize_dtype(dtype)


def _check_odd_size(size) -> int:
    if (
        isinstance(size, bool)
        or not isinstance(size, int | np.integer)
        or size < 1
        or size % 2 == 0
    ):
        raise ValueError(f"size must be a positive odd int, got {size!r}.")
    return int(size)


def _check_out_hw(out_hw) -> tuple[int, int]:
    if not isinstance(out_hw, tuple | list) or len(out_hw) != 2:
        raise ValueError(f"out_hw must be a pair (height, width), got {out_hw!r}.")
    return _check_pos_int(out_hw[0], "out_hw[0]"), _check_pos_int(out_hw[1], "out_hw[1]")


@functools.cache
def _gaussian_matrix64(n: int, size: int, sigma: float) -> np.ndarray:
    """(n, n) 1-D normalised Gaussian blur with zero padding: y = G x.

    The reference's 2-D kernel exp(-(i^2 + j^2) / 2 sigma^2) / sum factorises exactly into the outer
    product of this 1-D kernel with itself, so blurring rows then columns equals its conv2d.
    """
    half = size // 2
    taps = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(taps**2) / (2.0 * sigma**2))
    g /= g.sum()
    off = np.subtract.outer(np.arange(n), np.arange(n))  # off[i, j] = i - j: input j feeds output i
    m = np.where(np.abs(off) <= half, g[np.clip(half - off, 0, size - 1)], 0.0)
    m.setflags(write=False)
    return m


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """(len(t), 4) cubic-convolution weights for taps floor(src) - 1 .. floor(src) + 2 (A = -0.75)."""
    a = _CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


@functools.cache
def _bicubic_matrix64(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) PyTorch bicubic interpolation, align_corners=False, no antialias.

    src = (dst + 0.5) * n_in / n_out - 0.5 (not clamped), taps at floor(src) - 1 .. + 2 with their
    indices clamped to [0, n_in - 1] (border replicate), as ATen's upsample_bicubic2d does.
    """
    dst = np.arange(n_out, dtype=np.float64)
    src = (dst + 0.5) * (n_in / n_out) - 0.5
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - i0, 0.0, 1.0)
    w = _cubic_weights(t)
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    for k in range(4):
        np.add.at(m, (rows, np.clip(i0 - 1 + k, 0, n_in - 1)), w[:, k])
    m.setflags(write=False)
    return m


def _apply_hw(x: jnp.ndarray, a: np.ndarray, b: np.ndarray) -> jnp.ndarray:
    """(N, H, W, C) -> (N, U, V, C): y = A x B^T per image and channel, in x's (float) dtype."""
    return jnp.einsum(
        "ui,vj,nijc->nuvc", jnp.asarray(a, x.dtype), jnp.asarray(b, x.dtype), x, precision=_HIGHEST
    )


def gaussian_blur(x: jnp.ndarray, size: int = 7, sigma: float = 1.2) -> jnp.ndarray:
    """Depthwise 2-D Gaussian blur with zero padding: (N, H, W, C) -> (N, H, W, C).

    Kernel k(i, j) = exp(-(i^2 + j^2) / (2 sigma^2)) / sum, i, j in -size//2..size//2, applied per
    channel with padding size//2 of zeros (the reference's grouped conv2d), so borders darken.
    """
    x = _check_float_images(x)
    size = _check_odd_size(size)
    sigma = _checks.check_positive(sigma, "sigma")
    _, h, w, _ = x.shape
    xc = jnp.asarray(x, _canon(_compute_dtype(x.dtype)))
    out = _apply_hw(
        xc, _gaussian_matrix64(int(h), size, sigma), _gaussian_matrix64(int(w), size, sigma)
    )
    return out.astype(_canon(x.dtype))


def resize_bicubic(x: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
    """PyTorch `F.interpolate(mode='bicubic', align_corners=False)`: (N, H, W, C) -> (N, h, w, C).

    Cubic convolution with A = -0.75, source index (dst + 0.5) * H / h - 0.5, clamped (replicated)
    border taps and no antialiasing, for down- and up-sizing; not `jax.image.resize` (A = -0.5,
    antialiased). Separable: one interpolation matrix per axis.
    """
    x = _check_float_images(x)
    oh, ow = _check_out_hw(out_hw)
    _, h, w, _ = x.shape
    xc = jnp.asarray(x, _canon(_compute_dtype(x.dtype)))
    out = _apply_hw(xc, _bicubic_matrix64(int(h), oh), _bicubic_matrix64(int(w), ow))
    return out.astype(_canon(x.dtype))


@functools.cache
def _esm_bins64(h: int, w: int, num_bins: int) -> np.ndarray:
    # floor(nb r / r_max) in exact integer arithmetic: the largest k with k^2 R^2 <= nb^2 r^2.
    r2 = np.add.outer(np.arange(h, dtype=np.int64) ** 2, np.arange(w, dtype=np.int64) ** 2)
    big_r2 = (h - 1) ** 2 + (w - 1) ** 2
    if big_r2 == 0:  # 1 x 1: the reference clamps r_max to 1, so everything is bin 0
        out = np.zeros((h, w), np.int32)
        out.setflags(write=False)
        return out
    k = np.floor(num_bins * np.sqrt(r2 / big_r2)).astype(np.int64)
    k = np.where((k + 1) ** 2 * big_r2 <= num_bins**2 * r2, k + 1, k)
    k = np.where(k**2 * big_r2 > num_bins**2 * r2, k - 1, k)
    out = np.minimum(k, num_bins - 1).astype(np.int32)
    out.setflags(write=False)
    return out


def esm_bins(h: int, w: int, num_bins: int = 16) -> np.ndarray:
    """(h, w) int32 ESM radial bin of DCT coefficient (u, v) (spec §4.3 step 3).

    r = sqrt(u^2 + v^2) with DC at (0, 0), r_max = sqrt((h-1)^2 + (w-1)^2),
    bin = min(floor(num_bins r / r_max), num_bins - 1): DC in bin 0, the highest corner in the last.
    """
    h = _check_pos_int(h, "h")
    w = _check_pos_int(w, "w")
    num_bins = _check_pos_int(num_bins, "num_bins")
    return _esm_bins64(h, w, num_bins).copy()


def _esm_power_bins(x: jnp.ndarray, num_bins: int, eps: float) -> jnp.ndarray:
    """x: (N, h, w, C) in a float compute dtype -> (N, num_bins) mean DCT power per radial bin."""
    n, h, w, _ = x.shape
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    spec = _apply_hw(x, dct_matrix(h, np.float64), dct_matrix(w, np.float64))
    power = jnp.maximum(jnp.mean(spec**2, axis=3), eps)  # (N, h, w)
    power = power.at[:, 0, 0].set(0.0)  # DC zeroed but still counted in bin 0's mean
    bins = _esm_bins64(h, w, num_bins).ravel()
    onehot = np.zeros((h * w, num_bins), np.float64)
    onehot[np.arange(h * w), bins] = 1.0
    counts = np.maximum(onehot.sum(0), 1.0)
    sums = jnp.einsum(
        "np,pk->nk", power.reshape(n, h * w), jnp.asarray(onehot, x.dtype), precision=_HIGHEST
    )
    # The reference divides by (counts + eps), counts clamped to >= 1 (an empty bin gives 0).
    return sums / jnp.asarray(counts + eps, x.dtype)


def _check_eps(eps) -> float:
    eps = _check_finite(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}.")
    return eps


def esm_spectrum(x: jnp.ndarray, num_bins: int = 16, *, eps: float = 1e-8) -> jnp.ndarray:
    """ESM radial DCT power spectrum (spec §4.3 steps 2-3): (N, h, w, C) -> (N, num_bins) float32+.

    Per image: subtract each channel's spatial mean, full-size orthonormal 2-D DCT-II per channel,
    power averaged over channels, clamped below at eps, DC set to 0, then the mean power per
    `esm_bins` bin (DC counts in bin 0's mean; an empty bin is 0).
    """
    x = _check_float_images(x)
    num_bins = _check_pos_int(num_bins, "num_bins")
    eps = _check_eps(eps)
    return _esm_power_bins(jnp.asarray(x, _canon(_compute_dtype(x.dtype))), num_bins, eps)


def _check_delta(delta):
    if hasattr(delta, "dtype") and not isinstance(delta, np.ndarray | np.generic):
        return delta  # a jax array, possibly traced
    return _check_finite(delta, "delta")


def esm_distribution(s: jnp.ndarray, delta: float = 1.0, eps: float = 1e-8) -> jnp.ndarray:
    """ESM band distribution (spec §4.3 steps 4-5): (..., num_bins) -> (..., num_bins), sums to ~1.

    s_k <- s_k k^delta for k = 1..num_bins (delta = 0: no flattening), then log(1 + s + eps),
    clamped >= 0, divided by (its sum over bins + eps), as the reference does.
    """
    s = jnp.asarray(s)
    if s.ndim < 1:
        raise ValueError("s must have a trailing bin axis, got a scalar.")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.float32)
    delta = _check_delta(delta)
    eps = _check_eps(eps)
    k = jnp.arange(1, s.shape[-1] + 1, dtype=s.dtype)
    s = s * jnp.power(k, jnp.asarray(delta, s.dtype))
    s = jnp.maximum(jnp.log(s + eps + 1.0), 0.0)
    return s / (jnp.sum(s, axis=-1, keepdims=True) + eps)


def _esm_kl(p: jnp.ndarray, q: jnp.ndarray, eps: float) -> jnp.ndarray:
    return jnp.mean(jnp.sum(p * (jnp.log(p + eps) - jnp.log(q + eps)), axis=-1))


class ESMTerms(NamedTuple):
    """ESM loss terms. loss: () KL(p_x || p_z) with the flattened target (the one to optimise).
    loss_delta0: () the same with delta = 0 (raw image spectrum; the reference logs both).
    p_x: (N, num_bins) flattened target distribution. p_z: (N, num_bins) latent distribution."""

    loss: jnp.ndarray
    loss_delta0: jnp.ndarray
    p_x: jnp.ndarray
    p_z: jnp.ndarray


def esm_terms(
    x: jnp.ndarray, z: jnp.ndarray, delta: float = 1.0, num_bins: int = 16, *, eps: float = 1e-8
) -> ESMTerms:
    """ESM loss and its logging terms (spec §4.3), jit-able and differentiable in x and z.

    x: (N, H, W, Cx) image in [-1, 1]; z: (N, h, w, C) latent (the posterior sample). If h != 32, x
    is blurred (`gaussian_blur`, 7, 1.2, zero padding); it is then always resized to (h, w) with
    `resize_bicubic`. Both spectra go through `esm_spectrum`; the image's is flattened by k^delta and
    the latent's is not (`esm_distribution`). KL(p_x || p_z) = sum_k p_x (log(p_x + eps) -
    log(p_z + eps)), averaged over the batch.
    """
    x = _check_float_images(x, "x")
    z = _check_float_images(z, "z")
    if x.shape[0] != z.shape[0]:
        raise ValueError(
            f"x and z must have the same batch size, got {x.shape[0]} and {z.shape[0]}."
        )
    num_bins = _check_pos_int(num_bins, "num_bins")
    delta = _check_delta(delta)
    eps = _check_eps(eps)
    _, big_h, big_w, _ = x.shape
    _, h, w, _ = z.shape
    ah, aw = _bicubic_matrix64(int(big_h), int(h)), _bicubic_matrix64(int(big_w), int(w))
    if h != ESM_NO_BLUR_SIZE:  # blur then resize, folded into one (h, H) matrix per axis
        ah = ah @ _gaussian_matrix64(int(big_h), 7, 1.2)
        aw = aw @ _gaussian_matrix64(int(big_w), 7, 1.2)
    dt = _canon(jnp.promote_types(jnp.promote_types(x.dtype, z.dtype), jnp.float32))
    x_ds = _apply_hw(jnp.asarray(x, dt), ah, aw)
    s_x = _esm_power_bins(x_ds, num_bins, eps)
    s_z = _esm_power_bins(jnp.asarray(z, dt), num_bins, eps)
    p_x = esm_distribution(s_x, delta, eps)
    p_z = esm_distribution(s_z, 0.0, eps)
    loss0 = _esm_kl(esm_distribution(s_x, 0.0, eps), p_z, eps)
    return ESMTerms(loss=_esm_kl(p_x, p_z, eps), loss_delta0=loss0, p_x=p_x, p_z=p_z)


def esm_loss(
    x: jnp.ndarray, z: jnp.ndarray, delta: float = 1.0, num_bins: int = 16, *, eps: float = 1e-8
) -> jnp.ndarray:
    """ESM loss KL(p_x || p_z), a scalar: `esm_terms(...).loss`. x: (N, H, W, 3) image in [-1, 1],
    z: (N, h, w, C) latent. delta = 1.0 is ESM-AE's flattening (1/f^2 -> 1/f); weight it 0.01."""
    return esm_terms(x, z, delta, num_bins, eps=eps).loss

"""Spectral tools: windowed DCT, Spectral Forcing low-pass, RAPSD, DSM masking, DCT upsampling.

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
    "RAPSD",
    "SF_SCHEDULES",
    "RAPSD_TRANSFORMS",
    "antidiagonal_mask",
    "dct_upsample",
    "dsm_lowpass",
    "radial_frequency",
    "rapsd",
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

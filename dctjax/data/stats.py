"""DCTdiff dataset statistics (spec §4): eta, per-plane entropy vectors and EBFR weights.

Two implementations of the same definitions:

- **Streaming** (any dataset size): `init_dct_stats` -> `update_dct_stats` per batch (pure,
  jit-able, on device) -> `finalize_dct_stats` (host, NumPy). The state holds one fine fixed-grid
  histogram per (plane, natural coefficient); states of different hosts or shards combine with
  `merge_dct_stats`. `dct_stats_from_batches` runs the whole loop.
- **Exact** (small data, test oracle): `exact_dct_stats` pools every coefficient in host memory and
  applies `np.percentile` / `np.histogram` literally.

Definitions (spec §4.2-4.4). For each plane P in {Y, Cb, Cr} (chroma after the 4:2:0 2x2 mean) the
per-block orthonormal DCT-II coefficients of the level-shifted (-128) plane are pooled over all
blocks of all images.

- eta = max(|P1.75|, |P98.25|) of the Y DC coefficient (NumPy linear percentiles), rounded to
  3 decimals.
- entropy of coefficient a: lo = P1.75(a), hi = P98.25(a); keep lo < a < hi; divide by eta (the Y
  eta for every plane); 100 equal bins on [-1, 1], values outside ignored; p = counts / sum;
  H = -sum p log2(p + 1e-9) in bits, rounded to 3 decimals. If nothing is kept (more than 96.5 % of
  the values tie, so lo == hi) H is 0.0 (**Choice**: the reference would produce NaN).
- EBFR weights: each plane's entropy vector in zigzag order, first `low_freqs` entries, scaled to
  mean 1, laid out [w_Y, w_Y, w_Y, w_Y, w_Cb, w_Cr] like the token features.

Streaming approximation and its error bound
-------------------------------------------
Every coefficient lies in [-128B, 128B] (|DC| <= 128B for the level-shifted planes, and the
orthonormal transform preserves the block's L2 norm <= 128B). That range is cut into `num_bins`
equal fine bins of width w = 256B / num_bins (default 8192 bins: w = B/32, i.e. 0.0625 at B = 2,
0.25 at B = 8, finer than the reference's float16 steps 0.125 near 250 and 0.5 near 1000). 0 is a
bin edge, so the sign of tiny values, which decides the "~1 bit" entropy of near-zero frequencies,
is kept exactly. Within a fine bin values are treated as uniformly spread, so the cumulative count
F(x) is piecewise linear through the bin edges.

- Percentile q of n values: numpy's value at fractional rank h = (n - 1) q / 100 is estimated as
  F^-1(h + 1/2) (the j-th of c values in a bin sits at its (j + 1/2)/c point). If r = floor(h)
  and the order statistics a_(r), a_(r+1) fall in fine bins k1 <= k2, both the exact and the
  estimated percentile lie in [edge_k1, edge_(k2+1)], so
  |error| <= (k2 - k1 + 1) w <= 2w + (a_(r+1) - a_(r)); for large data (neighbouring order
  statistics in one bin) |error| < w. The same bound holds for eta, plus 0.0005 from rounding.
- Entropy: the 100-bin counts are F evaluated at the coarse edges clipped to (lo, hi). They differ
  from the exact counts only by the mass of the fine bins cut by one of the 103 cut points (101
  coarse edges, lo, hi), which is split in proportion to overlap instead of by the actual values,
  plus the mass within |error| of lo, hi and of each coarse edge (moved by eta's error). With d the
  resulting total-variation distance, |dH| <= d log2(99) + h2(d) (Fannes-type continuity bound);
  in practice the errors are unbiased and largely cancel, so |dH| is far below that bound
  (measured on natural-like synthetic images: <= 0.01 bit with 512 blocks per coefficient,
  <= 0.002 bit with 4096 or more).
- Both bounds assume no atom (one value shared by a sizeable fraction of the blocks) sits exactly at
  lo or hi. The exact definition then drops the whole atom (strict inequalities); the histogram
  drops only the tail mass. E.g. if over 1.75 % of the blocks are pure black, lo = -128B exactly
  and the streaming DC entropy keeps most of those blocks. Natural photographs at the reference eta
  values (about 0.95 * 128B, away from saturation) are not in this regime.

Counts are int32 on device: one fine bin overflows after 2^31 - 1 values. Beyond ~10^9 blocks per
plane, pull states to the host periodically and merge them as int64 NumPy arrays
(`merge_dct_stats` keeps the wider dtype).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks
from dctjax.codec.color import chroma_downsample, rgb_to_ycbcr
from dctjax.codec.dct import block_dct, blockify, zigzag_order

PERCENTILES = (1.75, 98.25)
ENTROPY_BINS = 100
ENTROPY_EPS = 1e-9
DEFAULT_NUM_BINS = 8192
_MAX_LOG2_BINS = 20


@dataclasses.dataclass(frozen=True, eq=False)
class DCTStats:
    """Dataset statistics of one block size.

    eta: float, in DCT-coefficient units. entropy_y / entropy_cb / entropy_cr: (B*B,) float64 bits,
    natural row-major order, rounded to 3 decimals (spec names: `Y_std`, `Cb_std`, `Cr_std`).
    num_blocks_y / num_blocks_chroma: blocks pooled per Y / per chroma plane.
    """

    block_size: int
    eta: float
    entropy_y: np.ndarray
    entropy_cb: np.ndarray
    entropy_cr: np.ndarray
    num_blocks_y: int
    num_blocks_chroma: int

    def ebfr_weights(self, low_freqs: int) -> np.ndarray:
        """(6 * low_freqs,) float32 EBFR weights; see `ebfr_weights`."""
        return ebfr_weights(
            self.entropy_y, self.entropy_cb, self.entropy_cr, self.block_size, low_freqs
        )


class DCTStatsState(NamedTuple):
    """Streaming state (a pytree). counts: (3, B*B, num_bins) int32 fine-histogram counts for the
    planes (Y, Cb, Cr) and natural coefficient positions u*B + v; bin k covers
    [-128B + k w, -128B + (k+1) w) with w = 256B / num_bins."""

    counts: jax.Array


# ----------------------------------------------------------------------------------------------
# Validation


def _check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer):
        raise ValueError(
            f"num_bins must be a power of two in 2..2**{_MAX_LOG2_BINS}, got {num_bins!r}."
        )
    n = int(num_bins)
    if n < 2 or n > 2**_MAX_LOG2_BINS or n & (n - 1):
        raise ValueError(
            f"num_bins={num_bins} is not supported; valid values are powers of two in "
            f"2..2**{_MAX_LOG2_BINS} (a power of two keeps 0 a bin edge and binning exact)."
        )
    return n


def _check_uint8_images(images, block_size: int) -> None:
    _checks.check_images(images, "images", channels=3, dtypes=("uint8",))
    _, h, w, _ = images.shape
    _checks.check_divisible(h, w, 2 * block_size, f"2 * block_size = {2 * block_size}")


def _state_geometry(state: DCTStatsState) -> tuple[int, int]:
    """(block_size, num_bins) of a state, validated."""
    counts = getattr(state, "counts", None)
    if counts is None or np.ndim(counts) != 3 or counts.shape[0] != 3:
        shape = None if counts is None else np.shape(counts)
        raise ValueError(
            "state must be a DCTStatsState with counts of shape (3, B*B, num_bins), got "
            f"{type(state).__name__} with counts shape {shape}."
        )
    b = int(round(np.sqrt(counts.shape[1])))
    if b * b != counts.shape[1] or b not in _checks.BLOCK_SIZES:
        raise ValueError(
            f"state.counts has {counts.shape[1]} coefficients per plane; valid values are B*B "
            f"for B in {_checks.BLOCK_SIZES}."
        )
    return b, _check_total_bins(b, _check_num_bins(int(counts.shape[2])))


def _check_total_bins(block_size: int, num_bins: int) -> int:
    # Flat int32 scatter indices address all 3 * B^2 * num_bins bins.
    limit = np.iinfo(np.int32).max // (3 * block_size * block_size)
    if num_bins > limit:
        raise ValueError(
            f"num_bins={num_bins} is too large for block_size={block_size}; valid values are "
            f"powers of two up to {2 ** int(np.log2(limit))}."
        )
    return num_bins


def _check_entropy(entropy, name: str, block_size: int) -> np.ndarray:
    e = np.asarray(entropy, dtype=np.float64)
    if e.shape != (block_size * block_size,):
        raise ValueError(
            f"{name} must have shape ({block_size * block_size},) (B*B values in natural order for "
            f"block_size={block_size}), got shape {e.shape}."
        )
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError(f"{name} must hold finite entropies >= 0 bits, got {e.tolist()}.")
    return e


# ----------------------------------------------------------------------------------------------
# Streaming accumulator


def init_dct_stats(block_size: int, num_bins: int = DEFAULT_NUM_BINS) -> DCTStatsState:
    """Empty state for block size B: counts (3, B*B, num_bins) int32 zeros.

    num_bins: fine bins per coefficient over [-128B, 128B], a power of two. Memory is
    12 * B^2 * num_bins bytes (default: 0.4 MB at B=2, 6 MB at B=8, 100 MB at B=32).
    """
    b = _checks.check_block_size(block_size)
    n = _check_total_bins(b, _check_num_bins(num_bins))
    return DCTStatsState(jnp.zeros((3, b * b, n), jnp.int32))


def _plane_coefficients(images: jax.Array, block_size: int) -> tuple[jax.Array, jax.Array]:
    """uint8 (N, H, W, 3) -> float32 coefficients, Y (N*H*W/B^2, B*B) and chroma
    (2, N*H*W/(4B^2), B*B) for (Cb, Cr)."""
    b = block_size
    ycc = rgb_to_ycbcr(images, level_shift=True)
    y = block_dct(blockify(ycc[..., :1], b))  # (N, H/B, W/B, 1, B, B)
    c = block_dct(blockify(chroma_downsample(ycc[..., 1:]), b))  # (N, H/2B, W/2B, 2, B, B)
    y = y.reshape(-1, b * b)
    c = jnp.moveaxis(c, 3, 0).reshape(2, -1, b * b)
    return y, c


def update_dct_stats(state: DCTStatsState, images: jax.Array) -> DCTStatsState:
    """Adds a batch of uint8 images (N, H, W, 3), H and W divisible by 2B, to the state.

    Pure and jit-able (e.g. `jax.jit(update_dct_stats, donate_argnums=0)`); B and num_bins come
    from the state's static shape.
    """
    b, num_bins = _state_geometry(state)
    _check_uint8_images(images, b)
    # rgb_to_ycbcr uses a plain matmul; keep it float32-exact on GPU/TPU (no TF32/bf16 passes).
    with jax.default_matmul_precision("highest"):
        y, c = _plane_coefficients(images, b)
    # scale = num_bins / (256 B) is a power of two, so x * scale is exact and floor() keeps the
    # sign of tiny values: -1e-7 lands left of 0, unlike floor(x * scale + num_bins / 2) in float32.
    scale = num_bins / (256.0 * b)

    def bin_index(x):
        k = jnp.floor(x * scale).astype(jnp.int32) + num_bins // 2
        return jnp.clip(k, 0, num_bins - 1)

    coef = jnp.arange(b * b, dtype=jnp.int32)
    idx_y = coef * num_bins + bin_index(y)
    idx_c = ((1 + jnp.arange(2, dtype=jnp.int32))[:, None, None] * (b * b) + coef) * num_bins
    idx_c = idx_c + bin_index(c)
    idx = jnp.concatenate([idx_y.reshape(-1), idx_c.reshape(-1)])
    counts = state.counts.reshape(-1).at[idx].add(1, mode="promise_in_bounds")
    return DCTStatsState(counts.reshape(state.counts.shape))


_update_donated = jax.jit(update_dct_stats, donate_argnums=0)


def merge_dct_stats(a: DCTStatsState, b: DCTStatsState) -> DCTStatsState:
    """Combines two states of the same block size and num_bins (e.g. from different hosts)."""
    ga, gb = _state_geometry(a), _state_geometry(b)
    if ga != gb:
        raise ValueError(
            f"cannot merge states with (block_size, num_bins) = {ga} and {gb}; they must be equal."
        )
    if isinstance(a.counts, np.ndarray) or isinstance(b.counts, np.ndarray):
        dtype = np.result_type(np.asarray(a.counts).dtype, np.asarray(b.counts).dtype)
        return DCTStatsState(np.asarray(a.counts, dtype) + np.asarray(b.counts, dtype))
    return DCTStatsState(a.counts + b.counts)


def _fine_edges(block_size: int, num_bins: int) -> np.ndarray:
    r = 128.0 * block_size
    return np.linspace(-r, r, num_bins + 1)


def _hist_percentiles(cum: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """cum: (R, nb + 1) cumulative counts at the fine edges, cum[:, -1] = n > 0 -> (R,) estimates
    of numpy's linear percentile q."""
    n = cum[:, -1].astype(np.float64)
    t = (n - 1.0) * (q / 100.0) + 0.5
    k = np.sum(cum < t[:, None], axis=1)  # first edge index with cum >= t; 1 <= k <= nb
    rows = np.arange(cum.shape[0])
    c0, c1 = cum[rows, k - 1], cum[rows, k]
    w = edges[1] - edges[0]
    return edges[k - 1] + (t - c0) / (c1 - c0) * w


def _hist_cdf(cum: np.ndarray, edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear cumulative count at x: cum (R, nb + 1), x (R, M) -> (R, M)."""
    nb = cum.shape[1] - 1
    w = edges[1] - edges[0]
    k = np.clip(np.floor((x - edges[0]) / w).astype(np.int64), 0, nb - 1)
    c0 = np.take_along_axis(cum, k, axis=1)
    c1 = np.take_along_axis(cum, k + 1, axis=1)
    frac = np.clip((x - edges[k]) / w, 0.0, 1.0)
    return c0 + frac * (c1 - c0)


def _entropy_bits(counts: np.ndarray) -> np.ndarray:
    """(..., 100) histogram counts -> (...,) entropy in bits, rounded to 3 decimals; 0 if empty."""
    total = counts.sum(axis=-1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros(counts.shape, np.float64), where=total > 0)
    h = -np.sum(p * np.log2(p + ENTROPY_EPS), axis=-1)
    return np.round(h, 3) + 0.0  # + 0.0 turns -0.0 (p = 1) into 0.0


def finalize_dct_stats(state: DCTStatsState, eta: float | None = None) -> DCTStats:
    """Host-side: state -> DCTStats (see the module docstring for the approximation).

    eta: if given (e.g. a reference config's value), the entropies use it instead of the eta
    estimated from the state; `DCTStats.eta` is then that value.
    """
    b, num_bins = _state_geometry(state)
    counts = np.asarray(jax.device_get(state.counts)).astype(np.int64)
    num_y, num_c = int(counts[0, 0].sum()), int(counts[1, 0].sum())
    if num_y == 0 or num_c == 0:
        raise ValueError("the state holds no blocks; call update_dct_stats with images first.")
    rows = counts.reshape(3 * b * b, num_bins)
    cum = np.concatenate([np.zeros((rows.shape[0], 1), np.int64), np.cumsum(rows, axis=1)], axis=1)
    edges = _fine_edges(b, num_bins)
    lo = _hist_percentiles(cum, edges, PERCENTILES[0])
    hi = _hist_percentiles(cum, edges, PERCENTILES[1])
    if eta is None:
        eta = float(np.round(max(abs(lo[0]), abs(hi[0])), 3))
    else:
        eta = _checks.check_positive(eta, "eta")
    coarse_edges = eta * np.linspace(-1.0, 1.0, ENTROPY_BINS + 1)
    # Only the part of each fine bin strictly inside (lo, hi) counts.
    x = np.clip(coarse_edges[None, :], lo[:, None], hi[:, None])
    coarse = np.diff(_hist_cdf(cum, edges, x), axis=1)
    entropy = _entropy_bits(coarse).reshape(3, b * b)
    return DCTStats(
        block_size=b,
        eta=float(eta),
        entropy_y=entropy[0],
        entropy_cb=entropy[1],
        entropy_cr=entropy[2],
        num_blocks_y=num_y,
        num_blocks_chroma=num_c,
    )


def dct_stats_from_batches(
    batches: Iterable,
    block_size: int,
    num_bins: int = DEFAULT_NUM_BINS,
    eta: float | None = None,
) -> DCTStats:
    """Streams uint8 batches (N, H, W, 3) through a jitted `update_dct_stats` and finalizes.

    Batches of one shape compile once; a ragged last batch compiles once more.
    """
    state = init_dct_stats(block_size, num_bins)
    for images in batches:
        state = _update_donated(state, images)
    return finalize_dct_stats(state, eta)


# ----------------------------------------------------------------------------------------------
# Exact reference (all coefficients in host memory)


def _exact_plane_coefficients(images: np.ndarray, block_size: int) -> list[np.ndarray]:
    """uint8 (N, H, W, 3) -> [Y, Cb, Cr] float64 coefficient arrays (num_blocks, B*B), written from
    the spec's formulas (JFIF, 2x2 mean, -128, scipy orthonormal DCT-II)."""
    import scipy.fft

    b = block_size
    rgb = images.astype(np.float64)
    r, g, bl = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl - 128.0
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl
    n, h, w = y.shape

    def mean2x2(p):
        return p.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))

    def coefficients(p):
        ph, pw = p.shape[1:]
        blocks = p.reshape(n, ph // b, b, pw // b, b).transpose(0, 1, 3, 2, 4)
        return scipy.fft.dctn(blocks, type=2, axes=(-2, -1), norm="ortho").reshape(-1, b * b)

    return [coefficients(y), coefficients(mean2x2(cb)), coefficients(mean2x2(cr))]


def exact_dct_stats(images, block_size: int, eta: float | None = None) -> DCTStats:
    """Spec §4.2-4.3 literally, in float64 NumPy: uint8 (N, H, W, 3) -> DCTStats.

    Holds all 1.5 * N * H * W coefficients in memory (12 bytes per pixel); for small data and as
    the oracle of the streaming path. `eta` as in `finalize_dct_stats`.
    """
    b = _checks.check_block_size(block_size)
    images = np.asarray(images)
    _check_uint8_images(images, b)
    if images.shape[0] == 0:
        raise ValueError("images holds no images (batch size 0).")
    planes = _exact_plane_coefficients(images, b)
    if eta is None:
        lo, hi = np.percentile(planes[0][:, 0], PERCENTILES)
        eta = float(np.round(max(abs(lo), abs(hi)), 3))
        if eta == 0.0:
            raise ValueError(
                "eta came out 0 (the Y DC coefficient is ~0 in over 96.5 % of the blocks, e.g. "
                "all-grey images); pass eta explicitly."
            )
    else:
        eta = _checks.check_positive(eta, "eta")
    entropies = []
    for coeffs in planes:
        counts = []
        for a in coeffs.T:
            lo, hi = np.percentile(a, PERCENTILES)
            kept = a[(a > lo) & (a < hi)] / eta
            counts.append(np.histogram(kept, bins=ENTROPY_BINS, range=(-1.0, 1.0))[0])
        entropies.append(_entropy_bits(np.asarray(counts, np.float64)))
    return DCTStats(
        block_size=b,
        eta=float(eta),
        entropy_y=entropies[0],
        entropy_cb=entropies[1],
        entropy_cr=entropies[2],
        num_blocks_y=planes[0].shape[0],
        num_blocks_chroma=planes[1].shape[0],
    )


# ----------------------------------------------------------------------------------------------
# EBFR weights


def ebfr_weights(entropy_y, entropy_cb, entropy_cr, block_size: int, low_freqs: int) -> np.ndarray:
    """(6 * low_freqs,) float32 EBFR loss weights [w_Y, w_Y, w_Y, w_Y, w_Cb, w_Cr] (spec §4.4).

    entropy_*: (B*B,) entropies in bits, natural row-major order. Each plane's vector is put in
    zigzag order, truncated to the first low_freqs entries and divided by their mean.
    """
    b = _checks.check_block_size(block_size)
    low_freqs = _checks.check_int_range(low_freqs, "low_freqs", 1, b * b)
    zigzag = zigzag_order(b)[:low_freqs]
    w = {}
    for name, e in (
        ("entropy_y", entropy_y),
        ("entropy_cb", entropy_cb),
        ("entropy_cr", entropy_cr),
    ):
        kept = _check_entropy(e, name, b)[zigzag]
        if kept.mean() <= 0:
            raise ValueError(
                f"{name} has zero mean over its first low_freqs={low_freqs} zigzag entries; "
                "EBFR weights need a positive mean."
            )
        w[name] = kept / kept.mean()
    wy = w["entropy_y"]
    return np.concatenate([wy, wy, wy, wy, w["entropy_cb"], w["entropy_cr"]]).astype(np.float32)

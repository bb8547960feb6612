"""Full-range JFIF RGB <-> YCbCr and 4:2:0 chroma resampling. Pure jnp; batch-first NHWC."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks

# Rows: Y, Cb, Cr. JFIF (ITU-R BT.601 full range) constants.
RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
YCBCR_OFFSET = np.array([0.0, 128.0, 128.0])
# Rows: R, G, B as functions of (Y, Cb - 128, Cr - 128).
YCBCR_TO_RGB = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ],
    dtype=np.float64,
)


def _apply_3x3(m: np.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    # Elementwise multiply-adds rather than a K=3 matmul: exact float32 on every backend (no
    # reduced-precision matmul passes on TPU/GPU) and fused by XLA into neighbouring ops.
    xs = [x[..., c] for c in range(3)]
    return jnp.stack([sum(float(m[r, c]) * xs[c] for c in range(3)) for r in range(3)], axis=-1)


def rgb_to_ycbcr(rgb: jnp.ndarray, level_shift: bool = False) -> jnp.ndarray:
    """(..., 3) RGB in 0..255 (any dtype) -> (..., 3) float32 YCbCr, no rounding or clipping.

    With `level_shift=True` all three planes are returned minus 128 (the zero-centred planes the DCT
    sees); the Cb/Cr rows sum to 0, so that equals the matrix applied to RGB - 128.
    """
    _checks.check_dtype(rgb, ("floating", "integer"), "rgb")
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have 3 channels in the last axis, got shape {rgb.shape}.")
    x = jnp.asarray(rgb, jnp.float32)
    if level_shift:
        return _apply_3x3(RGB_TO_YCBCR, x - 128.0)
    return _apply_3x3(RGB_TO_YCBCR, x) + jnp.asarray(YCBCR_OFFSET, jnp.float32)


def ycbcr_to_rgb(ycbcr: jnp.ndarray, level_shift: bool = False) -> jnp.ndarray:
    """(..., 3) float YCbCr -> (..., 3) float32 RGB in 0..255 units, unclipped.

    `level_shift=True` takes the zero-centred planes (all three minus 128), the inverse of
    `rgb_to_ycbcr(..., level_shift=True)`.
    """
    _checks.check_dtype(ycbcr, ("floating", "integer"), "ycbcr")
    if ycbcr.shape[-1] != 3:
        raise ValueError(f"ycbcr must have 3 channels in the last axis, got shape {ycbcr.shape}.")
    x = jnp.asarray(ycbcr, jnp.float32)
    if level_shift:
        return _apply_3x3(YCBCR_TO_RGB, x) + 128.0
    return _apply_3x3(YCBCR_TO_RGB, x - jnp.asarray(YCBCR_OFFSET, jnp.float32))


def chroma_downsample(x: jnp.ndarray) -> jnp.ndarray:
    """4:2:0 chroma: (N, H, W, C) -> (N, H/2, W/2, C) by 2x2 mean pooling.

    Equal to OpenCV `resize(INTER_LINEAR)` to exactly half size (it samples each 2x2 group's centre).
    """
    _checks.check_rank(x, 4, "x", "batch, height, width, channels")
    _checks.check_dtype(x, ("floating",), "x")
    n, h, w, c = x.shape
    _checks.check_divisible(h, w, 2, "4:2:0 chroma downsampling")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample_axis(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    # Output 2i reads input coordinate i - 1/4, output 2i+1 reads i + 1/4 (half-pixel centres),
    # with the neighbour clamped at the border (edge replication).
    n = x.shape[axis]
    idx = jnp.arange(n)
    prev = jnp.take(x, jnp.maximum(idx - 1, 0), axis=axis)
    nxt = jnp.take(x, jnp.minimum(idx + 1, n - 1), axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def chroma_upsample(x: jnp.ndarray) -> jnp.ndarray:
    """(N, h, w, C) -> (N, 2h, 2w, C): bilinear x2 with half-pixel centres and edge replication.

    Equal to OpenCV `resize(INTER_LINEAR)` at exactly x2 (the reference's chroma upsampling).
    """
    _checks.check_rank(x, 4, "x", "batch, height, width, channels")
    _checks.check_dtype(x, ("floating",), "x")
    return _upsample_axis(_upsample_axis(x, 1), 2)

"""IJG quality-scaled quantization tables (luma and chroma) for any block size, quantize / dequantize."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks

# JPEG Annex K base tables, natural row-major order (rows = vertical frequency).
BASE_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
BASE_CHROMA = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.int64,
)
_BASES = {"luma": BASE_LUMA, "chroma": BASE_CHROMA}


def quality_scale(quality: int) -> int:
    """libjpeg's `jpeg_quality_scaling` in integers: 5000 // q below 50, else 200 - 2q."""
    q = _checks.check_int_range(quality, "quality", 1, 100)
    return 5000 // q if q < 50 else 200 - 2 * q


@functools.cache
def _table(quality: int, block_size: int, kind: str) -> np.ndarray:
    base = _BASES[kind]
    idx = (8 * np.arange(block_size)) // block_size  # nearest-neighbour resize of the 8x8 base
    base = base[idx][:, idx]
    t = (base * quality_scale(quality) + 50) // 100
    t = np.clip(t, 1, 255).astype(np.int32)  # Q >= 1 (q = 100 gives 0), Q <= 255 (baseline JPEG)
    t.setflags(write=False)
    return t


def quant_table(quality: int, block_size: int = 8, kind: str = "luma") -> np.ndarray:
    """(B, B) int32 quantization table in natural order, as libjpeg/Pillow write it for B = 8.

    Args:
      quality: IJG quality 1..100.
      block_size: B in {2, 4, 8, 16, 32}; the 8x8 base table is resized by nearest neighbour,
        T_B[r, c] = T_8[8r // B, 8c // B], before quality scaling.
      kind: 'luma' (used for Y) or 'chroma' (used for Cb and Cr).
    """
    q = _checks.check_int_range(quality, "quality", 1, 100)
    b = _checks.check_block_size(block_size)
    if kind not in _BASES:
        raise ValueError(f"kind={kind!r} is not a quantization table; use 'luma' or 'chroma'.")
    return _table(q, b, kind).copy()


def round_half_away(x: jnp.ndarray) -> jnp.ndarray:
    """Round to nearest, ties away from zero (libjpeg's convention; jnp.round ties to even)."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def quantize(coeffs: jnp.ndarray, table) -> jnp.ndarray:
    """(..., B, B) float DCT coefficients / (B, B) table -> int32, rounded half away from zero."""
    table = jnp.asarray(table)
    if coeffs.shape[-2:] != table.shape:
        raise ValueError(
            f"coeffs end in {coeffs.shape[-2:]} but the table is {table.shape}; use the table of "
            "the same block size."
        )
    _checks.check_dtype(coeffs, ("floating",), "coeffs")
    return round_half_away(coeffs / table.astype(coeffs.dtype)).astype(jnp.int32)


def dequantize(values: jnp.ndarray, table, dtype=jnp.float32) -> jnp.ndarray:
    """(..., B, B) integer values * (B, B) table -> float coefficients."""
    table = jnp.asarray(table)
    if values.shape[-2:] != table.shape:
        raise ValueError(
            f"values end in {values.shape[-2:]} but the table is {table.shape}; use the table of "
            "the same block size."
        )
    return values.astype(dtype) * table.astype(dtype)

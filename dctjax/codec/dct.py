"""Orthonormal DCT-II in matrix form, blockify / unblockify, block DCT / IDCT and zigzag order.

Coefficients are stored [row frequency u, column frequency v]; the natural position is u*B + v.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks


@functools.cache
def _dct_matrix64(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    m.setflags(write=False)
    return m


def dct_matrix(n: int, dtype=np.float32) -> np.ndarray:
    """(n, n) orthonormal DCT-II matrix: M[k, i] = s_k cos(pi (2i+1) k / 2n), s_0 = sqrt(1/n),
    s_k = sqrt(2/n). Forward X = M x M^T, inverse x = M^T X M. Any n >= 1 (block sizes and full images)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    return _dct_matrix64(int(n)).astype(dtype)


def blockify(x: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """(N, H, W, C) -> (N, H/B, W/B, C, B, B). Block (p, q) covers rows pB..pB+B-1, cols qB..qB+B-1."""
    b = _checks.check_block_size(block_size)
    _checks.check_rank(x, 4, "x", "batch, height, width, channels")
    n, h, w, c = x.shape
    _checks.check_divisible(h, w, b, f"block_size={b}")
    return x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 5, 2, 4)


def unblockify(blocks: jnp.ndarray) -> jnp.ndarray:
    """(N, H/B, W/B, C, B, B) -> (N, H, W, C); the inverse of `blockify`."""
    _checks.check_rank(blocks, 6, "blocks", "batch, block rows, block cols, channels, B, B")
    n, hb, wb, c, b, b2 = blocks.shape
    if b != b2:
        raise ValueError(f"blocks must be square in the last two axes, got shape {blocks.shape}.")
    return blocks.transpose(0, 1, 4, 2, 5, 3).reshape(n, hb * b, wb * b, c)


def _check_square_last2(x, name: str) -> int:
    if np.ndim(x) < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must end in two equal block axes (..., B, B), got {np.shape(x)}.")
    return x.shape[-1]


def block_dct(blocks: jnp.ndarray, precision=jax.lax.Precision.HIGHEST) -> jnp.ndarray:
    """Orthonormal 2-D DCT-II over the last two axes (..., B, B): X = M x M^T."""
    b = _check_square_last2(blocks, "blocks")
    _checks.check_dtype(blocks, ("floating",), "blocks")
    m = jnp.asarray(dct_matrix(b), blocks.dtype)
    return jnp.einsum("ui,...ij,vj->...uv", m, blocks, m, precision=precision)


def block_idct(coeffs: jnp.ndarray, precision=jax.lax.Precision.HIGHEST) -> jnp.ndarray:
    """Inverse of `block_dct` over the last two axes (..., B, B): x = M^T X M."""
    b = _check_square_last2(coeffs, "coeffs")
    _checks.check_dtype(coeffs, ("floating",), "coeffs")
    m = jnp.asarray(dct_matrix(b), coeffs.dtype)
    return jnp.einsum("ui,...uv,vj->...ij", m, coeffs, m, precision=precision)


@functools.cache
def _zigzag(b: int) -> np.ndarray:
    order = []
    for s in range(2 * b - 1):
        us = range(max(0, s - b + 1), min(s, b - 1) + 1)
        # Even anti-diagonals run bottom-left to top-right (decreasing u), odd ones the other way.
        for u in reversed(us) if s % 2 == 0 else us:
            order.append(u * b + (s - u))
    z = np.asarray(order, dtype=np.int32)
    z.setflags(write=False)
    return z


def zigzag_order(block_size: int) -> np.ndarray:
    """(B*B,) natural positions u*B + v listed in JPEG zigzag order (rank k -> natural position)."""
    return _zigzag(_checks.check_block_size(block_size)).copy()


def inverse_zigzag_order(block_size: int) -> np.ndarray:
    """(B*B,) zigzag rank of each natural position (natural position -> rank k)."""
    z = _zigzag(_checks.check_block_size(block_size))
    inv = np.empty_like(z)
    inv[z] = np.arange(z.size, dtype=z.dtype)
    return inv


def to_zigzag(coeffs: jnp.ndarray) -> jnp.ndarray:
    """(..., B, B) natural-order coefficients -> (..., B*B) in zigzag order."""
    b = _check_square_last2(coeffs, "coeffs")
    flat = coeffs.reshape(*coeffs.shape[:-2], b * b)
    return jnp.take(flat, jnp.asarray(zigzag_order(b)), axis=-1)


def from_zigzag(vectors: jnp.ndarray, block_size: int) -> jnp.ndarray:
    """(..., k) zigzag-ordered coefficients, k <= B*B (missing high frequencies are zero) -> (..., B, B)."""
    b = _checks.check_block_size(block_size)
    k = vectors.shape[-1]
    if not 1 <= k <= b * b:
        raise ValueError(f"the last axis holds {k} coefficients; valid is 1..{b * b} for B={b}.")
    if k < b * b:
        vectors = jnp.pad(vectors, [(0, 0)] * (vectors.ndim - 1) + [(0, b * b - k)])
    nat = jnp.take(vectors, jnp.asarray(inverse_zigzag_order(b)), axis=-1)
    return nat.reshape(*vectors.shape[:-1], b, b)

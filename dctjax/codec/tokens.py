"""DCTdiff token layout: uint8 images <-> (N, tokens, 6*low_freqs) block-DCT tokens.

One token per 2B x 2B pixel region (i, j), raster order n = i*(W/2B) + j. Its six B x B blocks
are Y(2i, 2j), Y(2i, 2j+1), Y(2i+1, 2j), Y(2i+1, 2j+1), Cb(i, j), Cr(i, j) (chroma at half
resolution, 4:2:0). Features are block-major: f = b*low_freqs + k with k the zigzag rank, and every
coefficient is divided by the dataset scalar eta.

The kept coefficients of a block are a fixed linear map of its B*B pixels: the rows of kron(M, M)
(M the orthonormal DCT-II matrix) picked by the zigzag order. With the colour transform and the 2x2
chroma mean also linear, a whole token is an affine map of its 2B x 2B x 3 pixels. The encoder
uses that directly for B = 2 (one matmul over the patches); for larger B, where that matrix grows
as B^4, it rearranges uint8 patches into blocks, converts colour elementwise and multiplies each
block by the (B*B, low_freqs) analysis matrix. The decoder works in the same block layout and
rearranges the final uint8 pixels, the cheapest place to pay for the transpose.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks
from dctjax.codec.color import (
    RGB_TO_YCBCR,
    YCBCR_TO_RGB,
    chroma_downsample,
    chroma_upsample,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from dctjax.codec.dct import dct_matrix, zigzag_order

DECODE_CLIP = 2.0  # The reference clips tokens to +-2 before decoding (its comment says +-1).
_ROUNDINGS = ("nearest", "truncate")
_FUSED_MAX_BLOCK = 2  # largest B encoded with the one-matmul-per-token path
_HI = jax.lax.Precision.HIGHEST


def _check_params(block_size: int, low_freqs: int, eta: float) -> tuple[int, int, float]:
    b = _checks.check_block_size(block_size)
    lf = _checks.check_int_range(low_freqs, "low_freqs", 1, b * b)
    return b, lf, _checks.check_positive(eta, "eta")


@functools.cache
def _analysis_matrix(block_size: int, low_freqs: int) -> np.ndarray:
    """(B*B, low_freqs): flattened pixels (row-major) -> first low_freqs zigzag coefficients."""
    m = dct_matrix(block_size, np.float64)
    kron = np.kron(m, m)  # kron[u*B + v, i*B + j] = M[u, i] M[v, j]
    a = kron[zigzag_order(block_size)[:low_freqs]].T
    a.setflags(write=False)
    return a


@functools.cache
def _token_matrix(block_size: int, low_freqs: int) -> np.ndarray:
    """(2B*2B*3, 6*low_freqs): a level-shifted RGB patch (row, col, channel) -> its token."""
    b, lf = block_size, low_freqs
    a = _analysis_matrix(b, lf).reshape(b, b, lf)
    w = np.zeros((2 * b, 2 * b, 3, 6 * lf))
    for k, (r, q) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        w[r * b : (r + 1) * b, q * b : (q + 1) * b, :, k * lf : (k + 1) * lf] = np.einsum(
            "ijl,c->ijcl", a, RGB_TO_YCBCR[0]
        )
    # Chroma sample (i, j) of the 4:2:0 block is the mean of pixels (2i + di, 2j + dj).
    a_up = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1) / 4.0
    for p in (1, 2):
        w[..., (3 + p) * lf : (4 + p) * lf] = np.einsum("ijl,c->ijcl", a_up, RGB_TO_YCBCR[p])
    w = w.reshape(12 * b * b, 6 * lf)
    w.setflags(write=False)
    return w


def _encode_fused(images: jnp.ndarray, b: int, lf: int, eta: float) -> jnp.ndarray:
    n, h, w, _ = images.shape
    gh, gw = h // (2 * b), w // (2 * b)
    patches = images.reshape(n, gh, 2 * b, gw, 2 * b, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, gh * gw, 12 * b * b).astype(jnp.float32) - 128.0
    return jnp.matmul(patches, jnp.asarray(_token_matrix(b, lf) / eta, jnp.float32), precision=_HI)


def _encode_blocks(images: jnp.ndarray, b: int, lf: int, eta: float) -> jnp.ndarray:
    n, h, w, _ = images.shape
    gh, gw = h // (2 * b), w // (2 * b)
    t = gh * gw
    m = RGB_TO_YCBCR
    # (n, i, r, a, j, q, c, ch) -> (n, i, j, r, q, a, c, ch): the region of token (i, j), rearranged
    # while still uint8. Float32 copies of the full image are the cost here, so the colour transform
    # reads the uint8 channels directly and chroma is pooled as exact integer 2x2 sums.
    x = images.reshape(n, gh, 2, b, gw, 2, b, 3).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    ch = [x[..., k].astype(jnp.float32) for k in range(3)]
    y = ch[0] * m[0, 0] + ch[1] * m[0, 1] + ch[2] * m[0, 2] - 128.0
    # 4:2:0: region row r*B + a holds chroma row r*B/2 + a//2.
    s = x.reshape(n, t, 2, 2, b // 2, 2, b // 2, 2, 3).astype(jnp.int32).sum(axis=(5, 7))
    s = s.transpose(0, 1, 2, 4, 3, 5, 6).reshape(n, t, b * b, 3).astype(jnp.float32)
    cb = (s[..., 0] * m[1, 0] + s[..., 1] * m[1, 1] + s[..., 2] * m[1, 2]) * 0.25
    cr = (s[..., 0] * m[2, 0] + s[..., 1] * m[2, 1] + s[..., 2] * m[2, 2]) * 0.25
    blocks = jnp.concatenate([y.reshape(n, t, 4, b * b), cb[:, :, None], cr[:, :, None]], axis=2)
    a = jnp.asarray(_analysis_matrix(b, lf) / eta, jnp.float32)
    return jnp.matmul(blocks, a, precision=_HI).reshape(n, t, 6 * lf)


def token_grid(height: int, width: int, block_size: int) -> tuple[int, int]:
    """(H/2B, W/2B): the token grid of an H x W image."""
    b = _checks.check_block_size(block_size)
    _checks.check_divisible(height, width, 2 * b, f"2*block_size for block_size={b}")
    return height // (2 * b), width // (2 * b)


def token_dim(low_freqs: int) -> int:
    """Features per token: 6 blocks (4Y + Cb + Cr) of low_freqs coefficients."""
    return 6 * low_freqs


def images_to_planes(images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """uint8 (N, H, W, 3) -> level-shifted planes: Y (N, H, W, 1) and 4:2:0 CbCr (N, H/2, W/2, 2),
    float32, all minus 128."""
    _checks.check_images(images)
    ycc = rgb_to_ycbcr(images, level_shift=True)
    return ycc[..., :1], chroma_downsample(ycc[..., 1:])


def planes_to_images(y: jnp.ndarray, chroma: jnp.ndarray, rounding: str = "nearest") -> jnp.ndarray:
    """Level-shifted Y (N, H, W, 1) and CbCr (N, H/2, W/2, 2) -> uint8 RGB (N, H, W, 3).

    Chroma is upsampled x2 (bilinear, half-pixel centres), converted to RGB, clipped to [0, 255] and
    rounded to nearest. `rounding='truncate'` reproduces the reference's plain uint8 cast.
    """
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is not valid; use one of {_ROUNDINGS}.")
    ycc = jnp.concatenate([y, chroma_upsample(chroma)], axis=-1)
    return _to_uint8(ycbcr_to_rgb(ycc, level_shift=True), rounding)


def planes_to_tokens(
    y: jnp.ndarray, chroma: jnp.ndarray, block_size: int, low_freqs: int, eta: float
) -> jnp.ndarray:
    """Level-shifted planes (see `images_to_planes`) -> tokens (N, (H/2B)(W/2B), 6*low_freqs)."""
    b, lf, eta = _check_params(block_size, low_freqs, eta)
    _checks.check_rank(y, 4, "y", "batch, height, width, 1")
    n, h, w, _ = y.shape
    gh, gw = token_grid(h, w, b)
    if chroma.shape != (n, h // 2, w // 2, 2):
        raise ValueError(f"chroma must have shape {(n, h // 2, w // 2, 2)}, got {chroma.shape}.")
    # Y: (n, i, r, a, j, q, c) -> (n, i, j, r, q, a, c): the four luma blocks of token (i, j).
    yb = y.reshape(n, gh, 2, b, gw, 2, b).transpose(0, 1, 4, 2, 5, 3, 6)
    yb = yb.reshape(n, gh * gw, 4, b * b)
    cb = chroma.reshape(n, gh, b, gw, b, 2).transpose(0, 1, 3, 5, 2, 4)
    cb = cb.reshape(n, gh * gw, 2, b * b)
    blocks = jnp.concatenate([yb, cb], axis=2)  # (n, T, 6, B*B)
    a = jnp.asarray(_analysis_matrix(b, lf) / eta, jnp.float32)
    return jnp.matmul(blocks, a, precision=_HI).reshape(n, gh * gw, 6 * lf)


def _check_tokens(tokens, b: int, lf: int, image_size) -> tuple[int, int]:
    _checks.check_rank(tokens, 3, "tokens", "batch, tokens, 6*low_freqs")
    _checks.check_dtype(tokens, ("floating",), "tokens")
    if tokens.shape[-1] != 6 * lf:
        raise ValueError(
            f"tokens have {tokens.shape[-1]} features but low_freqs={lf} needs 6*low_freqs="
            f"{6 * lf}; pass the low_freqs the tokens were encoded with."
        )
    num = tokens.shape[1]
    if image_size is None:
        side = int(round(np.sqrt(num)))
        if side * side != num:
            raise ValueError(
                f"{num} tokens do not form a square grid; pass image_size=(height, width)."
            )
        image_size = (2 * b * side, 2 * b * side)
    h, w = image_size
    gh, gw = token_grid(h, w, b)
    if gh * gw != num:
        raise ValueError(
            f"image_size={tuple(image_size)} with block_size={b} needs {gh * gw} tokens, got {num}."
        )
    return h, w


def tokens_to_planes(
    tokens: jnp.ndarray,
    block_size: int,
    low_freqs: int,
    eta: float,
    image_size: tuple[int, int] | None = None,
    clip: float | None = DECODE_CLIP,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Tokens (N, T, 6*low_freqs) -> level-shifted Y (N, H, W, 1) and CbCr (N, H/2, W/2, 2).

    Tokens are clipped to [-clip, clip] (None: no clip), the dropped frequencies are zero-filled,
    everything is multiplied by eta and inverse-transformed. `image_size` defaults to a square grid.
    """
    b, lf, eta = _check_params(block_size, low_freqs, eta)
    h, w = _check_tokens(tokens, b, lf, image_size)
    y, c = _decode_blocks(tokens, b, lf, eta, h, w, clip)
    y = y.transpose(0, 1, 3, 5, 2, 4, 6).reshape(tokens.shape[0], h, w, 1)
    return y, c


def _decode_blocks(tokens, b: int, lf: int, eta: float, h: int, w: int, clip):
    """Tokens -> Y blocks (n, i, j, r, q, a, c) and level-shifted CbCr planes (n, H/2, W/2, 2)."""
    n, (gh, gw) = tokens.shape[0], token_grid(h, w, b)
    x = tokens.astype(jnp.float32)
    if clip is not None:
        clip = _checks.check_positive(clip, "clip")
        x = jnp.clip(x, -clip, clip)
    x = x.reshape(n, gh * gw, 6, lf)
    s = jnp.asarray(_analysis_matrix(b, lf).T * eta, jnp.float32)  # (lf, B*B)
    blocks = jnp.matmul(x, s, precision=_HI)
    y = blocks[:, :, :4].reshape(n, gh, gw, 2, 2, b, b)
    c = blocks[:, :, 4:].reshape(n, gh, gw, 2, b, b).transpose(0, 1, 4, 2, 5, 3)
    return y, c.reshape(n, h // 2, w // 2, 2)


def images_to_tokens(
    images: jnp.ndarray, block_size: int, low_freqs: int, eta: float
) -> jnp.ndarray:
    """uint8 (N, H, W, 3) -> float32 tokens (N, (H/2B)(W/2B), 6*low_freqs), H and W divisible by 2B.

    Args:
      images: uint8 RGB, batch-first NHWC.
      block_size: DCT block size B in {2, 4, 8, 16, 32}.
      low_freqs: zigzag frequencies kept per block, 1..B*B.
      eta: the dataset's scale (reference name `Y_bound`); coefficients are divided by it.
    """
    b, lf, eta = _check_params(block_size, low_freqs, eta)
    _checks.check_images(images)
    token_grid(images.shape[1], images.shape[2], b)
    encode = _encode_fused if b <= _FUSED_MAX_BLOCK else _encode_blocks
    return encode(images, b, lf, eta)


def tokens_to_images(
    tokens: jnp.ndarray,
    block_size: int,
    low_freqs: int,
    eta: float,
    image_size: tuple[int, int] | None = None,
    rounding: str = "nearest",
    clip: float | None = DECODE_CLIP,
) -> jnp.ndarray:
    """Tokens (N, T, 6*low_freqs) -> uint8 RGB (N, H, W, 3); the inverse of `images_to_tokens`.

    Differs from the reference on purpose: pixels are rounded to nearest, where the reference
    truncates (a plain uint8 cast, which lowers every pixel by 0.5 on average).
    `rounding='truncate'` gives the reference's behaviour for parity tests.
    """
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is not valid; use one of {_ROUNDINGS}.")
    b, lf, eta = _check_params(block_size, low_freqs, eta)
    h, w = _check_tokens(tokens, b, lf, image_size)
    n, (gh, gw) = tokens.shape[0], token_grid(h, w, b)
    y, c = _decode_blocks(tokens, b, lf, eta, h, w, clip)
    # Upsample chroma in plane layout, then convert colour in the token-block layout of Y.
    c = chroma_upsample(c).reshape(n, gh, 2, b, gw, 2, b, 2).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    m = YCBCR_TO_RGB
    cb, cr = c[..., 0], c[..., 1]
    rgb = jnp.stack([y + m[0, 2] * cr, y + m[1, 1] * cb + m[1, 2] * cr, y + m[2, 1] * cb], axis=-1)
    rgb = _to_uint8(rgb + 128.0, rounding)
    return rgb.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(n, h, w, 3)


def _to_uint8(x: jnp.ndarray, rounding: str) -> jnp.ndarray:
    x = jnp.clip(x, 0.0, 255.0)
    return (jnp.round(x) if rounding == "nearest" else jnp.floor(x)).astype(jnp.uint8)

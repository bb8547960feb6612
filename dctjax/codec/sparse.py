"""DCTransformer sparse representation: image <-> quantized DCT image <-> sparse sequence.

Layout (spec §1.4-1.7), with B the block size and G_h x G_w = (H/B) x (W/B) the luma block grid:

- The dense DCT image is int32 (N, G_h, G_w, 3B^2). Channel c = k (Y), B^2 + k (Cb), 2B^2 + k (Cr),
  with k the zigzag rank. Chroma block (i, j) of the half-resolution planes sits at luma cell
  (2i, 2j); the other three cells of each 2x2 group are 0 in the chroma channels.
- A sequence lists the non-zero elements as (channel, position, value), position
  p = row*G_w + col, followed by STOP: channel 3B^2 with position and value 0. Its length L'
  counts STOP.
- On device, sequences are padded to a static `max_len`: slots after STOP hold `PAD` (0) in channel,
  position and value, with mask False. A sequence longer than `max_len` keeps its first `max_len`
  elements (no STOP), with `truncated` True and `length` still the full L'.

The jit functions are batch-first; the `np_*` functions are host-side NumPy versions for the data
pipeline that take one example (no batch axis), as a per-example map transform sees it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks
from dctjax.codec.color import (
    RGB_TO_YCBCR,
    chroma_downsample,
    chroma_upsample,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from dctjax.codec.dct import (
    block_dct,
    block_idct,
    blockify,
    dct_matrix,
    from_zigzag,
    to_zigzag,
    unblockify,
    zigzag_order,
)
from dctjax.codec.quant import dequantize, quant_table, quantize, round_half_away

ORDERS = ("interleaved", "luma_first")
PAD = 0  # channel, position and value of the padding slots after STOP (mask False there)


class SparseSequence(NamedTuple):
    """Sparse DCT sequence. Batched: element fields (N, max_len); `length` and `truncated` (N,).

    channel: int32 in [0, 3B^2]; 3B^2 is STOP.
    position: int32 luma-grid position row*G_w + col (0 for STOP).
    value: int32 quantized, clipped coefficient, non-zero except for STOP (0).
    mask: bool, True for the elements and STOP, False for padding.
    length: int32 L' = number of non-zeros + 1 (STOP), even when it exceeds max_len.
    truncated: bool, L' > max_len (then STOP and the tail are cut off).
    """

    channel: jax.Array
    position: jax.Array
    value: jax.Array
    mask: jax.Array
    length: jax.Array
    truncated: jax.Array


def max_sequence_length(grid_shape: tuple[int, int], block_size: int) -> int:
    """L' when every coefficient is non-zero: G_h*G_w*B^2 luma + 2 chroma planes at a quarter of
    that, plus STOP. A static `max_len` that never truncates."""
    b = _checks.check_block_size(block_size)
    gh, gw = grid_shape
    return 3 * gh * gw * b * b // 2 + 1


def stop_channel(block_size: int) -> int:
    """Channel id of STOP: 3B^2 (the channel vocabulary is 3B^2 + 1)."""
    b = _checks.check_block_size(block_size)
    return 3 * b * b


# ---------------------------------------------------------------------------------------------
# Validation (static shapes and dtypes only, so it runs at trace time, before any XLA work).


def _check_quality(quality: int) -> int:
    return _checks.check_int_range(quality, "quality", 1, 100)


def _check_clip(clip: int) -> int:
    if isinstance(clip, bool) or not isinstance(clip, int | np.integer) or clip < 1:
        raise ValueError(
            f"clip must be a positive int (values are clipped to [-clip, clip]), got {clip!r}."
        )
    return int(clip)


def _check_max_len(max_len: int) -> int:
    if isinstance(max_len, bool) or not isinstance(max_len, int | np.integer) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1, got {max_len!r}.")
    return int(max_len)


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is unknown; use one of {ORDERS}.")
    return order


def _check_grid(grid_shape, name: str) -> tuple[int, int]:
    ok = isinstance(grid_shape, tuple | list) and len(grid_shape) == 2
    for g in grid_shape if ok else ():
        ok &= not isinstance(g, bool) and isinstance(g, int | np.integer) and g >= 2 and g % 2 == 0
    if not ok:
        raise ValueError(
            f"{name} must be a pair of even ints >= 2 (4:2:0 chroma blocks sit at even-even "
            f"cells of the luma grid), got {grid_shape!r}."
        )
    return int(grid_shape[0]), int(grid_shape[1])


def _check_image_size(height: int, width: int, b: int) -> None:
    _checks.check_divisible(height, width, 2 * b, f"2*block_size for 4:2:0 chroma blocks, B={b}")


def _check_dct_image(dct_image, b: int, batched: bool) -> tuple[int, int]:
    """Returns the grid (G_h, G_w)."""
    if batched:
        _checks.check_rank(dct_image, 4, "dct_image", "batch, G_h, G_w, 3*B*B")
    else:
        _checks.check_rank(dct_image, 3, "dct_image", "G_h, G_w, 3*B*B")
    _checks.check_dtype(dct_image, ("integer",), "dct_image")
    if dct_image.shape[-1] != 3 * b * b:
        raise ValueError(
            f"dct_image must have 3*B*B = {3 * b * b} channels for block_size={b}, "
            f"got shape {tuple(dct_image.shape)}."
        )
    return _check_grid(tuple(dct_image.shape[-3:-1]), "dct_image grid (G_h, G_w)")


def _check_sequence(seq: SparseSequence, batched: bool) -> None:
    fields = (seq.channel, seq.position, seq.value, seq.mask)
    shape = np.shape(seq.channel)
    rank = 2 if batched else 1
    layout = "batch, max_len" if batched else "length"
    for name, x in zip(("channel", "position", "value", "mask"), fields, strict=True):
        _checks.check_rank(x, rank, f"seq.{name}", layout)
        if np.shape(x) != shape:
            raise ValueError(
                f"seq.{name} has shape {np.shape(x)}, but seq.channel has {shape}; "
                "all element fields must have the same shape."
            )
        _checks.check_dtype(x, ("bool",) if name == "mask" else ("integer",), f"seq.{name}")


# ---------------------------------------------------------------------------------------------
# Static slot order.


@functools.cache
def _slot_order(b: int, grid_h: int, grid_w: int, order: str) -> tuple[np.ndarray, ...]:
    """Every dense slot that can hold a coefficient, listed in sequence order.

    Returns (flat index into dct_image.reshape(-1) of one example, channel, position), each int32
    of length 3/2 * B^2 * G_h * G_w (chroma only at even-even cells).
    """
    b2 = b * b
    luma_pos = np.arange(grid_h * grid_w)
    rows, cols = np.meshgrid(np.arange(0, grid_h, 2), np.arange(0, grid_w, 2), indexing="ij")
    chroma_pos = (rows * grid_w + cols).reshape(-1)  # raster order of (i, j) = raster order of p
    k_parts, colour_parts, pos_parts = [], [], []
    for colour, pos in ((0, luma_pos), (1, chroma_pos), (2, chroma_pos)):
        k, p = np.meshgrid(np.arange(b2), pos, indexing="ij")
        k_parts.append(k.reshape(-1))
        pos_parts.append(p.reshape(-1))
        colour_parts.append(np.full(k.size, colour))
    k, colour, pos = (np.concatenate(x) for x in (k_parts, colour_parts, pos_parts))
    group = (colour > 0) if order == "luma_first" else np.zeros_like(colour)
    perm = np.lexsort((pos, colour, k, group))  # last key is the primary one
    channel = (colour * b2 + k)[perm]
    pos = pos[perm]
    out = tuple(
        np.ascontiguousarray(x, dtype=np.int32) for x in (pos * 3 * b2 + channel, channel, pos)
    )
    for x in out:
        x.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------
# Device (jit / vmap-able) functions.


def images_to_dct_image(images: jax.Array, block_size: int, quality: int, clip: int) -> jax.Array:
    """uint8 RGB (N, H, W, 3), H and W multiples of 2B -> int32 dense DCT image (N, H/B, W/B, 3B^2).

    Level shift -128, JFIF YCbCr, 4:2:0 chroma by 2x2 mean, orthonormal block DCT, quantization with
    the IJG luma table (Y) / chroma table (Cb, Cr) at `quality`, clipping to [-clip, clip], zigzag.
    """
    b = _checks.check_block_size(block_size)
    q = _check_quality(quality)
    clip = _check_clip(clip)
    _checks.check_images(images, "images")
    n, h, w, _ = images.shape
    _check_image_size(h, w, b)

    ycc = rgb_to_ycbcr(images, level_shift=True)
    luma = blockify(ycc[..., :1], b)  # (N, G_h, G_w, 1, B, B)
    chroma = blockify(chroma_downsample(ycc[..., 1:]), b)  # (N, G_h/2, G_w/2, 2, B, B)
    luma = quantize(block_dct(luma), quant_table(q, b, "luma"))
    chroma = quantize(block_dct(chroma), quant_table(q, b, "chroma"))
    luma = to_zigzag(jnp.clip(luma, -clip, clip)).reshape(n, h // b, w // b, b * b)
    chroma = to_zigzag(jnp.clip(chroma, -clip, clip)).reshape(n, h // (2 * b), w // (2 * b), -1)
    # Place chroma at even-even cells: (N, h, w, C) -> (N, h, 2, w, 2, C) with zeros at odd offsets.
    chroma = jnp.pad(chroma[:, :, None, :, None], [(0, 0), (0, 0), (0, 1), (0, 0), (0, 1), (0, 0)])
    chroma = chroma.reshape(n, h // b, w // b, 2 * b * b)
    return jnp.concatenate([luma, chroma], axis=-1).astype(jnp.int32)


def dct_image_to_images(dct_image: jax.Array, block_size: int, quality: int) -> jax.Array:
    """int dense DCT image (N, G_h, G_w, 3B^2) -> uint8 RGB (N, G_h*B, G_w*B, 3).

    Chroma is read at even-even cells (other cells are ignored), dequantized, inverse-DCT'd,
    upsampled x2 bilinearly (half-pixel centres); then YCbCr -> RGB, clip to [0, 255] and round.
    """
    b = _checks.check_block_size(block_size)
    q = _check_quality(quality)
    _check_dct_image(dct_image, b, batched=True)
    b2 = b * b
    x = dct_image.astype(jnp.int32)
    luma = from_zigzag(x[..., None, :b2], b)  # (N, G_h, G_w, 1, B, B)
    chroma = x[:, ::2, ::2, b2:]
    chroma = from_zigzag(chroma.reshape(*chroma.shape[:3], 2, b2), b)  # (N, G_h/2, G_w/2, 2, B, B)
    luma = unblockify(block_idct(dequantize(luma, quant_table(q, b, "luma"))))
    chroma = unblockify(block_idct(dequantize(chroma, quant_table(q, b, "chroma"))))
    ycc = jnp.concatenate([luma, chroma_upsample(chroma)], axis=-1)
    rgb = jnp.clip(ycbcr_to_rgb(ycc, level_shift=True), 0.0, 255.0)
    return round_half_away(rgb).astype(jnp.uint8)


def dct_image_to_sequence(
    dct_image: jax.Array, max_len: int, block_size: int, order: str = "interleaved"
) -> SparseSequence:
    """int dense DCT image (N, G_h, G_w, 3B^2) -> `SparseSequence` with fields (N, max_len).

    order='interleaved': sort key (zigzag rank k, colour Y<Cb<Cr, row, col).
    order='luma_first': all Y (k, row, col), then chroma by (k, colour, row, col).
    Only chroma at even-even cells is read. `max_len` is static.
    """
    b = _checks.check_block_size(block_size)
    max_len = _check_max_len(max_len)
    order = _check_order(order)
    grid_h, grid_w = _check_dct_image(dct_image, b, batched=True)
    flat_idx, slot_channel, slot_pos = (
        jnp.asarray(x) for x in _slot_order(b, grid_h, grid_w, order)
    )
    n = dct_image.shape[0]
    values = jnp.take(dct_image.reshape(n, -1).astype(jnp.int32), flat_idx, axis=1)
    j = jnp.arange(max_len, dtype=jnp.int32)
    stop = 3 * b * b

    def one(v: jax.Array) -> SparseSequence:
        # Stable compaction: element j is the slot where the running count of non-zeros reaches j+1.
        count = jnp.cumsum(v != 0, dtype=jnp.int32)
        num = count[-1]
        src = jnp.minimum(jnp.searchsorted(count, j + 1, side="left"), v.shape[0] - 1)
        is_elem = j < num
        is_stop = j == num
        return SparseSequence(
            channel=jnp.where(is_elem, slot_channel[src], jnp.where(is_stop, stop, PAD)),
            position=jnp.where(is_elem, slot_pos[src], PAD),
            value=jnp.where(is_elem, v[src], PAD),
            mask=j <= num,
            length=num + 1,
            truncated=num + 1 > max_len,
        )

    return jax.vmap(one)(values)


def sequence_to_dct_image(
    seq: SparseSequence, block_size: int, grid_shape: tuple[int, int]
) -> jax.Array:
    """`SparseSequence` with fields (N, L) -> int32 dense DCT image (N, G_h, G_w, 3B^2).

    Scatters the masked elements before the first STOP; elements with an out-of-range channel or
    position are dropped. A repeated (channel, position) keeps the last one in sequence order.
    `seq.length` and `seq.truncated` are not read.
    """
    b = _checks.check_block_size(block_size)
    grid_h, grid_w = _check_grid(grid_shape, "grid_shape")
    _check_sequence(seq, batched=True)
    nc = 3 * b * b
    size = grid_h * grid_w * nc
    n, length = seq.channel.shape
    ch = seq.channel.astype(jnp.int32)
    pos = seq.position.astype(jnp.int32)
    before_stop = jnp.cumsum(seq.mask & (ch == nc), axis=1) == 0
    ok = seq.mask & before_stop & (ch >= 0) & (ch < nc) & (pos >= 0) & (pos < grid_h * grid_w)
    target = jnp.where(ok, pos * nc + ch, size)  # `size` is out of bounds: dropped
    rows = jnp.arange(n)[:, None]
    # Scatter-max of the element index makes "last write wins" deterministic.
    last = jnp.full((n, size), -1, jnp.int32)
    last = last.at[rows, target].max(jnp.arange(length, dtype=jnp.int32)[None], mode="drop")
    values = jnp.take_along_axis(seq.value.astype(jnp.int32), jnp.maximum(last, 0), axis=1)
    dense = jnp.where(last >= 0, values, 0)
    return dense.reshape(n, grid_h, grid_w, nc)


def images_to_sequence(
    images: jax.Array,
    block_size: int,
    quality: int,
    clip: int,
    max_len: int,
    order: str = "interleaved",
) -> SparseSequence:
    """uint8 RGB (N, H, W, 3) -> `SparseSequence` (N, max_len); see `images_to_dct_image`."""
    _check_max_len(max_len)
    _check_order(order)
    dct_image = images_to_dct_image(images, block_size, quality, clip)
    return dct_image_to_sequence(dct_image, max_len, block_size, order)


def sequence_to_images(
    seq: SparseSequence, block_size: int, quality: int, grid_shape: tuple[int, int]
) -> jax.Array:
    """`SparseSequence` (N, L) -> uint8 RGB (N, G_h*B, G_w*B, 3); grid_shape = (G_h, G_w)."""
    _check_quality(quality)
    dct_image = sequence_to_dct_image(seq, block_size, grid_shape)
    return dct_image_to_images(dct_image, block_size, quality)


# ---------------------------------------------------------------------------------------------
# Host-side NumPy versions (one example, no batch axis).


def np_images_to_dct_image(
    image: np.ndarray, block_size: int, quality: int, clip: int
) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> int32 dense DCT image (H/B, W/B, 3B^2), in float64 NumPy.

    Same steps as `images_to_dct_image`; float32 on device can land on the other side of a rounding
    boundary, so rare +-1 differences from the device version are possible.
    """
    b = _checks.check_block_size(block_size)
    q = _check_quality(quality)
    clip = _check_clip(clip)
    _checks.check_rank(image, 3, "image", "height, width, channels")
    _checks.check_dtype(image, ("uint8",), "image")
    if image.shape[-1] != 3:
        raise ValueError(f"image must have 3 channels in the last axis (HWC), got {image.shape}.")
    h, w, _ = image.shape
    _check_image_size(h, w, b)
    ycc = (image.astype(np.float64) - 128.0) @ RGB_TO_YCBCR.T
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    m = dct_matrix(b, np.float64)
    zz = zigzag_order(b)

    def code(plane: np.ndarray, kind: str) -> np.ndarray:  # (h, w) -> (h/B, w/B, B^2)
        ph, pw = plane.shape
        blocks = plane.reshape(ph // b, b, pw // b, b).transpose(0, 2, 1, 3)
        coeffs = (m @ blocks @ m.T) / quant_table(q, b, kind)
        v = np.clip(np.sign(coeffs) * np.floor(np.abs(coeffs) + 0.5), -clip, clip)
        return v.reshape(ph // b, pw // b, b * b)[..., zz].astype(np.int32)

    out = np.zeros((h // b, w // b, 3 * b * b), np.int32)
    out[..., : b * b] = code(ycc[..., 0], "luma")
    out[::2, ::2, b * b : 2 * b * b] = code(chroma[..., 0], "chroma")
    out[::2, ::2, 2 * b * b :] = code(chroma[..., 1], "chroma")
    return out


def np_dct_image_to_sequence(
    dct_image: np.ndarray,
    block_size: int,
    order: str = "interleaved",
    max_len: int | None = None,
) -> SparseSequence:
    """int dense DCT image (G_h, G_w, 3B^2) -> `SparseSequence` of NumPy arrays for one example.

    With max_len=None the element fields have length L' (all elements then STOP, mask all True);
    otherwise they are padded / truncated to max_len exactly as `dct_image_to_sequence` does.
    `length` and `truncated` are NumPy scalars.
    """
    b = _checks.check_block_size(block_size)
    order = _check_order(order)
    if max_len is not None:
        max_len = _check_max_len(max_len)
    grid_h, grid_w = _check_dct_image(dct_image, b, batched=False)
    flat_idx, slot_channel, slot_pos = _slot_order(b, grid_h, grid_w, order)
    v = np.asarray(dct_image, np.int32).reshape(-1)[flat_idx]
    nz = np.flatnonzero(v)
    channel = np.append(slot_channel[nz], np.int32(3 * b * b))
    position = np.append(slot_pos[nz], np.int32(0))
    value = np.append(v[nz], np.int32(0))
    length = channel.size
    size = length if max_len is None else max_len

    def fit(x: np.ndarray) -> np.ndarray:
        out = np.full(size, PAD, np.int32)
        out[: min(size, length)] = x[:size]
        return out

    return SparseSequence(
        channel=fit(channel),
        position=fit(position),
        value=fit(value),
        mask=np.arange(size) < length,
        length=np.int32(length),
        truncated=np.bool_(length > size),
    )


def np_sequence_to_dct_image(
    seq: SparseSequence, block_size: int, grid_shape: tuple[int, int]
) -> np.ndarray:
    """`SparseSequence` of 1-D NumPy arrays (one example) -> int32 dense DCT image (G_h, G_w, 3B^2).

    Same rules as `sequence_to_dct_image`.
    """
    b = _checks.check_block_size(block_size)
    grid_h, grid_w = _check_grid(grid_shape, "grid_shape")
    _check_sequence(seq, batched=False)
    nc = 3 * b * b
    ch = np.asarray(seq.channel, np.int64)
    pos = np.asarray(seq.position, np.int64)
    mask = np.asarray(seq.mask, bool)
    before_stop = np.cumsum(mask & (ch == nc)) == 0
    ok = mask & before_stop & (ch >= 0) & (ch < nc) & (pos >= 0) & (pos < grid_h * grid_w)
    target = (pos * nc + ch)[ok]
    value = np.asarray(seq.value, np.int32)[ok]
    # Keep the last occurrence of each target: first occurrence in the reversed list.
    _, first_in_reversed = np.unique(target[::-1], return_index=True)
    keep = target.size - 1 - first_in_reversed
    dense = np.zeros(grid_h * grid_w * nc, np.int32)
    dense[target[keep]] = value[keep]
    return dense.reshape(grid_h, grid_w, nc)

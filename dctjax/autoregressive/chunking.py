"""DCTransformer chunked training (spec §4, §6.2): chunk selection, sequence-length filtering, and
the fixed-shape decoder slice plus encoder image for one target chunk.

A sequence is u_0 = START, then u_1..u_{L'}: the L' - 1 elements followed by u_{L'} = STOP
(`SparseSequence.length` is L'). The predicted elements u_{s+1}..u_{L'} split into
n = ceil((L' - s) / N_c) chunks, with s = 0, or for colorization s = `chroma_start`, the number of
luma elements of an order='luma_first' sequence. Chunk i (1-based) has offset a = s + (i - 1) * N_c.
Its O + N_c decoder slots, numbered j = 0..O+N_c-1 here (the spec numbers them from 1), hold:

    input of slot j:   u_{a-O+j}      PAD where a-O+j < 0 or > L' (for a = 0: O PAD, then START)
    target of slot j:  u_{a-O+j+1}    none where the index is < 1 or > L'
    loss:              last N_c slots that have a target, i.e. u_{a+1}..u_{min(a+N_c, L')}
    encoder image:     dense DCT image of u_1..u_a (all zeros when a = 0; all luma and earlier
                       chroma for colorization); it never holds an element of the target chunk

Input ids index the embedding tables directly. With B the block size, G = G_h * G_w and the value
clip `clip` (class = v + clip):

    table      element              STOP          START       PAD         table size
    channel    c in [0, 3B^2)       3B^2          3B^2 + 1    3B^2 + 2    3B^2 + 3
    position   p in [0, G)          PAD           G           G + 1       G + 2
    value      v+clip in [0, 2clip] PAD           2clip + 1   2clip + 2   2clip + 3

STOP has no position or value, so its input slot takes the PAD position and value ids. Target ids
index the logits: channel in [0, 3B^2] (3B^2 = STOP), position in [0, G), value class in
[0, 2clip]. Where a slot has no target, or (for STOP) no position / value target, the id is 0: a
valid index whose loss term is masked.

`make_chunk` (host NumPy, one example, for grain workers) and `make_chunk_jax` (device, a padded
batch) return the same dict; see `make_chunk` for its keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks, sparse
from dctjax.codec.sparse import SparseSequence

CHUNK_SIZE = 896  # N_c, every dataset [003 Table 3]
OVERLAP = 128  # O
P_MIN = 0.1
POWER = 3.0

RngLike = np.random.Generator | int | Sequence[int]


class Vocab(NamedTuple):
    """Special ids and table sizes for the decoder slice (see the module docstring)."""

    stop_channel: int  # 3B^2
    start_channel: int  # 3B^2 + 1
    pad_channel: int  # 3B^2 + 2
    start_position: int  # G_h * G_w
    pad_position: int  # G_h * G_w + 1
    start_value: int  # 2 clip + 1
    pad_value: int  # 2 clip + 2
    channel_inputs: int  # embedding table sizes: 3B^2 + 3, G_h * G_w + 2, 2 clip + 3
    position_inputs: int
    value_inputs: int
    channel_classes: int  # logit sizes: 3B^2 + 1, G_h * G_w, 2 clip + 1
    position_classes: int
    value_classes: int


def vocab(block_size: int, grid_shape: tuple[int, int], clip: int) -> Vocab:
    """Special ids and table sizes for block size B, luma grid (G_h, G_w) and value clip."""
    b = _checks.check_block_size(block_size)
    grid_h, grid_w = _check_grid(grid_shape)
    clip = _check_int(clip, "clip", 1)
    nc, g, nv = 3 * b * b, grid_h * grid_w, 2 * clip + 1
    return Vocab(nc, nc + 1, nc + 2, g, g + 1, nv, nv + 1, nc + 3, g + 2, nv + 2, nc + 1, g, nv)


# ---------------------------------------------------------------------------------------------
# Validation.


def _check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    if value < lo or (hi is not None and value > hi):
        valid = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}={value} is out of range; it must be {valid}.")
    return int(value)


def _check_grid(grid_shape) -> tuple[int, int]:
    ok = isinstance(grid_shape, tuple | list) and len(grid_shape) == 2
    for g in grid_shape if ok else ():
        ok &= not isinstance(g, bool) and isinstance(g, int | np.integer) and g >= 1
    if not ok:
        raise ValueError(
            f"grid_shape must be a pair of positive ints (G_h, G_w), got {grid_shape!r}."
        )
    return int(grid_shape[0]), int(grid_shape[1])


def _check_chroma_start(chroma_start, length: int) -> int:
    if chroma_start is None:
        return 0
    # STOP is always predicted, so at least one target follows the luma part.
    return _check_int(chroma_start, "chroma_start", 0, length - 1)


def as_generator(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed or a (seed, example_index) sequence."""
    if isinstance(rng, np.random.Generator):
        return rng
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise ValueError(
            f"rng must be a numpy Generator, an int seed or a sequence of ints such as "
            f"(seed, example_index), got {rng!r}."
        ) from None


def _host_sequence(
    seq: SparseSequence, b: int, num_positions: int, clip: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validates one host sequence; returns channel, position, value (L',) int32, STOP last."""
    if not isinstance(seq, SparseSequence):
        raise ValueError(f"seq must be a SparseSequence, got {type(seq).__name__}.")
    fields = {k: np.asarray(getattr(seq, k)) for k in ("channel", "position", "value", "mask")}
    size = fields["channel"].shape
    for name, x in fields.items():
        if x.ndim != 1 or x.shape != size:
            raise ValueError(
                f"seq.{name} must be 1-D (one example) with the shape of seq.channel {size}, "
                f"got {x.shape}."
            )
    length = int(np.asarray(seq.length))
    if bool(np.asarray(seq.truncated)) or length > size[0]:
        raise ValueError(
            f"seq is truncated (seq.length={length} > {size[0]} stored elements); encode it "
            "with a larger max_len (or max_len=None) to chunk it."
        )
    if length < 1:
        raise ValueError(f"seq.length must be >= 1 (it counts STOP), got {length}.")
    mask = fields["mask"].astype(bool)
    if not mask[:length].all() or mask[length:].any():
        raise ValueError("seq.mask must be True on exactly the first seq.length entries.")
    ch, pos, val = (fields[k][:length].astype(np.int32) for k in ("channel", "position", "value"))
    stop = 3 * b * b
    if ch[-1] != stop or np.any((ch[:-1] < 0) | (ch[:-1] >= stop)):
        raise ValueError(
            f"seq.channel must hold element channels in [0, {stop}) and end with STOP = {stop} "
            f"at index seq.length - 1 (block_size={b})."
        )
    if np.any((pos[:-1] < 0) | (pos[:-1] >= num_positions)):
        raise ValueError(f"seq.position must be in [0, {num_positions}) for grid_shape.")
    if np.any((val[:-1] == 0) | (np.abs(val[:-1]) > clip)):
        raise ValueError(
            f"seq.value must be non-zero and within [-clip, clip] = [-{clip}, {clip}]."
        )
    return ch, pos, val


# ---------------------------------------------------------------------------------------------
# Chunk selection and sequence-length filtering (host).


def chunk_weights(num_chunks: int, p_min: float = P_MIN, power: float = POWER) -> np.ndarray:
    """float64 (num_chunks,) selection probabilities P(i) = max(i^-power, p_min) / sum, i = 1..n."""
    n = _check_int(num_chunks, "num_chunks", 1)
    p_min = _checks.check_positive(p_min, "p_min")
    power = _checks.check_positive(power, "power")
    w = np.maximum(np.arange(1, n + 1, dtype=np.float64) ** -power, p_min)
    return w / w.sum()


def num_chunks(length: int, chunk_size: int = CHUNK_SIZE) -> int:
    """n = ceil(L' / N_c) chunks for L' predicted elements (elements + STOP)."""
    length = _check_int(length, "length", 1)
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
    return -(-length // chunk_size)


def keep_probability(length: int, max_length: float) -> float:
    """Sequence-length filtering: keep an example with probability min(L' / L_max, 1)."""
    length = _check_int(length, "length", 1)
    max_length = _checks.check_positive(max_length, "max_length")
    return min(length / max_length, 1.0)


def keep_example(length: int, max_length: float, rng: RngLike) -> bool:
    """Draws keep (True) / drop with `keep_probability`.

    rng: a Generator, or a seed such as (seed, example_index) for a decision that is a pure
    function of the example (e.g. in a grain filter, which gets no Generator).
    """
    p = keep_probability(length, max_length)
    return bool(as_generator(rng).random() < p)


def select_chunk(
    length: int,
    rng: RngLike,
    chunk_size: int = CHUNK_SIZE,
    p_min: float = P_MIN,
    power: float = POWER,
    chroma_start: int | None = None,
) -> int:
    """Draws a 1-based chunk index with `chunk_weights` over the n chunks of a sequence of length L'.

    With chroma_start (colorization) the chunks cover only u_{chroma_start+1}..u_{L'}.
    """
    length = _check_int(length, "length", 1)
    start = _check_chroma_start(chroma_start, length)
    p = chunk_weights(num_chunks(length - start, chunk_size), p_min, power)
    return int(as_generator(rng).choice(p.size, p=p)) + 1


def find_chroma_start(seq: SparseSequence, block_size: int) -> int:
    """Index of the first chroma element (= number of luma elements) of an order='luma_first'
    host sequence (1-D fields); the number of elements when there is no chroma."""
    b = _checks.check_block_size(block_size)
    ch = np.asarray(seq.channel)
    elem = np.asarray(seq.mask, bool) & (ch < 3 * b * b)
    is_luma = ch[elem] < b * b
    start = int(is_luma.sum())
    if not is_luma[:start].all():
        raise ValueError("seq is not in order='luma_first': a luma element follows chroma.")
    return start


# ---------------------------------------------------------------------------------------------
# Slices (host).


def make_chunk(
    seq: SparseSequence,
    chunk_index: int,
    block_size: int,
    grid_shape: tuple[int, int],
    clip: int,
    chunk_size: int = CHUNK_SIZE,
    overlap: int = OVERLAP,
    chroma_start: int | None = None,
) -> dict[str, np.ndarray]:
    """Training example for chunk `chunk_index` (1-based) of one host sequence.

    seq: one example from `sparse.np_dct_image_to_sequence` (unpadded, or padded but not
    truncated). grid_shape: (G_h, G_w). chroma_start: for colorization, `find_chroma_start(seq)`;
    chunks then cover only the chroma part and STOP.

    Returns, with T = overlap + chunk_size slots (ids as in the module docstring):
      input_channel, input_position, input_value: int32 (T,) input ids of u_{a-O}..u_{a+N_c-1}.
      input_mask: bool (T,), the input is not PAD (START, an element or STOP).
      target_channel, target_position, target_value: int32 (T,) classes of u_{a-O+1}..u_{a+N_c}.
      loss_mask: bool (T,), channel loss: the last N_c slots that have a target (element or STOP).
      position_loss_mask, value_loss_mask: bool (T,), loss_mask without STOP targets.
      encoder_image: int32 (G_h, G_w, 3B^2), dense DCT image of u_1..u_a.
      chunk_index, num_chunks: int32 scalars.
    """
    b = _checks.check_block_size(block_size)
    ids = vocab(b, grid_shape, clip)
    grid_h, grid_w = _check_grid(grid_shape)
    clip = int(clip)
    n_c = _check_int(chunk_size, "chunk_size", 1)
    o = _check_int(overlap, "overlap", 1)
    ch, pos, val = _host_sequence(seq, b, ids.position_classes, clip)
    length = ch.size
    start = _check_chroma_start(chroma_start, length)
    n = num_chunks(length - start, n_c)
    i = _check_int(chunk_index, "chunk_index", 1, n)
    a = start + (i - 1) * n_c

    is_elem = ch != ids.stop_channel
    u = (  # input ids of u_0 = START, u_1..u_{L'}
        np.concatenate([[ids.start_channel], ch]),
        np.concatenate([[ids.start_position], np.where(is_elem, pos, ids.pad_position)]),
        np.concatenate([[ids.start_value], np.where(is_elem, val + clip, ids.pad_value)]),
    )
    pads = (ids.pad_channel, ids.pad_position, ids.pad_value)
    k = a - o + np.arange(o + n_c + 1)  # slot j inputs u_{k[j]} and predicts u_{k[j+1]}
    present = (k >= 0) & (k <= length)
    kc = np.clip(k, 0, length)
    window = [
        np.where(present, x[kc], pad).astype(np.int32) for x, pad in zip(u, pads, strict=True)
    ]

    kt = k[1:]
    has_target = (kt >= 1) & (kt <= length)
    is_elem_target = has_target & (kt < length)
    loss = has_target & (np.arange(o + n_c) >= o)
    encoder = sparse.np_sequence_to_dct_image(
        SparseSequence(ch[:a], pos[:a], val[:a], np.ones(a, bool), np.int32(a), np.bool_(False)),
        b,
        (grid_h, grid_w),
    )
    zero = np.int32(0)
    return {
        "input_channel": window[0][:-1],
        "input_position": window[1][:-1],
        "input_value": window[2][:-1],
        "input_mask": window[0][:-1] != ids.pad_channel,
        "target_channel": np.where(has_target, window[0][1:], zero),
        "target_position": np.where(is_elem_target, window[1][1:], zero),
        "target_value": np.where(is_elem_target, window[2][1:], zero),
        "loss_mask": loss,
        "position_loss_mask": loss & is_elem_target,
        "value_loss_mask": loss & is_elem_target,
        "encoder_image": encoder,
        "chunk_index": np.int32(i),
        "num_chunks": np.int32(n),
    }


def random_chunk(
    seq: SparseSequence,
    rng: RngLike,
    block_size: int,
    grid_shape: tuple[int, int],
    clip: int,
    chunk_size: int = CHUNK_SIZE,
    overlap: int = OVERLAP,
    p_min: float = P_MIN,
    power: float = POWER,
    chroma_start: int | None = None,
) -> dict[str, np.ndarray]:
    """`make_chunk` for a chunk drawn by `select_chunk` (e.g. in a grain RandomMap)."""
    i = select_chunk(int(np.asarray(seq.length)), rng, chunk_size, p_min, power, chroma_start)
    return make_chunk(seq, i, block_size, grid_shape, clip, chunk_size, overlap, chroma_start)


# ---------------------------------------------------------------------------------------------
# Device versions (batched, jit-able with the size arguments static).


def find_chroma_start_jax(seq: SparseSequence, block_size: int) -> jax.Array:
    """(N,) int32 number of luma elements of order='luma_first' sequences with fields (N, max_len)."""
    b = _checks.check_block_size(block_size)
    return jnp.sum(seq.mask & (seq.channel < b * b), axis=-1, dtype=jnp.int32)


def _device_num_chunks(length: jax.Array, start: jax.Array, n_c: int) -> jax.Array:
    return jnp.maximum((length - start + n_c - 1) // n_c, 1)


def select_chunk_jax(
    key: jax.Array,
    length: jax.Array,
    max_chunks: int,
    chunk_size: int = CHUNK_SIZE,
    p_min: float = P_MIN,
    power: float = POWER,
    chroma_start: jax.Array | None = None,
) -> jax.Array:
    """(N,) int32 1-based chunk indices drawn with `chunk_weights` for lengths L' (N,).

    max_chunks (static) bounds n, e.g. ceil(max_len / N_c); larger n is capped to it.
    """
    max_chunks = _check_int(max_chunks, "max_chunks", 1)
    n_c = _check_int(chunk_size, "chunk_size", 1)
    p_min = _checks.check_positive(p_min, "p_min")
    power = _checks.check_positive(power, "power")
    length = jnp.asarray(length, jnp.int32)
    start = jnp.zeros_like(length) if chroma_start is None else jnp.asarray(chroma_start, jnp.int32)
    n = jnp.minimum(_device_num_chunks(length, start, n_c), max_chunks)
    i = np.arange(1, max_chunks + 1)
    log_w = jnp.asarray(np.log(np.maximum(i.astype(np.float64) ** -power, p_min)), jnp.float32)
    logits = jnp.where(i[None] <= n[:, None], log_w[None], -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32) + 1


def make_chunk_jax(
    seq: SparseSequence,
    chunk_index: jax.Array,
    block_size: int,
    grid_shape: tuple[int, int],
    clip: int,
    chunk_size: int = CHUNK_SIZE,
    overlap: int = OVERLAP,
    chroma_start: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Device `make_chunk` for a padded batch: seq fields (N, max_len), chunk_index (N,) int.

    Returns `make_chunk`'s dict with a leading batch axis. It cannot raise on values:
    chunk_index is clipped into 1..n. A truncated sequence is read as its stored max_len
    elements with no STOP: targets past them get no loss.
    """
    b = _checks.check_block_size(block_size)
    ids = vocab(b, grid_shape, clip)
    grid_h, grid_w = _check_grid(grid_shape)
    n_c = _check_int(chunk_size, "chunk_size", 1)
    o = _check_int(overlap, "overlap", 1)
    _checks.check_rank(seq.channel, 2, "seq.channel", "batch, max_len")
    batch, max_len = seq.channel.shape
    if np.shape(chunk_index) != (batch,):
        raise ValueError(f"chunk_index must have shape ({batch},), got {np.shape(chunk_index)}.")
    if chroma_start is not None and np.shape(chroma_start) != (batch,):
        raise ValueError(f"chroma_start must have shape ({batch},), got {np.shape(chroma_start)}.")
    t = o + n_c

    length = jnp.asarray(seq.length, jnp.int32)
    start = jnp.zeros_like(length) if chroma_start is None else jnp.asarray(chroma_start, jnp.int32)
    n = _device_num_chunks(length, start, n_c)
    i = jnp.clip(jnp.asarray(chunk_index, jnp.int32), 1, n)
    a = start + (i - 1) * n_c

    ch = seq.channel.astype(jnp.int32)
    is_elem = seq.mask & (ch != ids.stop_channel)
    fields = (
        (jnp.where(seq.mask, ch, ids.pad_channel), ids.start_channel, ids.pad_channel),
        (jnp.where(is_elem, seq.position, ids.pad_position), ids.start_position, ids.pad_position),
        (jnp.where(is_elem, seq.value + clip, ids.pad_value), ids.start_value, ids.pad_value),
    )
    # Row layout: O PAD, u_0 = START, u_1..u_{max_len}, T + 1 PAD; u_k sits at column O + k, and
    # slot 0 reads u_{a-O} at column a. Past column O + max_len + 1 everything is PAD, so
    # clipping there only matters for truncated sequences and keeps dynamic_slice from shifting.
    col = jnp.minimum(a, o + max_len + 1)
    windows = []
    for x, start_id, pad_id in fields:
        row = jnp.concatenate(
            [
                jnp.full((batch, o), pad_id, jnp.int32),
                jnp.full((batch, 1), start_id, jnp.int32),
                x.astype(jnp.int32),
                jnp.full((batch, t + 1), pad_id, jnp.int32),
            ],
            axis=1,
        )
        windows.append(jax.vmap(lambda r, c: jax.lax.dynamic_slice(r, (c,), (t + 1,)))(row, col))
    c, p, v = windows

    tc = c[:, 1:]
    has_target = tc <= ids.stop_channel  # START and PAD ids are above STOP
    is_elem_target = tc < ids.stop_channel
    loss = has_target & (jnp.arange(t) >= o)[None]
    before = seq.mask & (jnp.arange(max_len)[None] < a[:, None])  # element index j is u_{j+1}
    encoder = sparse.sequence_to_dct_image(seq._replace(mask=before), b, (grid_h, grid_w))
    return {
        "input_channel": c[:, :-1],
        "input_position": p[:, :-1],
        "input_value": v[:, :-1],
        "input_mask": c[:, :-1] != ids.pad_channel,
        "target_channel": jnp.where(has_target, tc, 0),
        "target_position": jnp.where(is_elem_target, p[:, 1:], 0),
        "target_value": jnp.where(is_elem_target, v[:, 1:], 0),
        "loss_mask": loss,
        "position_loss_mask": loss & is_elem_target,
        "value_loss_mask": loss & is_elem_target,
        "encoder_image": encoder,
        "chunk_index": i,
        "num_chunks": n,
    }

"""DCTransformer sampling, chunk by chunk with KV caches (spec dctransformer.md §5, §6).

    seqs = sample_sequences(net, rep, key, indices)             # SparseSequence (N, L_buf)
    images = rep.decode(seqs)                                   # uint8 (N, R, R, 3)

One compiled `lax.while_loop` over chunks, batched over samples. Each chunk, with offset a (its
targets are u_{a+1}..u_{a+N_c}, the training slot layout of `chunking.make_chunk`):

1. The encoder runs once on the dense DCT image of u_1..u_a, and every cross-attention sublayer's
   keys / values are computed once.
2. Prefill: the O context slots (inputs u_{a-O}..u_{a-1}, teacher-forced targets u_{a-O+1}..u_a)
   run through the three decoders in one pass, filling each self-attention sublayer's KV cache.
3. Steps j = O..O+N_c-1, one element each: slot j's input u_{a+j-O} -> channel decoder (one slot,
   cached) -> sample c (STOP: the sample is done) -> position decoder with C[c] -> sample p ->
   value decoder with E_input[cell(p)] -> sample v. Each step costs one slot per decoder.

A sample that emits STOP stops writing while the others go on; the loop ends when every sample
has stopped or after `max_chunks` chunks (those samples are `truncated`). Sample i draws from
fold_in(fold_in(key, i), element number), so it depends only on (key, i), not on the batch.

Conditioning (spec §6): a `prefix` of known elements is treated as already generated. Its last,
partly filled chunk replays the known elements instead of sampling them. `chunks_from_prefix`
puts the chunk grid at the end of the prefix (colorization, trained on chroma chunks from there);
otherwise the grid starts at u_1 as in unconditional training (upsampling). `forbid_channels`
keeps the sampler off the prefix's channels, so the given ones stay exactly as they are.

Validity masks (spec §5.5, on by default): a channel may not come earlier in the ordering than the
previous element's, a repeated channel needs a strictly later position, chroma only at even-even
positions, value != 0. They only remove sequences the codec cannot produce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.autoregressive import chunking
from dctjax.codec import sparse
from dctjax.codec.sparse import SparseSequence

SAMPLE_OPTIONS = ("temperature", "top_k", "top_p", "masks", "max_chunks")


# ---------------------------------------------------------------------------------------------
# Sampling distribution.


def filter_logits(
    logits: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """float32 logits (..., V) -> logits / temperature with the classes outside the top-k and
    outside the nucleus (the smallest set of most likely classes whose probability reaches top_p)
    set to -inf. top_k 0 and top_p 1 keep every class; the most likely class is always kept."""
    check_sample_options(temperature=temperature, top_k=top_k, top_p=top_p)
    x = logits.astype(jnp.float32) / (temperature if temperature > 0 else 1.0)
    if top_k and top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]
        x = jnp.where(x >= kth, x, -jnp.inf)
    if top_p < 1.0:
        order = jnp.argsort(-x, axis=-1)
        sorted_x = jnp.take_along_axis(x, order, axis=-1)
        probs = jax.nn.softmax(sorted_x, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely classes
        cutoff = jnp.min(jnp.where(before < top_p, sorted_x, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x >= cutoff, x, -jnp.inf)
    return x


def sample_logits(
    key: jax.Array,
    logits: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jax.Array:
    """int32 ids (...,) drawn from softmax(`filter_logits`); temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    x = filter_logits(logits, temperature, top_k, top_p)
    return jax.random.categorical(key, x, axis=-1).astype(jnp.int32)


def check_sample_options(
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    masks: bool = True,
    max_chunks: int | None = None,
) -> None:
    """ValueError naming the bad option."""
    if not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0
    ):
        raise ValueError(f"temperature must be a float >= 0 (0: greedy), got {temperature!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0: no top-k truncation), got {top_k!r}.")
    if not (isinstance(top_p, int | float) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] (1: no nucleus truncation), got {top_p!r}.")
    if not isinstance(masks, bool | np.bool_):
        raise ValueError(f"masks must be True or False, got {masks!r}.")
    if max_chunks is not None and (
        isinstance(max_chunks, bool) or not isinstance(max_chunks, int | np.integer)
        or max_chunks < 1
    ):  # fmt: skip
        raise ValueError(
            f"max_chunks must be an int >= 1 or None (the default), got {max_chunks!r}."
        )


# ---------------------------------------------------------------------------------------------
# Validity masks (spec §5.5).


def channel_rank(block_size: int, order: str) -> np.ndarray:
    """int32 (3B^2 + 1,) rank of each channel in the sequence order (STOP last): interleaved
    3k + colour; luma_first k for Y, B^2 + 2k + colour - 1 for chroma (k the zigzag rank)."""
    b2 = block_size * block_size
    c = np.arange(3 * b2)
    colour, k = c // b2, c % b2
    if order == "interleaved":
        rank = 3 * k + colour
    else:
        rank = np.where(colour == 0, k, b2 + 2 * k + colour - 1)
    return np.append(rank, 3 * b2).astype(np.int32)


def position_allowed(block_size: int, grid_shape: tuple[int, int]) -> np.ndarray:
    """bool (3B^2, G_h G_w): luma channels anywhere, chroma channels at even-even cells only."""
    gh, gw = grid_shape
    b2 = block_size * block_size
    even = ((np.arange(gh)[:, None] % 2 == 0) & (np.arange(gw)[None] % 2 == 0)).reshape(-1)
    return np.concatenate([np.ones((b2, gh * gw), bool), np.tile(even, (2 * b2, 1))])


class Masks(NamedTuple):
    """Static tables of the validity masks (device arrays built inside the sampler)."""

    rank: jax.Array  # (3B^2 + 1,)
    allowed: jax.Array  # (3B^2, G)
    last_position: jax.Array  # (3B^2,) the last position a channel may take

    @classmethod
    def build(cls, block_size: int, grid_shape: tuple[int, int], order: str) -> Masks:
        allowed = position_allowed(block_size, grid_shape)
        last = allowed.shape[1] - 1 - np.argmax(allowed[:, ::-1], axis=1)
        return cls(
            jnp.asarray(channel_rank(block_size, order)), jnp.asarray(allowed), jnp.asarray(last)
        )

    def channels(self, prev_c: jax.Array, prev_p: jax.Array, has_prev: jax.Array) -> jax.Array:
        """(N, 3B^2 + 1) allowed channels after the element (prev_c, prev_p) (N,): later in the
        order, or the same channel with a later position left; anything after START."""
        num = self.rank.shape[0] - 1
        c = jnp.arange(num + 1)
        later = self.rank[None] > self.rank[prev_c][:, None]
        last = jnp.append(self.last_position, -1)
        same = (c[None] == prev_c[:, None]) & (prev_p[:, None] < last[None])
        return later | same | ~has_prev[:, None]

    def positions(
        self, c: jax.Array, prev_c: jax.Array, prev_p: jax.Array, has_prev: jax.Array
    ) -> jax.Array:
        """(N, G) allowed positions of channel c (N,) (STOP: any) after (prev_c, prev_p)."""
        num = self.allowed.shape[0]
        allowed = self.allowed[jnp.minimum(c, num - 1)] | (c >= num)[:, None]
        p = jnp.arange(self.allowed.shape[1])
        repeat = has_prev & (c == prev_c)
        return allowed & (~repeat[:, None] | (p[None] > prev_p[:, None]))


# ---------------------------------------------------------------------------------------------
# Conditioning prefixes (spec §6).


def prefix_channels(rep: Any, task: str) -> np.ndarray:
    """bool (3B^2,) channels the context of `task` gives: 'upsample' the first DCT channel of
    Y, Cb and Cr (k = 0), 'colorize' every Y channel."""
    b2 = rep.block_size**2
    c = np.arange(3 * b2)
    if task == "upsample":
        return c % b2 == 0
    if task == "colorize":
        return c < b2
    raise ValueError(f"task={task!r}; use 'upsample' or 'colorize'.")


def check_task(rep: Any, task: str) -> None:
    """The codec order a conditioning task needs (ValueError otherwise)."""
    if task == "upsample" and rep.order != "interleaved":
        raise ValueError(
            "upsampling gives the first DCT channel of Y, Cb and Cr as a prefix, which needs "
            f"order='interleaved'; this model was trained with order={rep.order!r}."
        )
    if task == "colorize" and rep.order != "luma_first":
        raise ValueError(
            "colorization gives the Y elements as a prefix, which needs a model trained with "
            f"order='luma_first' (colorization=True); this one has order={rep.order!r}."
        )
    prefix_channels(rep, task)


def context_prefix(rep: Any, images: jax.Array, task: str) -> SparseSequence:
    """uint8 (N, R, R, 3) -> the `task`'s prefix: the codec's sequence of the images restricted to
    `prefix_channels`, padded to the most such elements an image can have (no STOP)."""
    check_task(rep, task)
    keep = prefix_channels(rep, task)
    dense = sparse.images_to_dct_image(images, rep.block_size, rep.quality, rep.clip)
    dense = jnp.where(jnp.asarray(keep), dense, 0)
    gh, gw = rep.grid_shape
    per_cell = keep[: rep.block_size**2].sum() + keep[rep.block_size**2 :].sum() / 4
    max_len = int(np.ceil(gh * gw * per_cell)) + 1
    seq = sparse.dct_image_to_sequence(dense, max_len, rep.block_size, rep.order)
    elem = seq.mask & (seq.channel < sparse.stop_channel(rep.block_size))
    return seq._replace(mask=elem, length=jnp.sum(elem, axis=1, dtype=jnp.int32))


# ---------------------------------------------------------------------------------------------
# The sampler.


def default_max_chunks(rep: Any) -> int:
    """ceil(L_max / N_c) + 2 (spec §5 Choice); without L_max, the codec's longest sequence."""
    longest = rep.max_length or sparse.max_sequence_length(rep.grid_shape, rep.block_size) + 1
    return -(-int(longest) // rep.chunk_size) + 2


class _Buffer(NamedTuple):
    """Per sample: u_1..u_L (element k at index k - 1) and how many are known."""

    channel: jax.Array  # (N, L) int32
    position: jax.Array
    value: jax.Array
    count: jax.Array  # (N,) elements written (STOP included)


def chunk_context(
    buffer: _Buffer, offset: jax.Array, rep: Any, grid_start: jax.Array
) -> dict[str, jax.Array]:
    """`chunking.make_chunk_jax`'s slice for the chunk with offset a = `offset` (N,) of the
    elements known so far: encoder image of u_1..u_a, slot inputs u_{a-O}.. and the targets of
    the context slots. Elements past `count` read as PAD."""
    n, size = buffer.channel.shape
    known = jnp.arange(size)[None] < buffer.count[:, None]
    seq = SparseSequence(
        buffer.channel, buffer.position, buffer.value, known, buffer.count + 1,
        jnp.zeros((n,), bool),
    )  # fmt: skip
    chunk_index = (offset - grid_start) // rep.chunk_size + 1
    return chunking.make_chunk_jax(
        seq, chunk_index, rep.block_size, rep.grid_shape, rep.clip, rep.chunk_size, rep.overlap,
        chroma_start=grid_start,
    )  # fmt: skip


class _Chunk(NamedTuple):
    """What the steps of one chunk read: E_input, labels and chunk number, per-decoder caches."""

    memory: jax.Array
    labels: jax.Array | None
    chunk_index: jax.Array
    cross: tuple
    caches: tuple
    key_valid: jax.Array  # (N, T) slots that are not PAD
    inputs: tuple  # uncached: the slice's input / target ids (N, T) each


def _start_chunk(net: Any, ctx: dict, labels: jax.Array | None, cached: bool) -> _Chunk:
    memory = net.encode(ctx["encoder_image"], labels)
    n, t = ctx["input_channel"].shape
    if not cached:
        inputs = tuple(
            ctx[k]
            for k in ("input_channel", "input_position", "input_value", "target_channel",
                      "target_position")
        )  # fmt: skip
        return _Chunk(memory, labels, ctx["chunk_index"], (), (), ctx["input_mask"], inputs)
    return _Chunk(
        memory, labels, ctx["chunk_index"], tuple(s.memory_kv(memory) for s in net.decoders),
        tuple(s.init_cache(n, t, memory.dtype) for s in net.decoders), ctx["input_mask"], (),
    )  # fmt: skip


def _prefill(net: Any, chunk: _Chunk, ctx: dict, overlap: int) -> _Chunk:
    """Runs the O context slots through the decoders, filling the self-attention caches."""
    o = overlap
    e = net.channel_inputs(
        ctx["input_channel"][:, :o], ctx["input_position"][:, :o], ctx["input_value"][:, :o],
        chunk.labels, chunk.chunk_index,
    )  # fmt: skip
    dec_c, dec_p, dec_v = net.decoders
    kv = chunk.key_valid
    h_c, cache_c = dec_c.step(e, chunk.cross[0], chunk.caches[0], 0, kv)
    e_p = net.position_inputs(h_c, ctx["target_channel"][:, :o])
    h_p, cache_p = dec_p.step(e_p, chunk.cross[1], chunk.caches[1], 0, kv)
    e_v = net.value_inputs(h_p, chunk.memory, ctx["target_position"][:, :o])
    _, cache_v = dec_v.step(e_v, chunk.cross[2], chunk.caches[2], 0, kv)
    return chunk._replace(caches=(cache_c, cache_p, cache_v))


class _Element(NamedTuple):
    """One decoded element per sample (N,) each, as input ids (value as its class)."""

    channel: jax.Array
    position: jax.Array
    value: jax.Array


def _set_column(x: jax.Array, j: jax.Array, col: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(x, col[:, None].astype(x.dtype), j, axis=1)


def _step_logits(
    net: Any,
    chunk: _Chunk,
    j: jax.Array,
    prev: _Element,
    choose: Callable[[str, jax.Array], jax.Array],
) -> tuple[_Chunk, tuple[jax.Array, jax.Array, jax.Array], _Element]:
    """Slot j: channel -> position -> value. `choose(term, logits (N, V)) -> ids (N,)` samples
    (or teacher-forces) each term before the next decoder runs. Returns the updated chunk, the
    three logits and the chosen element."""
    key_valid = chunk.key_valid.at[:, j].set(True)
    chunk = chunk._replace(key_valid=key_valid)
    dec_c, dec_p, dec_v = net.decoders
    if chunk.inputs:  # uncached: the decoders re-run over the whole slice
        in_c, in_p, in_v = (
            _set_column(x, j, y) for x, y in zip(chunk.inputs[:3], prev, strict=True)
        )
        t_c, t_p = chunk.inputs[3:]

        def run(stack, h):
            return stack(h, chunk.memory, key_valid, 0.0, None)

        def at_j(h):
            return jax.lax.dynamic_slice_in_dim(h, j, 1, axis=1)

        e = net.channel_inputs(in_c, in_p, in_v, chunk.labels, chunk.chunk_index)
        h_c = run(dec_c, e)
        logits_c = net.logits("channel", at_j(h_c))[:, 0]
        c = choose("channel", logits_c)
        t_c = _set_column(t_c, j, c)
        h_p = run(dec_p, net.position_inputs(h_c, t_c))
        logits_p = net.logits("position", at_j(h_p))[:, 0]
        p = choose("position", logits_p)
        t_p = _set_column(t_p, j, p)
        h_v = run(dec_v, net.value_inputs(h_p, chunk.memory, t_p))
        logits_v = net.logits("value", at_j(h_v))[:, 0]
        v = choose("value", logits_v)
        chunk = chunk._replace(inputs=(in_c, in_p, in_v, t_c, t_p))
        return chunk, (logits_c, logits_p, logits_v), _Element(c, p, v)

    slot = jnp.reshape(j, (1,))
    e = net.channel_inputs(
        prev.channel[:, None], prev.position[:, None], prev.value[:, None], chunk.labels,
        chunk.chunk_index, slots=slot,
    )  # fmt: skip
    h_c, cache_c = dec_c.step(e, chunk.cross[0], chunk.caches[0], j, key_valid)
    logits_c = net.logits("channel", h_c)[:, 0]
    c = choose("channel", logits_c)
    h_p, cache_p = dec_p.step(
        net.position_inputs(h_c, c[:, None]), chunk.cross[1], chunk.caches[1], j, key_valid
    )
    logits_p = net.logits("position", h_p)[:, 0]
    p = choose("position", logits_p)
    h_v, cache_v = dec_v.step(
        net.value_inputs(h_p, chunk.memory, p[:, None]), chunk.cross[2], chunk.caches[2], j,
        key_valid,
    )  # fmt: skip
    logits_v = net.logits("value", h_v)[:, 0]
    v = choose("value", logits_v)
    chunk = chunk._replace(caches=(cache_c, cache_p, cache_v))
    return chunk, (logits_c, logits_p, logits_v), _Element(c, p, v)


class SampleState(NamedTuple):
    buffer: _Buffer
    offset: jax.Array  # (N,) a of the current chunk
    active: jax.Array  # (N,) not stopped
    chunks: jax.Array  # () chunks run


def sample_sequences(
    net: Any,
    rep: Any,
    key: jax.Array,
    indices: jax.Array,
    labels: jax.Array | None = None,
    *,
    prefix: SparseSequence | None = None,
    chunks_from_prefix: bool | None = None,
    forbid_channels: np.ndarray | jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    masks: bool = True,
    max_chunks: int | None = None,
    cached: bool = True,
    record_logits: bool = False,
) -> SparseSequence | tuple[SparseSequence, tuple[jax.Array, ...]]:
    """Samples sparse DCT sequences from a DCTransformer `net` (an nnx module, e.g.
    `TrainedModel.module(params)`) for the codec `rep` (`representations.SparseDCT`).

    indices: (N,) int sample numbers (sample i uses fold_in(key, i)). labels: (N,) classes of a
    class-conditional model. prefix: known elements (fields (N, L_p), mask on the elements, no
    STOP), e.g. `context_prefix`. chunks_from_prefix: chunk grid at the prefix end (default:
    rep.colorization). forbid_channels: bool (3B^2,) channels never sampled. max_chunks: chunks
    run at most (default `default_max_chunks`). cached: False re-runs each decoder over the whole
    slice for every element (the reference the KV caches must equal). record_logits: also return
    the logits of every step, float32 (N, max_chunks, N_c, V) per term (for tests).

    Returns the SparseSequence (N, L_p + max_chunks N_c): the prefix, the sampled elements, then
    STOP if one was drawn (`length` counts it; `truncated` marks samples cut at max_chunks).
    """
    check_sample_options(
        temperature=temperature, top_k=top_k, top_p=top_p, masks=masks, max_chunks=max_chunks
    )
    b = rep.block_size
    stop = 3 * b * b
    o, n_c = rep.overlap, rep.chunk_size
    t = o + n_c
    if net.num_slots != t:
        raise ValueError(
            f"the model was built for {net.num_slots} slots but the codec has overlap + "
            f"chunk_size = {t}; sample with the representation of the run."
        )
    max_chunks = int(max_chunks or default_max_chunks(rep))
    indices = jnp.asarray(indices, jnp.int32)
    n = indices.shape[0]
    labels = net.check_labels(labels, n)
    if prefix is None:
        prefix = SparseSequence(*(jnp.zeros((n, 0), jnp.int32) for _ in range(3)),
                                jnp.zeros((n, 0), bool), jnp.zeros((n,), jnp.int32),
                                jnp.zeros((n,), bool))  # fmt: skip
    if prefix.channel.shape[0] != n:
        raise ValueError(f"prefix has {prefix.channel.shape[0]} sequences for {n} samples.")
    if chunks_from_prefix is None:
        chunks_from_prefix = bool(rep.colorization)
    size = prefix.channel.shape[1] + max_chunks * n_c
    known = jnp.sum(prefix.mask, axis=1, dtype=jnp.int32)
    pad = size - prefix.channel.shape[1]

    def padded(x):
        return jnp.pad(jnp.where(prefix.mask, x, 0).astype(jnp.int32), ((0, 0), (0, pad)))

    buffer = _Buffer(padded(prefix.channel), padded(prefix.position), padded(prefix.value), known)
    grid_start = known if chunks_from_prefix else jnp.zeros_like(known)
    offset = grid_start + (known - grid_start) // n_c * n_c
    forbid = jnp.zeros(stop + 1, bool)
    if forbid_channels is not None:
        forbid = forbid.at[:stop].set(jnp.asarray(forbid_channels, bool))
    tables = Masks.build(b, rep.grid_shape, rep.order)
    sample_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    rows = jnp.arange(n)
    draw = jax.vmap(lambda k, x: sample_logits(k, x, temperature, top_k, top_p))
    vocab = chunking.vocab(b, rep.grid_shape, rep.clip)
    logit_sizes = (vocab.channel_classes, vocab.position_classes, vocab.value_classes)

    def chunk_body(carry):
        state, record = carry
        ctx = chunk_context(state.buffer, state.offset, rep, grid_start)
        chunk = _start_chunk(net, ctx, labels, cached)
        if cached:
            chunk = _prefill(net, chunk, ctx, o)
        prev = _Element(ctx["input_channel"][:, o], ctx["input_position"][:, o],
                        ctx["input_value"][:, o])  # fmt: skip

        def step_cond(c):
            j, _, _, st, _ = c
            return (j < t) & jnp.any(st.active)

        def step_body(c):
            j, chunk, prev, st, buf_record = c
            e = st.offset + (j - o) + 1  # the element this step produces, u_e
            forced = e <= st.buffer.count
            at = jnp.minimum(e - 1, size - 1)
            known_c = st.buffer.channel[rows, at]
            known_p = st.buffer.position[rows, at]
            known_v = st.buffer.value[rows, at] + rep.clip
            keys = jax.vmap(lambda k, i: jax.random.split(jax.random.fold_in(k, i), 3))(
                sample_keys, e
            )
            has_prev = e > 1
            prev_c = jnp.where(has_prev, prev.channel, 0)
            prev_p = jnp.where(has_prev, prev.position, 0)
            picked = {}

            def choose(term, logits):
                if term == "channel":
                    allowed = ~forbid[None]
                    if masks:
                        allowed &= tables.channels(prev_c, prev_p, has_prev)
                    ids = draw(keys[:, 0], jnp.where(allowed, logits, -jnp.inf))
                    ids = jnp.where(forced, known_c, ids)
                elif term == "position":
                    x = logits
                    if masks:
                        ok = tables.positions(picked["channel"], prev_c, prev_p, has_prev)
                        x = jnp.where(ok, logits, -jnp.inf)
                    ids = jnp.where(forced, known_p, draw(keys[:, 1], x))
                else:
                    x = logits.at[:, rep.clip].set(-jnp.inf) if masks else logits
                    ids = jnp.where(forced, known_v, draw(keys[:, 2], x))
                picked[term] = ids
                return ids

            chunk, logits, elem = _step_logits(net, chunk, j, prev, choose)
            is_stop = elem.channel == stop
            write = st.active & ~forced
            col = jnp.where(write, e - 1, size)  # out of range: dropped
            buf = st.buffer
            buf = _Buffer(
                buf.channel.at[rows, col].set(elem.channel, mode="drop"),
                buf.position.at[rows, col].set(jnp.where(is_stop, 0, elem.position), mode="drop"),
                buf.value.at[rows, col].set(jnp.where(is_stop, 0, elem.value - rep.clip),
                                            mode="drop"),
                jnp.where(write, e, buf.count),
            )  # fmt: skip
            st = st._replace(buffer=buf, active=st.active & ~(is_stop & write))
            if record_logits:
                buf_record = tuple(
                    r.at[:, st.chunks, j - o].set(x)
                    for r, x in zip(buf_record, logits, strict=True)
                )
            nxt = _Element(
                elem.channel,
                jnp.where(is_stop, vocab.pad_position, elem.position),
                jnp.where(is_stop, vocab.pad_value, elem.value),
            )
            return j + 1, chunk, nxt, st, buf_record

        init = (jnp.asarray(o, jnp.int32), chunk, prev, state, record)
        _, _, _, state, record = jax.lax.while_loop(step_cond, step_body, init)
        state = state._replace(offset=state.offset + n_c, chunks=state.chunks + 1)
        return state, record

    def chunk_cond(carry):
        state, _ = carry
        return (state.chunks < max_chunks) & jnp.any(state.active)

    record = tuple(
        jnp.zeros((n, max_chunks, n_c, v) if record_logits else (0,), jnp.float32)
        for v in logit_sizes
    )
    state = SampleState(buffer, offset, jnp.ones((n,), bool), jnp.asarray(0, jnp.int32))
    state, record = jax.lax.while_loop(chunk_cond, chunk_body, (state, record))
    buf = state.buffer
    mask = jnp.arange(size)[None] < buf.count[:, None]
    seq = SparseSequence(buf.channel, buf.position, buf.value, mask, buf.count, state.active)
    return (seq, record) if record_logits else seq

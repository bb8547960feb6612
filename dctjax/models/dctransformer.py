"""DCTransformer (Nash et al. 2021, seed 003): an encoder over the dense DCT image of everything
before the target chunk and three stacked decoders (channel, position, value); spec
dctransformer.md §3.

Per target slot j of the decoder slice (T = overlap + chunk_size slots, `chunking.make_chunk`):

    E_channel  = C[in_c] + P[in_p] + V[in_v] + P_chunk[j] (+ class embedding)   dropout
    H_channel  = decode_channel(E_channel ; E_input)          -> LN -> channel logits (3B^2 + 1)
    E_position = H_channel + C[target_c]                       (teacher-forced target channel)
    H_position = decode_position(E_position ; E_input)        -> LN -> position logits (G_h G_w)
    E_value    = H_position + E_input[cell(target_p)]          (the encoder cell of the target)
    H_value    = decode_value(E_value ; E_input)              -> LN -> value logits (2 clip + 1)

    E_input = LN(encoder(Conv_{k,s}(scale(D)) + pos_2d (+ class embedding)))

Every sublayer is H <- H + alpha * dropout(f(LN(H))) with its own zero-initialised scalar alpha
(ReZero, [003] eq. (10)). A layer spec is a list of (n_self_attention, n_fc) blocks ("PAR"); a
decoder block is its self-attention sublayer(s), one cross-attention to E_input, then its FC
sublayers (spec §3.2 Choice). Attention uses 64 features per head whatever the hidden size (§3.3):
the inner width is heads * 64, projected back to the hidden size. Decoder self-attention is causal
with PAD slots masked as keys (a query always sees itself, so left-padded rows stay finite). FC is
Dense(d -> 4d) -> exact GELU -> Dense(4d -> d).

Choices beyond the spec, each a constructor argument: dropout is applied to the summed decoder
input embeddings E_channel and to the encoder tokens (not to the teacher-forced additions of
E_position / E_value); `value_pos_embedding` also adds P[target_p] to E_value; `chunk_embeddings`
adds an embedding of the chunk number (the community code's reading of "chunk position").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dctjax.codec import _checks
from dctjax.models import layers

HEAD_DIM = 64
INPUT_SCALINGS = ("log", "linear")

Spec = tuple[tuple[int, int], ...]


def _spec(*blocks: tuple[int, int]) -> Spec:
    return tuple(blocks)


ENCODER_SPEC = _spec(*[(1, 2)] * 4)
_DEC_4 = _spec(*[(1, 2)] * 3, (1, 4))
_DEC_3 = _spec(*[(1, 2)] * 3, (1, 3))
_VAL_5 = _spec(*[(1, 2)] * 5, (1, 7))
_VAL_6 = _spec(*[(1, 2)] * 6, (1, 7))
_VAL_MIX = _spec((1, 2), (1, 2), (1, 3), (1, 3), (1, 7))

# [003] Table 3 (hidden, heads, encoder / channel / position / value specs, DCT-image downsampling
# conv (kernel, stride)), plus small sizes for a CPU: 'T' (tests) and 'S' (the quickstart).
DCTRANSFORMER_SIZES: dict[str, dict[str, Any]] = {
    "lsun": dict(hidden=896, heads=14, value_spec=_VAL_5, downsample=(4, 2)),
    "ffhq": dict(hidden=896, heads=14, value_spec=_VAL_6, downsample=(6, 3)),
    "imagenet": dict(hidden=1152, heads=14, value_spec=_VAL_6, downsample=(8, 4)),
    "openimages": dict(hidden=896, heads=18, value_spec=_VAL_6, downsample=(6, 3)),
    "plant_leaves": dict(
        hidden=768,
        heads=12,
        channel_spec=_DEC_3,
        position_spec=_DEC_3,
        value_spec=_VAL_MIX,
        downsample=(4, 2),
    ),  # fmt: skip
    "retinopathy": dict(
        hidden=768,
        heads=12,
        channel_spec=_DEC_3,
        position_spec=_DEC_3,
        value_spec=_VAL_MIX,
        downsample=(4, 2),
    ),  # fmt: skip
    "clevr": dict(hidden=896, heads=14, value_spec=_VAL_6, downsample=(6, 3)),
    "S": dict(
        hidden=256,
        heads=4,
        encoder_spec=_spec((1, 2), (1, 2)),
        channel_spec=_spec((1, 2), (1, 2)),
        position_spec=_spec((1, 2), (1, 2)),
        value_spec=_spec((1, 2), (1, 2), (1, 2)),
        downsample=(2, 1),
    ),  # fmt: skip
    "T": dict(
        hidden=64,
        heads=2,
        encoder_spec=_spec((1, 1)),
        channel_spec=_spec((1, 1)),
        position_spec=_spec((1, 1)),
        value_spec=_spec((1, 1)),
        downsample=(2, 1),
    ),  # fmt: skip
}
for _size in DCTRANSFORMER_SIZES.values():
    _size.setdefault("encoder_spec", ENCODER_SPEC)
    _size.setdefault("channel_spec", _DEC_4)
    _size.setdefault("position_spec", _DEC_4)


def check_layer_spec(spec: Any, name: str) -> Spec:
    """A PAR layer spec: a non-empty sequence of (n_self_attention >= 1, n_fc >= 0) pairs."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    try:
        pairs = [tuple(block) for block in spec]
        ok = bool(pairs) and all(len(p) == 2 and all(is_int(v) for v in p) for p in pairs)
    except TypeError:
        ok = False
    out = tuple((int(a), int(f)) for a, f in pairs) if ok else ()
    if not out or any(a < 1 or f < 0 for a, f in out):
        raise ValueError(
            f"{name} must be a non-empty list of (n_self_attention >= 1, n_fc >= 0) pairs, e.g. "
            f"[(1, 2), (1, 2)], got {spec!r}."
        )
    return out


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """'SAME' padding (low, high) of one axis: output ceil(size / stride), TensorFlow's split."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def encoder_cells(positions: jax.Array, grid_shape: tuple[int, int], stride: int) -> jax.Array:
    """Luma-grid positions row * G_w + col -> encoder cells floor(row/s) * ceil(G_w/s) + floor(col/s)."""
    grid_w = grid_shape[1]
    row, col = positions // grid_w, positions % grid_w
    return (row // stride) * (-(-grid_w // stride)) + col // stride


def scale_dct_image(dct_image: jax.Array, scaling: str, scale: float) -> jax.Array:
    """Integer DCT image -> float32 encoder input: sign(v) log(1 + |v|) ('log') or v / scale."""
    v = dct_image.astype(jnp.float32)
    if scaling == "log":
        return jnp.sign(v) * jnp.log1p(jnp.abs(v))
    return v / scale


def attention_mask(
    key_valid: jax.Array | None, num_queries: int, num_keys: int, causal: bool
) -> jax.Array | None:
    """(N, 1, T, S) bool mask (True = attend) or None: causal (query i sees keys j <= i) and/or
    keys masked where `key_valid` (N, S) is False; with both, a query always sees itself (a
    left-padded row then has one key instead of none)."""
    mask = None
    if causal:
        mask = jnp.tril(jnp.ones((num_queries, num_keys), bool))[None, None]
    if key_valid is not None:
        valid = key_valid[:, None, None, :]
        if causal:
            valid = valid | jnp.eye(num_queries, num_keys, dtype=bool)[None, None]
        mask = valid if mask is None else mask & valid
    return mask


CAUSAL_BLOCK = 128  # query block of the causal attention: key blocks above the diagonal are skipped


def _query_blocks(t: int, s: int, causal: bool) -> list[tuple[int, int, int]]:
    """(query lo, query hi, keys used) per block: causal rows lo..hi-1 see keys 0..hi-1 only."""
    if not causal or t <= CAUSAL_BLOCK or t != s:
        return [(0, t, s)]
    return [
        (lo, min(lo + CAUSAL_BLOCK, t), min(lo + CAUSAL_BLOCK, t))
        for lo in range(0, t, CAUSAL_BLOCK)
    ]


def _block_logits(q, k, key_valid, lo, hi, e, causal):
    """Masked float32 logits (N, h, hi-lo, e) of query rows lo..hi-1 against keys 0..e-1, from
    q/k in (N, h, T, d) layout."""
    logits = jnp.einsum(
        "nhtd,nhsd->nhts", q[:, :, lo:hi], k[:, :, :e], preferred_element_type=jnp.float32
    ) * (1.0 / math.sqrt(q.shape[-1]))
    mask = None
    if causal:
        rows = jnp.arange(lo, hi)[:, None]
        cols = jnp.arange(e)[None, :]
        mask = (cols <= rows)[None, None]
        if key_valid is not None:
            mask = mask & (key_valid[:, None, None, :e] | (cols == rows)[None, None])
    elif key_valid is not None:
        mask = key_valid[:, None, None, :e]
    return logits if mask is None else jnp.where(mask, logits, -jnp.inf)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array | None, causal: bool = False
) -> jax.Array:
    """softmax(q k^T / sqrt(d), masked) v: q (N, T, h, d), k/v (N, S, h, d) -> (N, T, h, d).

    Masked by `attention_mask(key_valid, T, S, causal)`. Logits and softmax in float32. The
    backward pass recomputes the attention weights from q, k and the saved log-sum-exp (as flash
    attention does), so a layer keeps no (T, S) array for the backward pass: autodiff of the
    softmax would keep several per layer, which dominated the train step's memory (XLA CPU: ~50
    (T, T) buffers live at once for 7 causal layers). Causal attention runs in query blocks of
    `CAUSAL_BLOCK` rows that skip the key blocks above the diagonal (~45% fewer FLOPs at T = 1024).
    """
    return _attention_fwd(q, k, v, key_valid, causal)[0]


def _heads_first(*xs: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jnp.swapaxes(x, 1, 2) for x in xs)


def _attention_fwd(q, k, v, key_valid, causal):
    qh, kh, vh = _heads_first(q, k, v)
    outs, lses = [], []
    for lo, hi, e in _query_blocks(q.shape[1], k.shape[1], causal):
        logits = _block_logits(qh, kh, key_valid, lo, hi, e, causal)
        peak = jnp.max(logits, axis=-1, keepdims=True)
        peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
        p = jnp.exp(logits - peak)
        total = jnp.sum(p, axis=-1, keepdims=True)  # (N, h, rows, 1)
        o = jnp.einsum(
            "nhts,nhsd->nhtd", p.astype(v.dtype), vh[:, :, :e], preferred_element_type=jnp.float32
        )
        outs.append(o / total)
        lses.append(peak + jnp.log(total))
    out = jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2).astype(q.dtype)
    return out, (q, k, v, key_valid, out, jnp.concatenate(lses, axis=2))


def _attention_bwd(causal, res, g):
    q, k, v, key_valid, out, lse = res
    qh, kh, vh, gh, oh = _heads_first(q, k, v, g, out)
    scale = 1.0 / math.sqrt(q.shape[-1])
    delta = jnp.sum(gh.astype(jnp.float32) * oh.astype(jnp.float32), axis=-1, keepdims=True)
    dqs = []
    dk = jnp.zeros(kh.shape, jnp.float32)
    dv = jnp.zeros(vh.shape, jnp.float32)
    for lo, hi, e in _query_blocks(q.shape[1], k.shape[1], causal):
        p = jnp.exp(_block_logits(qh, kh, key_valid, lo, hi, e, causal) - lse[:, :, lo:hi])
        g_b = gh[:, :, lo:hi]
        dv_b = jnp.einsum(
            "nhts,nhtd->nhsd", p.astype(g.dtype), g_b, preferred_element_type=jnp.float32
        )
        dp = jnp.einsum("nhtd,nhsd->nhts", g_b, vh[:, :, :e], preferred_element_type=jnp.float32)
        ds = (p * (dp - delta[:, :, lo:hi]) * scale).astype(q.dtype)
        dqs.append(
            jnp.einsum("nhts,nhsd->nhtd", ds, kh[:, :, :e], preferred_element_type=jnp.float32)
        )
        dk_b = jnp.einsum(
            "nhts,nhtd->nhsd", ds, qh[:, :, lo:hi], preferred_element_type=jnp.float32
        )
        if e == kh.shape[2]:
            dk, dv = dk + dk_b, dv + dv_b
        else:
            dk, dv = dk.at[:, :, :e].add(dk_b), dv.at[:, :, :e].add(dv_b)
    dq = jnp.concatenate(dqs, axis=2)
    dq, dk, dv = (jnp.swapaxes(x, 1, 2) for x in (dq, dk, dv))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


attention.defvjp(_attention_fwd, _attention_bwd)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Inference attention (no custom gradient): q (N, t, h, d) against cached keys k (N, h, d, S)
    and values v (N, h, S, d), mask (N, 1, t, S) bool (True = attend) or None -> (N, t, h, d).

    The caches are kept in the layouts the two matmuls read (keys transposed), so a decoding step
    reads them in place instead of XLA transposing a whole cache per step. Logits and softmax in
    float32."""
    logits = jnp.einsum("nthd,nhds->nhts", q, k, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    p = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("nhts,nhsd->nthd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def _cache_layout(k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """k, v (N, S, h, d) -> the cache layouts of `cached_attention`: (N, h, d, S), (N, h, S, d)."""
    return jnp.transpose(k, (0, 2, 3, 1)), jnp.transpose(v, (0, 2, 1, 3))


def cached_causal_mask(key_valid: jax.Array, start: jax.Array | int, num_queries: int) -> jax.Array:
    """(N, 1, t, T) mask of queries at slots start..start+t-1 over T cached key slots: keys at or
    before the query's slot that are not PAD (`key_valid` (N, T)), and always the query's own slot
    (the training mask of `attention_mask` / `_block_logits`, shifted to `start`)."""
    rows = start + jnp.arange(num_queries)[:, None]
    cols = jnp.arange(key_valid.shape[1])[None, :]
    own = (cols == rows)[None, None]
    return (cols <= rows)[None, None] & (key_valid[:, None, None, :] | own)


class MultiHeadAttention(nnx.Module):
    """Self- (`kv` = None) or cross-attention with `heads` heads of 64 features:
    q Dense(d -> 64h), k/v Dense(d_kv -> 64h), output Dense(64h -> d)."""

    def __init__(self, dim: int, heads: int, *, cross: bool, linear: layers.LinearFactory):
        self.heads = heads
        inner = heads * HEAD_DIM
        if cross:
            self.q = linear(dim, inner)
            self.kv = linear(dim, 2 * inner)
        else:
            self.qkv = linear(dim, 3 * inner)
        self.out = linear(inner, dim)

    def __call__(
        self, x: jax.Array, kv: jax.Array | None, key_valid: jax.Array | None, causal: bool
    ) -> jax.Array:
        n, t, _ = x.shape
        if kv is None:
            q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        else:
            q = self.q(x)
            k, v = jnp.split(self.kv(kv), 2, axis=-1)
        q, k, v = (a.reshape(n, a.shape[1], self.heads, HEAD_DIM) for a in (q, k, v))
        out = attention(q, k, v, key_valid, causal)
        return self.out(out.reshape(n, t, self.heads * HEAD_DIM))

    def memory_kv(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Cross-attention keys (N, h, 64, M) and values (N, h, M, 64) of E_input (N, M, d)."""
        n, m, _ = memory.shape
        k, v = jnp.split(self.kv(memory), 2, axis=-1)
        return _cache_layout(
            k.reshape(n, m, self.heads, HEAD_DIM), v.reshape(n, m, self.heads, HEAD_DIM)
        )

    def step(
        self,
        x: jax.Array,
        kv: tuple[jax.Array, jax.Array],
        start: jax.Array | int | None,
        key_valid: jax.Array | None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Attention of x (N, t, d) at slots start..start+t-1 with cached keys and values.

        Self-attention (start given): x's keys / values are written into the cache kv (keys
        (N, h, 64, T), values (N, h, T, 64)) at those slots, then the queries attend causally
        (`cached_causal_mask`).
        Cross-attention (start None): kv is `memory_kv(E_input)`, attended without a mask.
        Returns (N, t, d) and the updated cache."""
        n, t, _ = x.shape
        if start is None:
            q = self.q(x).reshape(n, t, self.heads, HEAD_DIM)
            out = cached_attention(q, *kv, None)
        else:
            q, k, v = (
                a.reshape(n, t, self.heads, HEAD_DIM) for a in jnp.split(self.qkv(x), 3, axis=-1)
            )
            k, v = _cache_layout(k, v)
            kv = (
                jax.lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype), start, axis=3),
                jax.lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype), start, axis=2),
            )
            out = cached_attention(q, *kv, cached_causal_mask(key_valid, start, t))
        return self.out(out.reshape(n, t, self.heads * HEAD_DIM)), kv


class Sublayer(nnx.Module):
    """H <- H + alpha * dropout(f(LN(H))), alpha a zero-initialised scalar (ReZero, pre-LN)."""

    KINDS = ("self", "cross", "fc")

    def __init__(
        self, kind: str, dim: int, heads: int, *, linear: layers.LinearFactory, dtype: Any,
        param_dtype: Any,
    ):  # fmt: skip
        self.kind = kind
        self.norm = layers.LayerNorm(dim, dtype=dtype, param_dtype=param_dtype)
        if kind == "fc":
            self.f = layers.Mlp(dim, 4 * dim, approximate=False, linear=linear)
        else:
            self.f = MultiHeadAttention(dim, heads, cross=kind == "cross", linear=linear)
        self.alpha = nnx.Param(jnp.zeros((), param_dtype))

    def __call__(
        self,
        h: jax.Array,
        memory: jax.Array | None,
        key_valid: jax.Array | None,
        rate: float,
        key: jax.Array | None,
    ) -> jax.Array:
        """h (N, T, d); memory: E_input (N, M, d) in a decoder, None in the encoder; key_valid:
        (N, T) self-attention keys that are not PAD (None: all)."""
        x = self.norm(h)
        if self.kind == "fc":
            y = self.f(x)
        elif self.kind == "self":  # causal in the decoders (memory given), not in the encoder
            y = self.f(x, None, key_valid, memory is not None)
        else:
            y = self.f(x, memory, None, False)
        y = layers.dropout(y, rate, key)
        return h + self.alpha[...].astype(y.dtype) * y

    def step(
        self, h: jax.Array, state: Any, start: jax.Array | int, key_valid: jax.Array
    ) -> tuple[jax.Array, Any]:
        """Inference `__call__` of a decoder sublayer on slots start..start+t-1 (no dropout).
        state: the self-attention cache, the cross-attention `memory_kv`, or None (fc)."""
        x = self.norm(h)
        if self.kind == "fc":
            y = self.f(x)
        else:
            y, state = self.f.step(x, state, start if self.kind == "self" else None, key_valid)
        return h + self.alpha[...].astype(y.dtype) * y, state


class Stack(nnx.Module):
    """A PAR layer spec as a flat list of sublayers; decoders add a cross-attention per block."""

    def __init__(
        self, spec: Spec, dim: int, heads: int, *, decoder: bool, linear: layers.LinearFactory,
        dtype: Any, param_dtype: Any,
    ):  # fmt: skip
        kinds = []
        for n_self, n_fc in spec:
            kinds += ["self"] * n_self + (["cross"] if decoder else []) + ["fc"] * n_fc
        self.sublayers = nnx.List(
            [
                Sublayer(k, dim, heads, linear=linear, dtype=dtype, param_dtype=param_dtype)
                for k in kinds
            ]
        )

    def __call__(
        self,
        h: jax.Array,
        memory: jax.Array | None,
        key_valid: jax.Array | None,
        rate: float,
        key: jax.Array | None,
        from_slot: int = 0,
    ) -> jax.Array:
        """h (N, T, d) -> (N, T - from_slot, d). With from_slot > 0 the sublayers after the last
        self-attention run on slots from_slot.. only: past it no slot reads another, so slots
        before from_slot matter only as keys of the self-attention sublayers."""
        keys = (
            [None] * len(self.sublayers)
            if key is None
            else jax.random.split(key, len(self.sublayers))
        )
        cut = self.last_self_attention() if from_slot else -1
        for i, (sub, k) in enumerate(zip(self.sublayers, keys, strict=True)):
            h = sub(h, memory, key_valid, rate, k)
            if i == cut:
                h = h[:, from_slot:]
        return h

    def last_self_attention(self) -> int:
        """Index of the last self-attention sublayer (every block has at least one)."""
        return max(i for i, sub in enumerate(self.sublayers) if sub.kind == "self")

    def memory_kv(self, memory: jax.Array) -> tuple:
        """Per sublayer: cross-attention keys / values of E_input (N, M, d), else None."""
        return tuple(
            sub.f.memory_kv(memory) if sub.kind == "cross" else None for sub in self.sublayers
        )

    def init_cache(self, batch: int, num_slots: int, dtype: Any) -> tuple:
        """Per sublayer: a zero self-attention cache (keys (N, h, 64, T), values (N, h, T, 64)),
        else None."""

        def empty(sub: Sublayer) -> Any:
            if sub.kind != "self":
                return None
            h = sub.f.heads
            return (
                jnp.zeros((batch, h, HEAD_DIM, num_slots), dtype),
                jnp.zeros((batch, h, num_slots, HEAD_DIM), dtype),
            )

        return tuple(empty(sub) for sub in self.sublayers)

    def step(
        self,
        h: jax.Array,
        memory_kv: tuple,
        cache: tuple,
        start: jax.Array | int,
        key_valid: jax.Array,
    ) -> tuple[jax.Array, tuple]:
        """Inference pass of a decoder on slots start..start+t-1: h (N, t, d) -> (N, t, d) and
        the updated cache (`init_cache`); memory_kv from `memory_kv`. Equals `__call__` on the
        full slice at those slots when the cache holds the earlier slots."""
        new_cache = []
        for sub, kv, c in zip(self.sublayers, memory_kv, cache, strict=True):
            h, state = sub.step(h, kv if sub.kind == "cross" else c, start, key_valid)
            new_cache.append(state if sub.kind == "self" else None)
        return h, tuple(new_cache)


class DCTransformer(nnx.Module):
    """The DCTransformer of one decoder slice: `model(encoder_image, input_channel, input_position,
    input_value, input_mask, target_channel, target_position, labels=None, chunk_index=None,
    dropout_key=None, from_slot=0)` -> float32 logits (channel (N, T', 3B^2+1), position
    (N, T', G_h G_w), value (N, T', 2 clip+1)) of slots from_slot..T-1, T' = T - from_slot
    (`decode`: training asks for the N_c loss slots only and skips the overlap's last sublayers).

    Inputs are `chunking.make_chunk`'s fields (batched): encoder_image int (N, G_h, G_w, 3B^2);
    input_* int32 (N, T) embedding ids; input_mask bool (N, T); target_channel / target_position
    int32 (N, T) teacher-forced into the position and value decoders.

    Args:
      block_size, grid_shape, clip: the sparse codec's B, luma grid (G_h, G_w) and value clip.
      num_slots: T = overlap + chunk_size.
      size: a key of `DCTRANSFORMER_SIZES`; hidden, heads, *_spec and downsample override it.
      downsample: (kernel, stride) of the DCT-image convolution ('SAME' padding).
      dropout: rate of every sublayer output and of the summed input embeddings.
      input_scaling: 'log' (sign(v) log(1 + |v|)) or 'linear' (v / input_scale).
      num_classes: > 0 adds a class embedding to every encoder token and to E_channel.
      value_pos_embedding: also add P[target_p] to E_value (off: literal eq. (8)).
      chunk_embeddings: > 0 adds an embedding of min(chunk_index, chunk_embeddings) - 1.
      remat: recompute each decoder / the encoder in the backward pass.
    """

    def __init__(
        self,
        *,
        block_size: int,
        grid_shape: tuple[int, int],
        clip: int,
        num_slots: int,
        size: str | None = None,
        hidden: int | None = None,
        heads: int | None = None,
        encoder_spec: Sequence[tuple[int, int]] | None = None,
        channel_spec: Sequence[tuple[int, int]] | None = None,
        position_spec: Sequence[tuple[int, int]] | None = None,
        value_spec: Sequence[tuple[int, int]] | None = None,
        downsample: tuple[int, int] | None = None,
        dropout: float = 0.0,
        input_scaling: str = "log",
        input_scale: float = 1024.0,
        num_classes: int = 0,
        value_pos_embedding: bool = False,
        chunk_embeddings: int = 0,
        remat: bool = False,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        cfg = resolve_dctransformer_size(
            size, hidden=hidden, heads=heads, encoder_spec=encoder_spec, channel_spec=channel_spec,
            position_spec=position_spec, value_spec=value_spec, downsample=downsample,
        )  # fmt: skip
        b = _checks.check_block_size(block_size)
        gh, gw = (int(g) for g in grid_shape)
        if gh < 1 or gw < 1:
            raise ValueError(f"grid_shape must be positive, got {grid_shape!r}.")
        _checks.check_int_range(clip, "clip", 1, 1 << 20)
        _checks.check_int_range(num_slots, "num_slots", 2, 1 << 20)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1).")
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling={input_scaling!r}; use one of {INPUT_SCALINGS}.")
        _checks.check_int_range(num_classes, "num_classes", 0, 1 << 24)
        _checks.check_int_range(chunk_embeddings, "chunk_embeddings", 0, 1 << 20)
        d, k, s = cfg["hidden"], *cfg["downsample"]
        self.block_size, self.grid_shape, self.clip = b, (gh, gw), int(clip)
        self.hidden, self.num_attention_heads, self.stride = d, cfg["heads"], s
        self.num_slots = int(num_slots)
        self.dropout = float(dropout)
        self.input_scaling, self.input_scale = input_scaling, float(input_scale)
        self.num_classes = int(num_classes)
        self.value_pos_embedding = bool(value_pos_embedding)
        self.chunk_embeddings = int(chunk_embeddings)
        self.remat = bool(remat)
        self.dtype = layers.compute_dtype(dtype)
        self.padding = (same_padding(gh, k, s), same_padding(gw, k, s))
        self.encoder_grid = (-(-gh // s), -(-gw // s))

        channels = 3 * b * b
        positions = gh * gw
        values = 2 * self.clip + 1
        self.channel_classes, self.position_classes, self.value_classes = (
            channels + 1, positions, values,
        )  # fmt: skip
        linear = layers.make_linear(
            nnx.initializers.xavier_uniform(), dtype=self.dtype, param_dtype=param_dtype,
            rngs=rngs,
        )  # fmt: skip
        embed_init = nnx.initializers.normal(stddev=0.02)

        def embed(n: int) -> nnx.Embed:
            return nnx.Embed(
                n, d, embedding_init=embed_init, dtype=self.dtype, param_dtype=param_dtype,
                rngs=rngs,
            )  # fmt: skip

        def norm() -> layers.LayerNorm:
            return layers.LayerNorm(d, dtype=self.dtype, param_dtype=param_dtype)

        def stack(spec: Spec, decoder: bool) -> Stack:
            return Stack(
                spec, d, cfg["heads"], decoder=decoder, linear=linear, dtype=self.dtype,
                param_dtype=param_dtype,
            )  # fmt: skip

        # encoder
        self.conv = nnx.Conv(
            channels, d, (k, k), strides=(s, s), padding="VALID", dtype=self.dtype,
            param_dtype=param_dtype, kernel_init=nnx.initializers.lecun_normal(),
            bias_init=nnx.initializers.zeros_init(), rngs=rngs,
        )  # fmt: skip
        m = self.encoder_grid[0] * self.encoder_grid[1]
        self.encoder_pos = nnx.Param(embed_init(rngs.params(), (m, d), param_dtype))
        self.encoder = stack(cfg["encoder_spec"], decoder=False)
        self.encoder_norm = norm()
        # decoders: tables with the START / PAD (and STOP) rows of `chunking.vocab`
        self.channel_embed = embed(channels + 3)
        self.position_embed = embed(positions + 2)
        self.value_embed = embed(values + 2)
        self.slot_embed = nnx.Param(embed_init(rngs.params(), (self.num_slots, d), param_dtype))
        self.class_embed = embed(self.num_classes) if self.num_classes else None
        self.chunk_embed = embed(self.chunk_embeddings) if self.chunk_embeddings else None
        self.channel_decoder = stack(cfg["channel_spec"], decoder=True)
        self.position_decoder = stack(cfg["position_spec"], decoder=True)
        self.value_decoder = stack(cfg["value_spec"], decoder=True)
        self.channel_norm, self.position_norm, self.value_norm = norm(), norm(), norm()
        self.channel_head = linear(d, self.channel_classes)
        self.position_head = linear(d, self.position_classes)
        self.value_head = linear(d, self.value_classes)

    # ---- pieces (the sampler of part 2 calls them one at a time) --------------------------------
    def encode(
        self,
        encoder_image: jax.Array,
        labels: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """int (N, G_h, G_w, 3B^2) dense DCT image -> E_input (N, M, d), M = ceil(G_h/s) ceil(G_w/s)."""
        n = encoder_image.shape[0]
        x = scale_dct_image(encoder_image, self.input_scaling, self.input_scale)
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        h = self.conv(x.astype(self.dtype)).reshape(n, -1, self.hidden)
        h = h + self.encoder_pos[...].astype(self.dtype)
        if self.class_embed is not None and labels is not None:
            h = h + self.class_embed(labels)[:, None]
        k_in, k_stack = _split(dropout_key, 2)
        h = layers.dropout(h, self.dropout, k_in)
        run = layers.maybe_remat(lambda m, h, k: m(h, None, None, self.dropout, k), self.remat)
        return self.encoder_norm(run(self.encoder, h, k_stack))

    def channel_inputs(
        self,
        input_channel: jax.Array,
        input_position: jax.Array,
        input_value: jax.Array,
        labels: jax.Array | None = None,
        chunk_index: jax.Array | None = None,
        slots: jax.Array | None = None,
    ) -> jax.Array:
        """E_channel (N, T, d) before dropout: C + P + V + P_chunk (+ class, + chunk number).

        slots: (T,) slot numbers (default 0..T-1; a cached sampler passes the current slot)."""
        slot_embed = jnp.asarray(self.slot_embed[...], self.dtype)
        e = self.channel_embed(input_channel) + self.position_embed(input_position)
        e = e + self.value_embed(input_value)
        e = e + (slot_embed[: e.shape[1]] if slots is None else slot_embed[slots])[None]
        if self.class_embed is not None and labels is not None:
            e = e + self.class_embed(labels)[:, None]
        if self.chunk_embed is not None and chunk_index is not None:
            idx = jnp.clip(chunk_index, 1, self.chunk_embeddings) - 1
            e = e + self.chunk_embed(idx)[:, None]
        return e

    def gather_cells(self, memory: jax.Array, positions: jax.Array) -> jax.Array:
        """E_input (N, M, d) at the encoder cells of luma positions (N, T) -> (N, T, d)."""
        cells = encoder_cells(positions, self.grid_shape, self.stride)
        return jnp.take_along_axis(memory, cells[..., None], axis=1)

    def position_inputs(self, h_channel: jax.Array, target_channel: jax.Array) -> jax.Array:
        """E_position = H_channel + C[target channel]: (N, T, d), (N, T) -> (N, T, d)."""
        return h_channel + self.channel_embed(target_channel)

    def value_inputs(
        self, h_position: jax.Array, memory: jax.Array, target_position: jax.Array
    ) -> jax.Array:
        """E_value = H_position + E_input[cell(target position)] (+ P[target position])."""
        e = h_position + self.gather_cells(memory, target_position)
        if self.value_pos_embedding:
            e = e + self.position_embed(target_position)
        return e

    @property
    def decoders(self) -> tuple[Stack, Stack, Stack]:
        return self.channel_decoder, self.position_decoder, self.value_decoder

    def logits(self, term: str, h: jax.Array) -> jax.Array:
        """float32 logits of a decoder's output h (N, T, d); term 'channel', 'position' or 'value'."""
        norm, head = {
            "channel": (self.channel_norm, self.channel_head),
            "position": (self.position_norm, self.position_head),
            "value": (self.value_norm, self.value_head),
        }[term]
        return head(norm(h)).astype(jnp.float32)

    def decode(
        self,
        memory: jax.Array,
        input_channel: jax.Array,
        input_position: jax.Array,
        input_value: jax.Array,
        input_mask: jax.Array,
        target_channel: jax.Array,
        target_position: jax.Array,
        labels: jax.Array | None = None,
        chunk_index: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
        from_slot: int = 0,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The three decoders over a slice given E_input = `encode(...)`: the outputs
        (H_channel, H_position, H_value), each (N, T - from_slot, d), before the LN + linear heads.

        from_slot: outputs of slots from_slot.. only (training passes the overlap O: the loss lies
        in the last N_c slots). The value decoder then runs its sublayers after the last
        self-attention on those slots only (`Stack`); with dropout their masks are drawn for the
        kept slots, so they differ from a from_slot = 0 pass, not in distribution."""
        k_emb, k_c, k_p, k_v = _split(dropout_key, 4)
        rate = self.dropout
        from_slot = _checks.check_int_range(from_slot, "from_slot", 0, input_channel.shape[1] - 1)

        def run(stack: Stack, h: jax.Array, key: jax.Array | None, start: int = 0) -> jax.Array:
            fn = layers.maybe_remat(lambda s, h, m, k: s(h, memory, m, rate, k, start), self.remat)
            return fn(stack, h, input_mask, key)

        e = self.channel_inputs(input_channel, input_position, input_value, labels, chunk_index)
        h_channel = run(self.channel_decoder, layers.dropout(e, rate, k_emb), k_c)
        h_position = run(
            self.position_decoder, self.position_inputs(h_channel, target_channel), k_p
        )
        h_value = run(
            self.value_decoder, self.value_inputs(h_position, memory, target_position), k_v,
            from_slot,
        )  # fmt: skip
        return h_channel[:, from_slot:], h_position[:, from_slot:], h_value

    def __call__(
        self,
        encoder_image: jax.Array,
        input_channel: jax.Array,
        input_position: jax.Array,
        input_value: jax.Array,
        input_mask: jax.Array,
        target_channel: jax.Array,
        target_position: jax.Array,
        labels: jax.Array | None = None,
        chunk_index: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
        from_slot: int = 0,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        n, t = input_channel.shape
        if t > self.num_slots:
            raise ValueError(f"the slice has {t} slots; this model was built for {self.num_slots}.")
        labels = self.check_labels(labels, n)
        k_enc, k_dec = _split(dropout_key, 2)
        memory = self.encode(encoder_image, labels, k_enc)
        hs = self.decode(
            memory, input_channel, input_position, input_value, input_mask, target_channel,
            target_position, labels, chunk_index, dropout_key=k_dec, from_slot=from_slot,
        )  # fmt: skip
        return tuple(self.logits(term, h) for term, h in zip(TERMS, hs, strict=True))

    def check_labels(self, labels: jax.Array | None, n: int) -> jax.Array | None:
        if self.num_classes and labels is None:
            raise ValueError("a class-conditional DCTransformer needs labels.")
        return layers.check_labels(labels, n, "dctransformer")


TERMS = ("channel", "position", "value")


def _split(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


def resolve_dctransformer_size(size: str | None, **overrides: Any) -> dict[str, Any]:
    """The named size of `DCTRANSFORMER_SIZES` with the non-None `overrides` applied, checked."""
    if size is None:
        base: Mapping[str, Any] = {}
    elif size in DCTRANSFORMER_SIZES:
        base = DCTRANSFORMER_SIZES[size]
    else:
        raise ValueError(
            f"unknown dctransformer size={size!r}; choose one of {sorted(DCTRANSFORMER_SIZES)}."
        )
    cfg = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    missing = [k for k in ("hidden", "heads", "downsample", *SPEC_NAMES) if k not in cfg]
    if missing:
        raise ValueError(f"dctransformer needs {missing}: pass size= or the field(s).")
    _checks.check_int_range(cfg["hidden"], "hidden", 1, 1 << 16)
    _checks.check_int_range(cfg["heads"], "heads", 1, 1 << 10)
    for name in SPEC_NAMES:
        cfg[name] = check_layer_spec(cfg[name], name)
    ds = cfg["downsample"]
    if not (
        isinstance(ds, tuple | list)
        and len(ds) == 2
        and all(isinstance(v, int) and v >= 1 for v in ds)
    ):
        raise ValueError(f"downsample must be (kernel, stride) positive ints, got {ds!r}.")
    cfg["downsample"] = (int(ds[0]), int(ds[1]))
    return cfg


SPEC_NAMES = ("encoder_spec", "channel_spec", "position_spec", "value_spec")


def registry_sizes() -> dict[str, tuple[int, int, int]]:
    """(hidden, number of blocks over the four stacks, heads) per size, for `model_sizes`."""
    return {
        name: (s["hidden"], sum(len(s[k]) for k in SPEC_NAMES), s["heads"])
        for name, s in DCTRANSFORMER_SIZES.items()
    }


def count_params(params: Any) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))

"""Building blocks shared by the U-ViT and DiT backbones (Flax NNX).

Conventions:
- Activations are batch-first: tokens (N, T, D), images NHWC (N, H, W, C).
- `dtype` is the compute dtype (float32 or bfloat16); parameters are `param_dtype` (float32).
  Attention logits and softmax run in float32 whatever `dtype` is (`jax.nn.dot_product_attention`
  accumulates the logits in float32 and always takes the softmax in float32).
- Fused qkv features are ordered [q | k | v], each split by heads (3 outermost, then heads, then
  head dim), as in the PyTorch references, so their weights convert by a transpose only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dctjax.codec import _checks

Initializer = Callable[..., jax.Array]
LinearFactory = Callable[..., nnx.Linear]

# PyTorch-parity initialisers (jax_practice.md section 7).
normal_002: Initializer = nnx.initializers.normal(stddev=0.02)  # plain normal, not truncated
torch_conv_kernel_init: Initializer = nnx.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform"
)


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default Linear/Conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# ----------------------------------------------------------------------------- embeddings


def timestep_embedding(tau: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of the network time input tau (N,) -> float32 (N, dim).

    [cos(tau f), sin(tau f)] (cosine half first) with f_j = exp(-ln(max_period) j / half),
    j = 0..half-1, half = dim // 2; a zero column is appended when dim is odd. The frequencies are
    computed in float64 and rounded once to float32.
    """
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = jnp.asarray(tau, jnp.float32)[:, None] * jnp.asarray(freqs, jnp.float32)[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def sincos_pos_embed_2d(embed_dim: int, grid_shape: tuple[int, int]) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of MAE/DiT, float32 (gh * gw, embed_dim).

    Tokens are in raster order n = i * gw + j. As in MAE's `get_2d_sincos_pos_embed` (whose
    `meshgrid(grid_w, grid_h)` puts the column index first), the first embed_dim/2 features encode
    the column j and the last embed_dim/2 the row i; each half is [sin(p w), cos(p w)] with
    w_k = 10000^(-k / (embed_dim/4)), k = 0..embed_dim/4-1.
    """
    if embed_dim % 4:
        raise ValueError(
            f"embed_dim={embed_dim} must be divisible by 4 for a 2-D sin-cos embedding."
        )
    gh, gw = grid_shape
    omega = 1.0 / 10_000.0 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4))

    def one_axis(pos: np.ndarray) -> np.ndarray:
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(
        np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij"
    )
    return np.concatenate([one_axis(cols), one_axis(rows)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- patches


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
    """(N, H, W, C) -> (N, (H/p)(W/p), p*p*C); features ordered (p1, p2, C) as U-ViT's einops."""
    n, h, w, c = x.shape
    p = patch_size
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(
    x: jax.Array, patch_size: int, grid_shape: tuple[int, int], channels: int
) -> jax.Array:
    """(N, gh*gw, p*p*C) -> (N, gh*p, gw*p, C); the inverse of `patchify`."""
    n = x.shape[0]
    (gh, gw), p = grid_shape, patch_size
    x = x.reshape(n, gh, gw, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, gh * p, gw * p, channels)


# ----------------------------------------------------------------------------- layers


def make_linear(
    kernel_init: Initializer, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
) -> LinearFactory:
    """A Dense factory `(in, out, use_bias=True, kernel_init=...) -> nnx.Linear`, biases zero."""
    return partial(
        nnx.Linear,
        kernel_init=kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Multi-head self-attention: qkv Dense(D -> 3D), softmax(q k^T / sqrt(D/h)) v, Dense(D -> D).

    (N, T, D) -> (N, T, D). Computed by `jax.nn.dot_product_attention` (float32 logits/softmax).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool, linear: LinearFactory):
        self.num_heads = num_heads
        self.qkv = linear(dim, 3 * dim, use_bias=qkv_bias)
        self.proj = linear(dim, dim, use_bias=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return self.proj(out.reshape(n, t, d))


class Mlp(nnx.Module):
    """Dense(D -> hidden) -> GELU -> Dense(hidden -> D); `approximate=False` is the exact erf GELU."""

    def __init__(self, dim: int, hidden: int, *, approximate: bool, linear: LinearFactory):
        self.approximate = approximate
        self.fc1 = linear(dim, hidden)
        self.fc2 = linear(hidden, dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.approximate))


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation: x (N, T, D), shift/scale (N, D) -> x * (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


def maybe_remat(fn: Callable[..., Any], remat: bool) -> Callable[..., Any]:
    """`nnx.remat(fn)` (gradient checkpointing: recompute in the backward pass) when `remat`."""
    return nnx.remat(fn) if remat else fn


# ----------------------------------------------------------------------------- config checks


def compute_dtype(dtype: Any, name: str = "dtype") -> jnp.dtype:
    """A floating dtype (jnp.bfloat16, 'float32', ...) or a ValueError naming `name`."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(
            f"{name}={dtype!r} is not a dtype; use e.g. jnp.float32 or jnp.bfloat16."
        ) from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"{name}={dtype!r} must be a floating dtype (float32, bfloat16).")
    return dt


def resolve_size(
    sizes: Mapping[str, tuple[int, int, int]],
    size: str | None,
    embed_dim: int | None,
    depth: int | None,
    num_heads: int | None,
    family: str,
) -> tuple[int, int, int]:
    """(embed_dim, depth, num_heads) from a named size; explicit values override the size's."""
    if size is None:
        base: tuple[int | None, ...] = (None, None, None)
    elif size in sizes:
        base = sizes[size]
    else:
        raise ValueError(f"unknown {family} size={size!r}; choose one of {sorted(sizes)}.")
    d, l, h = (
        v if v is not None else b for v, b in zip((embed_dim, depth, num_heads), base, strict=True)
    )
    for value, name in ((d, "embed_dim"), (l, "depth"), (h, "num_heads")):
        if value is None:
            raise ValueError(f"{name} is not set: pass size= one of {sorted(sizes)} or {name}=.")
        _checks.check_int_range(value, name, 1, 1 << 16)
    if d % h:
        raise ValueError(f"embed_dim={d} is not divisible by num_heads={h}.")
    return int(d), int(l), int(h)


def check_mlp_ratio(mlp_ratio: float) -> float:
    return _checks.check_positive(mlp_ratio, "mlp_ratio")


def check_num_classes(num_classes: int) -> int:
    return _checks.check_int_range(num_classes, "num_classes", 0, 1 << 24)


def check_time_inputs(
    x: jax.Array, t: jax.Array, expected: tuple[int, ...], model: str
) -> jax.Array:
    """Checks x (N, *expected) and t () or (N,); returns tau-ready float32 t of shape (N,)."""
    if tuple(x.shape[1:]) != tuple(expected) or x.ndim != len(expected) + 1:
        raise ValueError(
            f"{model}: x must have shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}."
        )
    t = jnp.asarray(t, jnp.float32)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(
            f"{model}: t must have shape () or (N,)=({x.shape[0]},), got {tuple(t.shape)}."
        )
    return jnp.broadcast_to(t, (x.shape[0],))


def check_labels(y: jax.Array | None, n: int, model: str) -> jax.Array | None:
    if y is None:
        return None
    y = jnp.asarray(y)
    if y.shape != (n,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(
            f"{model}: y must be integer labels of shape ({n},), got {y.dtype}{tuple(y.shape)}."
        )
    return y

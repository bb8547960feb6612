"""JiT, "Just image Transformers" (Li & He 2025), the backbone of Spectral Forcing, in Flax NNX.

spectral.md section 3.4, following the PyTorch code of LTH14/JiT as reproduced in
WeichenFan/Spectral_Forcing (`model_jit.py`, `util/model_util.py`):

- patch embedding (`BottleneckPatchEmbed`): Conv(p x p, stride p, C -> bottleneck, no bias), then a
  1x1 conv (Dense) bottleneck -> D with bias. With `spectral_forcing` (spectral.md 2.3) the input is
  first low-passed by the time-conditional DCT operator `codec.spectral.spectral_forcing` and the
  first projection is Linear(C p^2 -> bottleneck, no bias) on channel-major (C, p, p) patches;
- a fixed 2-D sin-cos position embedding (a constant, not a Param) plus 2-D RoPE in every
  attention layer (`rope_tables`);
- conditioning c = t_emb + y_emb: a timestep MLP on the 256-d sinusoid of t in [0, 1] itself (no
  x1000 or x999), and a class table with num_classes + 1 rows, the last one the null class (an
  unconditional model has one row, used for every sample);
- adaLN-Zero blocks with RMSNorm (learnable weight, eps 1e-6), per-head qk-RMSNorm, RoPE, a SwiGLU
  MLP of hidden int(int(mlp_ratio D) 2/3) and biases on qkv, proj and the MLP;
- `in_context_len` class tokens (copies of y_emb + a learned position embedding) prepended before
  block `in_context_start`, unrotated by RoPE and dropped before the final layer;
- final layer RMSNorm -> adaLN (shift, scale) -> Dense(D -> p p C), then unpatchify.

Precision as the reference under bf16 autocast: with dtype=bfloat16 the Dense layers, convs and
attention compute in bfloat16 (softmax in float32), while the residual stream, the conditioning c,
the class embedding and the RMSNorm statistics stay float32; the output is float32.

Initialisation as the reference: xavier-uniform Dense kernels (and the patch convs with PyTorch's
fan of the flattened (out, in p p) weight), zero biases, N(0, 0.02^2) timestep MLP kernels, class
table and in-context position embedding, RMSNorm weights 1, zero adaLN modulations and zero final
Dense, so the network outputs exactly 0 at init. The model's state is nnx.Param only: projection
dropout (the reference's proj_drop, middle half of the blocks) is drawn from the `dropout_key`
argument of `__call__`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dctjax.codec import _checks, spectral
from dctjax.models import layers
from dctjax.models.dit import TimestepEmbedder

# name -> (embed_dim D, depth, num_heads); spectral.md 3.5 and the SF-code's JiT_700M. 'T' and 'S'
# are CPU sizes for tests and quick runs (head dim 16 and 64).
JIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (64, 4, 4),
    "S": (192, 6, 3),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "H": (1280, 32, 16),
    "700M": (1024, 36, 16),
}
# Per-size defaults of the reference's model constructors (JiT_B_16, ..., JiT_700M).
JIT_BOTTLENECK: dict[str, int] = {"T": 32, "S": 64, "B": 128, "L": 128, "H": 256, "700M": 128}
JIT_IN_CONTEXT_START: dict[str, int] = {"T": 1, "S": 2, "B": 4, "L": 8, "H": 10, "700M": 12}

# The keyword arguments of `codec.spectral.spectral_forcing` a `spectral_forcing` mapping may hold.
SPECTRAL_FORCING_KEYS = (
    "window_size",
    "kappa",
    "c_min",
    "c_max",
    "schedule",
    "fixed_scale",
    "k0",
    "alpha",
)

RMS_EPS = 1e-6
ROPE_THETA = 10_000.0
FREQUENCY_EMBEDDING_SIZE = 256

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()
# PyTorch's xavier_uniform_ on the conv weight viewed as (out, in * kh * kw): fan_in = in kh kw,
# fan_out = out (Flax's xavier on a conv kernel would also multiply fan_out by kh kw).
_xavier_conv = nnx.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3
)


# ----------------------------------------------------------------------------- RoPE


def rope_tables(
    head_dim: int, grid_shape: tuple[int, int], num_prefix: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin float32 (num_prefix + gh * gw, head_dim) of the reference's 2-D RoPE.

    As `VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=grid)`: frequencies
    f_k = theta^(-2k / (head_dim/2)), k = 0..head_dim/4 - 1, theta = 1e4, each repeated for an
    adjacent pair; the first head_dim/2 features rotate by the row index i of token n = i gw + j,
    the last head_dim/2 by the column j. The `num_prefix` in-context tokens come first and get the
    identity rotation (cos 1, sin 0).
    """
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} must be divisible by 4 for the 2-D RoPE.")
    half = head_dim // 2
    freqs = 1.0 / ROPE_THETA ** (np.arange(0, half, 2, dtype=np.float64) / half)
    gh, gw = grid_shape

    def axis(n: int) -> np.ndarray:  # (n, half), pairs (f0, f0, f1, f1, ...)
        return np.repeat(np.arange(n, dtype=np.float64)[:, None] * freqs[None], 2, axis=1)

    rows = np.broadcast_to(axis(gh)[:, None], (gh, gw, half))
    cols = np.broadcast_to(axis(gw)[None], (gh, gw, half))
    angles = np.concatenate([rows, cols], axis=-1).reshape(gh * gw, head_dim)
    cos = np.concatenate([np.ones((num_prefix, head_dim)), np.cos(angles)])
    sin = np.concatenate([np.zeros((num_prefix, head_dim)), np.sin(angles)])
    return cos.astype(np.float32), sin.astype(np.float32)


def rotate_half(x: jax.Array) -> jax.Array:
    """Adjacent pairs (x_2k, x_2k+1) -> (-x_2k+1, x_2k) over the last axis."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (N, T, h, head_dim) rotated by cos, sin (T, head_dim), in float32 -> x's dtype."""
    xf = x.astype(jnp.float32)
    out = xf * cos[:, None] + rotate_half(xf) * sin[:, None]
    return out.astype(x.dtype)


# ----------------------------------------------------------------------------- layers


class RMSNorm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) * weight over the last axis (LlamaRMSNorm), in float32.

    `weight` (ones) is learnable, as in the reference; the output has x's dtype.
    """

    def __init__(self, dim: int, *, eps: float = RMS_EPS, param_dtype: Any = jnp.float32):
        self.eps = float(eps)
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.rms_norm(x, self.weight[...], self.eps)


class Attention(nnx.Module):
    """qkv Dense(D -> 3D) -> per-head qk-RMSNorm -> RoPE -> softmax attention -> Dense(D -> D)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        linear: layers.LinearFactory,
        implementation: str,
        param_dtype: Any,
    ):
        self.num_heads = num_heads
        self.implementation = layers.check_attention(implementation)
        head_dim = dim // num_heads
        self.qkv = linear(dim, 3 * dim)
        self.q_norm = RMSNorm(head_dim, param_dtype=param_dtype)
        self.k_norm = RMSNorm(head_dim, param_dtype=param_dtype)
        self.proj = linear(dim, dim)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        n, t, d = x.shape
        q, k, v = (
            y.reshape(n, t, self.num_heads, d // self.num_heads)
            for y in jnp.split(self.qkv(x), 3, axis=-1)
        )
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        out = layers.dot_product_attention(q, k, v, self.implementation)
        return self.proj(out.reshape(n, t, d))


class SwiGLUFFN(nnx.Module):
    """w12 Dense(D -> 2H) -> silu(first half) * second half -> [dropout] -> w3 Dense(H -> D)."""

    def __init__(self, dim: int, hidden: int, *, linear: layers.LinearFactory):
        self.w12 = linear(dim, 2 * hidden)
        self.w3 = linear(hidden, dim)

    def __call__(self, x: jax.Array, rate: float = 0.0, key: jax.Array | None = None) -> jax.Array:
        x1, x2 = jnp.split(self.w12(x), 2, axis=-1)
        return self.w3(layers.dropout(jax.nn.silu(x1) * x2, rate, key))


class JiTBlock(nnx.Module):
    """adaLN-Zero block: x (N, T, D), c (N, D) -> (N, T, D).

    (shift, scale, gate) x (msa, mlp) = Dense(D -> 6D)(SiLU(c)), zero-initialised. `proj_dropout`
    applies (with a key) to the attention output projection and to the SwiGLU hidden before w3,
    as the reference's proj_drop and ffn_dropout.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        proj_dropout: float,
        attention: str,
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ):
        linear = layers.make_linear(_xavier, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_dropout = float(proj_dropout)
        self.norm1 = RMSNorm(dim, param_dtype=param_dtype)
        self.attn = Attention(
            dim, num_heads, linear=linear, implementation=attention, param_dtype=param_dtype
        )
        self.norm2 = RMSNorm(dim, param_dtype=param_dtype)
        self.mlp = SwiGLUFFN(dim, mlp_hidden, linear=linear)
        self.adaLN_modulation = linear(dim, 6 * dim, kernel_init=_zeros)

    def __call__(
        self,
        x: jax.Array,
        c: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        key: jax.Array | None = None,
    ) -> jax.Array:
        mod = jnp.split(self.adaLN_modulation(jax.nn.silu(c)), 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        k_attn, k_mlp = (None, None) if key is None else jax.random.split(key)
        a = self.attn(layers.modulate(self.norm1(x), shift_msa, scale_msa), cos, sin)
        x = x + gate_msa[:, None] * layers.dropout(a, self.proj_dropout, k_attn)
        m = self.mlp(layers.modulate(self.norm2(x), shift_mlp, scale_mlp), self.proj_dropout, k_mlp)
        return x + gate_mlp[:, None] * m


class FinalLayer(nnx.Module):
    """x (N, T, D), c (N, D) -> Dense(D -> F)(modulate(RMSNorm(x), shift, scale)), zero-initialised."""

    def __init__(self, dim: int, out_dim: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        linear = layers.make_linear(_zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm_final = RMSNorm(dim, param_dtype=param_dtype)
        self.linear = linear(dim, out_dim)
        self.adaLN_modulation = linear(dim, 2 * dim)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.adaLN_modulation(jax.nn.silu(c)), 2, axis=-1)
        return self.linear(layers.modulate(self.norm_final(x), shift, scale))


def patchify_channel_major(x: jax.Array, patch_size: int) -> jax.Array:
    """(N, H, W, C) -> (N, (H/p)(W/p), C p p), features ordered (C, p1, p2): the SF-code's
    `window_partition` of an NCHW image, tokens in raster order."""
    n, h, w, c = x.shape
    p = patch_size
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


class BottleneckPatchEmbed(nnx.Module):
    """(N, H, W, C) -> (N, (H/p)(W/p), D): proj1 to the bottleneck (no bias), proj2 Dense with bias.

    proj1 is a p x p stride-p conv (vanilla JiT) or, with `channel_major=True` (Spectral Forcing),
    Dense(C p^2 -> bottleneck) on `patchify_channel_major` patches.
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        bottleneck: int,
        dim: int,
        *,
        channel_major: bool,
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ):
        linear = layers.make_linear(_xavier, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.patch_size, self.channel_major = patch_size, bool(channel_major)
        p = patch_size
        if self.channel_major:
            self.proj1 = linear(channels * p * p, bottleneck, use_bias=False)
        else:
            self.proj1 = nnx.Conv(
                channels,
                bottleneck,
                (p, p),
                strides=(p, p),
                padding="VALID",
                use_bias=False,
                kernel_init=_xavier_conv,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        self.proj2 = linear(bottleneck, dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[0]
        if self.channel_major:
            h = self.proj1(patchify_channel_major(x, self.patch_size))
        else:
            h = self.proj1(x)
            h = h.reshape(n, -1, h.shape[-1])
        return self.proj2(h)


def _block_call(block: JiTBlock, x, c, cos, sin, key):
    return block(x, c, cos, sin, key)


def check_spectral_forcing(
    spectral_forcing: Mapping[str, Any] | None, input_shape: tuple[int, int, int]
) -> dict[str, Any] | None:
    """The Spectral Forcing keyword arguments as a dict (or None), checked on a dummy input."""
    if spectral_forcing is None:
        return None
    if hasattr(spectral_forcing, "to_dict"):  # an ml_collections.ConfigDict
        spectral_forcing = spectral_forcing.to_dict()
    if not isinstance(spectral_forcing, Mapping):
        raise ValueError(
            f"spectral_forcing must be None or a mapping of {SPECTRAL_FORCING_KEYS}, got "
            f"{type(spectral_forcing).__name__}."
        )
    sf = dict(spectral_forcing)
    unknown = sorted(set(sf) - set(SPECTRAL_FORCING_KEYS))
    if unknown:
        raise ValueError(
            f"spectral_forcing has unknown key(s) {unknown}; valid keys are "
            f"{list(SPECTRAL_FORCING_KEYS)}."
        )
    h, w, c = input_shape
    try:  # runs the operator's own argument checks on shapes only
        jax.eval_shape(
            lambda z, t: spectral.spectral_forcing(z, t, **sf),
            jax.ShapeDtypeStruct((1, h, w, c), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32),
        )
    except ValueError as e:
        raise ValueError(f"spectral_forcing: {e}") from None
    return sf


class JiT(nnx.Module):
    """JiT x-prediction network on pixels: `model(x, t, y=None, dropout_key=None)` -> float32 x.

    Args:
      input_shape: (H, W, C), the per-example image shape (`representation.shape`); H and W
        divisible by patch_size.
      patch_size: p (16 at 256 px, 32 at 512 px).
      size: a key of `JIT_SIZES`; explicit embed_dim / depth / num_heads / bottleneck /
        in_context_start override its values (`JIT_BOTTLENECK`, `JIT_IN_CONTEXT_START`).
      bottleneck: the patch-embedding bottleneck width.
      in_context_len: the number of in-context class tokens (0: none).
      in_context_start: the block before which they are prepended (0 <= it < depth).
      num_classes: the class count; the table has num_classes + 1 rows and row num_classes is the
        null class (y=None selects it; for num_classes=0 that is the only row).
      mlp_ratio: SwiGLU hidden = int(int(mlp_ratio D) 2 / 3).
      proj_dropout: dropout rate on the attention output projection and on the SwiGLU hidden
        (before w3) of blocks depth//4 <= i < 3 (depth//4), as the reference's proj_drop;
        applied only when `__call__` gets a `dropout_key`.
      attention: 'auto' (cuDNN flash attention where it runs, else XLA), 'xla' or 'cudnn'.
      dtype, param_dtype: compute and parameter dtypes (e.g. bfloat16 and float32).
      remat: gradient checkpointing of every block.
      spectral_forcing: None for vanilla JiT, or the keyword arguments of
        `codec.spectral.spectral_forcing` (`SPECTRAL_FORCING_KEYS`; {} gives its defaults: a
        full-image DCT, kappa 30, c(t) = 0.05 + 0.95 t) to low-pass the input at each sample's t
        before a channel-major linear patch embedding (spectral.md 2.3).
    """

    null_class = True  # the table always has the null row num_classes

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        patch_size: int = 16,
        size: str | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        bottleneck: int | None = None,
        in_context_len: int = 32,
        in_context_start: int | None = None,
        num_classes: int = 0,
        mlp_ratio: float = 4.0,
        proj_dropout: float = 0.0,
        attention: str = "auto",
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        remat: bool = False,
        spectral_forcing: Mapping[str, Any] | None = None,
        rngs: nnx.Rngs,
    ):
        d, depth, heads = layers.resolve_size(JIT_SIZES, size, embed_dim, depth, num_heads, "JiT")
        head_dim = d // heads
        if head_dim % 4:
            raise ValueError(
                f"embed_dim / num_heads = {d} / {heads} = {head_dim} (the head dim) must be "
                "divisible by 4: the 2-D RoPE rotates pairs over two halves of each head."
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape={self.input_shape} must be (H, W, C): JiT takes pixels.")
        h, w, c = self.input_shape
        _checks.check_int_range(c, "input_shape[2] (channels)", 1, 1 << 12)
        p = _checks.check_int_range(patch_size, "patch_size", 1, 1 << 12)
        if h < 1 or w < 1 or h % p or w % p:
            raise ValueError(
                f"input_shape={self.input_shape}: the image size {h}x{w} is not divisible by "
                f"patch_size={p}."
            )
        if bottleneck is None:
            if size is None:
                raise ValueError("bottleneck is not set: pass size= or bottleneck=.")
            bottleneck = JIT_BOTTLENECK[size]
        bottleneck = _checks.check_int_range(bottleneck, "bottleneck", 1, 1 << 16)
        self.in_context_len = _checks.check_int_range(in_context_len, "in_context_len", 0, 1 << 16)
        if in_context_start is None:
            if size is None and self.in_context_len:
                raise ValueError("in_context_start is not set: pass size= or in_context_start=.")
            in_context_start = JIT_IN_CONTEXT_START[size] if size is not None else 0
        if self.in_context_len:
            in_context_start = _checks.check_int_range(
                in_context_start, "in_context_start", 0, depth - 1
            )
        self.in_context_start = int(in_context_start)
        self.num_classes = layers.check_num_classes(num_classes)
        layers.check_mlp_ratio(mlp_ratio)
        mlp_hidden = int(int(d * mlp_ratio) * 2 / 3)
        if mlp_hidden < 1:
            raise ValueError(f"mlp_ratio={mlp_ratio} gives an empty SwiGLU hidden layer.")
        if not 0.0 <= float(proj_dropout) < 1.0:
            raise ValueError(f"proj_dropout={proj_dropout} must be in [0, 1).")
        self.proj_dropout = float(proj_dropout)
        self.attention = layers.check_attention(attention)
        self.dtype = layers.compute_dtype(dtype)
        param_dtype = layers.compute_dtype(param_dtype, "param_dtype")
        self.spectral_forcing = check_spectral_forcing(spectral_forcing, self.input_shape)
        self.embed_dim, self.depth, self.num_heads = d, depth, heads
        self.patch_size, self.bottleneck, self.remat = p, bottleneck, bool(remat)
        self.grid_shape = (h // p, w // p)
        self.num_tokens = self.grid_shape[0] * self.grid_shape[1]
        lo, hi = depth // 4, depth // 4 * 3  # the reference's `depth // 4 * 3 > i >= depth // 4`
        self.dropout_blocks = tuple(range(lo, hi)) if self.proj_dropout else ()

        lin = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.x_embedder = BottleneckPatchEmbed(
            p, c, bottleneck, d, channel_major=self.spectral_forcing is not None, **lin
        )
        self.t_embedder = TimestepEmbedder(
            d, FREQUENCY_EMBEDDING_SIZE, linear=layers.make_linear(_xavier, **lin)
        )
        self.y_embedder = nnx.Embed(  # float32 output, as nn.Embedding under autocast
            self.num_classes + 1,
            d,
            embedding_init=layers.normal_002,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.in_context_posemb = (
            nnx.Param(layers.normal_002(rngs.params(), (1, self.in_context_len, d), param_dtype))
            if self.in_context_len
            else None
        )
        self.blocks = nnx.List(
            [
                JiTBlock(
                    d,
                    heads,
                    mlp_hidden,
                    proj_dropout=self.proj_dropout if i in self.dropout_blocks else 0.0,
                    attention=self.attention,
                    **lin,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = FinalLayer(d, p * p * c, **lin)

    @property
    def null_label(self) -> int:
        """The label of the null (unconditional) row, for CFG label dropout and sampling."""
        if not self.num_classes:
            raise ValueError("this JiT is unconditional (num_classes=0): it has no null label.")
        return self.num_classes

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """x (N, H, W, C) the noisy z_t; t () or (N,) in [0, 1] (t = 1 data); y (N,) int or None
        (the null class) -> the float32 x-prediction (N, H, W, C)."""
        t = layers.check_time_inputs(x, t, self.input_shape, "JiT")
        y = layers.check_labels(y, x.shape[0], "JiT")
        if y is not None and not self.num_classes:
            raise ValueError(
                "JiT: class labels y were given to an unconditional model (num_classes=0)."
            )
        n = x.shape[0]
        if y is None:
            y = jnp.full((n,), self.num_classes, jnp.int32)

        x = x.astype(jnp.float32)
        if self.spectral_forcing is not None:
            x = spectral.spectral_forcing(x, t, **self.spectral_forcing)
        pos = layers.sincos_pos_embed_2d(self.embed_dim, self.grid_shape)  # a constant
        # The residual stream, c and the norms stay float32 (the reference under bf16 autocast);
        # the Dense layers, convs and attention compute in self.dtype.
        h = self.x_embedder(x.astype(self.dtype)).astype(jnp.float32) + jnp.asarray(pos)[None]
        y_emb = self.y_embedder(y)
        c = self.t_embedder(t, self.dtype).astype(jnp.float32) + y_emb

        head_dim = self.embed_dim // self.num_heads
        rope = tuple(jnp.asarray(a) for a in rope_tables(head_dim, self.grid_shape))
        rope_ic = tuple(
            jnp.asarray(a) for a in rope_tables(head_dim, self.grid_shape, self.in_context_len)
        )
        keys: list[jax.Array | None] = [None] * self.depth
        if dropout_key is not None and self.dropout_blocks:
            split = jax.random.split(dropout_key, len(self.dropout_blocks))
            for j, i in enumerate(self.dropout_blocks):
                keys[i] = split[j]

        run = layers.maybe_remat(_block_call, self.remat)
        for i, block in enumerate(self.blocks):
            if self.in_context_len and i == self.in_context_start:
                tokens = jnp.broadcast_to(y_emb[:, None], (n, self.in_context_len, y_emb.shape[-1]))
                tokens = tokens + self.in_context_posemb[...].astype(jnp.float32)
                h = jnp.concatenate([tokens, h], axis=1)
            cos, sin = rope if i < self.in_context_start or not self.in_context_len else rope_ic
            h = run(block, h, c, cos, sin, keys[i])
        h = self.final_layer(h[:, self.in_context_len :], c)
        h = layers.unpatchify(h, self.patch_size, self.grid_shape, self.input_shape[-1])
        return h.astype(jnp.float32)

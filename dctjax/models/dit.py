"""DiT with adaLN-Zero (Peebles & Xie 2023) on DCT tokens (dctdiff.md section 8.4), in Flax NNX.

The DCTdiff DiT code was never released; this is the standard DiT on the U-ViT token interface:
Dense(F -> D) in, a fixed 2-D sin-cos position embedding over the token grid, a timestep MLP on a
256-d sinusoid of tau = `time_scale` * t = 999 t (the model multiplies; callers pass t in [0, 1]),
an optional class embedding with a null row (index `num_classes`) for classifier-free guidance,
adaLN-Zero blocks and a zero-initialised adaLN final layer with Dense(D -> F) out. Initialisation
follows the DiT code: xavier-uniform Dense kernels, zero biases, N(0, 0.02^2) timestep MLP and
class table, zero adaLN modulations and output, so the network outputs exactly 0 at init.
There is no learned sigma: the output has the shape of x. Module names follow the DiT code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dctjax.codec import _checks
from dctjax.models import layers

# name -> (embed_dim D, depth, num_heads). 'T' is for tests/quickstart.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (64, 4, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}

LN_EPS = 1e-6  # DiT's LayerNorm(elementwise_affine=False, eps=1e-6)
_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()


def _norm(dim: int, dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> layers.LayerNorm:
    return layers.LayerNorm(
        dim,
        epsilon=LN_EPS,
        use_bias=False,
        use_scale=False,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class TimestepEmbedder(nnx.Module):
    """tau (N,) -> sinusoid (N, 256) -> Dense -> SiLU -> Dense -> (N, D)."""

    def __init__(self, dim: int, frequency_embedding_size: int, *, linear: layers.LinearFactory):
        self.frequency_embedding_size = frequency_embedding_size
        self.linear1 = linear(frequency_embedding_size, dim, kernel_init=layers.normal_002)
        self.linear2 = linear(dim, dim, kernel_init=layers.normal_002)

    def __call__(self, tau: jax.Array, dtype: Any) -> jax.Array:
        emb = layers.timestep_embedding(tau, self.frequency_embedding_size).astype(dtype)
        return self.linear2(jax.nn.silu(self.linear1(emb)))


class DiTBlock(nnx.Module):
    """adaLN-Zero block: x (N, T, D), c (N, D) -> (N, T, D).

    (shift, scale, gate) x (msa, mlp) = Dense(D -> 6D)(SiLU(c)), zero-initialised, so every gate is 0
    and the block is the identity at init.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        attention: str = "auto",
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ):
        linear = layers.make_linear(_xavier, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = _norm(dim, dtype, param_dtype, rngs)
        self.attn = layers.Attention(
            dim, num_heads, qkv_bias=True, linear=linear, implementation=attention
        )
        self.norm2 = _norm(dim, dtype, param_dtype, rngs)
        self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), approximate=True, linear=linear)
        self.adaLN_modulation = linear(dim, 6 * dim, kernel_init=_zeros)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        mod = jnp.split(self.adaLN_modulation(jax.nn.silu(c)), 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa[:, None] * self.attn(layers.modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(
            layers.modulate(self.norm2(x), shift_mlp, scale_mlp)
        )


class FinalLayer(nnx.Module):
    """x (N, T, D), c (N, D) -> Dense(D -> F)(modulate(LN(x), shift, scale)), all zero-initialised."""

    def __init__(self, dim: int, out_dim: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        linear = layers.make_linear(_zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm_final = _norm(dim, dtype, param_dtype, rngs)
        self.linear = linear(dim, out_dim)
        self.adaLN_modulation = linear(dim, 2 * dim)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.adaLN_modulation(jax.nn.silu(c)), 2, axis=-1)
        return self.linear(layers.modulate(self.norm_final(x), shift, scale))


def _block_call(block: DiTBlock, x: jax.Array, c: jax.Array) -> jax.Array:
    return block(x, c)


class DiT(nnx.Module):
    """DiT noise-prediction network on tokens: `model(x, t, y=None)` -> float32 (N, T, F).

    Args:
      input_shape: (T, F), the per-example token shape.
      grid_shape: (gh, gw) with gh * gw = T, tokens in raster order; default: a square grid.
      size: a key of `DIT_SIZES`; explicit embed_dim / depth / num_heads override its values.
      num_classes: 0 for unconditional. With `null_class`, the table has num_classes + 1 rows and
        y=None (or y == num_classes) selects the null row, as in DiT's classifier-free guidance.
      frequency_embedding_size: the width of the timestep sinusoid (256).
      time_scale: tau = time_scale * t (999).
      remat, attention, dtype, param_dtype: as for `UViT`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        grid_shape: Sequence[int] | None = None,
        size: str | None = "S",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        null_class: bool = True,
        frequency_embedding_size: int = 256,
        time_scale: float = 999.0,
        remat: bool = False,
        attention: str = "auto",
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        d, depth, heads = layers.resolve_size(DIT_SIZES, size, embed_dim, depth, num_heads, "DiT")
        if d % 4:
            raise ValueError(
                f"embed_dim={d} must be divisible by 4 (the 2-D sin-cos position embedding)."
            )
        layers.check_mlp_ratio(mlp_ratio)
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != 2:
            raise ValueError(f"input_shape={self.input_shape} must be (T, F): DiT takes tokens.")
        num_tokens, features = self.input_shape
        _checks.check_int_range(num_tokens, "input_shape[0] (tokens)", 1, 1 << 24)
        _checks.check_int_range(features, "input_shape[1] (features)", 1, 1 << 24)
        if grid_shape is None:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(
                    f"grid_shape is needed: {num_tokens} tokens do not form a square grid."
                )
            grid_shape = (side, side)
        self.grid_shape = tuple(int(g) for g in grid_shape)
        if len(self.grid_shape) != 2 or self.grid_shape[0] * self.grid_shape[1] != num_tokens:
            raise ValueError(
                f"grid_shape={self.grid_shape} does not hold input_shape[0]={num_tokens} tokens."
            )
        self.num_classes = layers.check_num_classes(num_classes)
        self.null_class = bool(null_class)
        _checks.check_int_range(frequency_embedding_size, "frequency_embedding_size", 2, 1 << 16)
        self.time_scale = _checks.check_positive(time_scale, "time_scale")
        self.dtype = layers.compute_dtype(dtype)
        param_dtype = layers.compute_dtype(param_dtype, "param_dtype")
        self.embed_dim, self.depth, self.num_heads = d, depth, heads
        self.remat = bool(remat)

        linear = layers.make_linear(_xavier, dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.x_embedder = linear(features, d)
        self.t_embedder = TimestepEmbedder(d, frequency_embedding_size, linear=linear)
        self.y_embedder = (
            nnx.Embed(
                self.num_classes + self.null_class,
                d,
                embedding_init=layers.normal_002,
                dtype=self.dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if self.num_classes
            else None
        )
        blk = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.blocks = nnx.List(
            [DiTBlock(d, heads, mlp_ratio, attention=attention, **blk) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(d, features, **blk)

    @property
    def null_label(self) -> int:
        """The label of the null (unconditional) row, for CFG label dropout and sampling."""
        if not (self.num_classes and self.null_class):
            raise ValueError("this DiT has no null class (num_classes=0 or null_class=False).")
        return self.num_classes

    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
        """x (N, T, F); t () or (N,) in [0, 1]; y (N,) int, or None -> float32 (N, T, F)."""
        t = layers.check_time_inputs(x, t, self.input_shape, "DiT")
        y = layers.check_labels(y, x.shape[0], "DiT")
        if y is not None and not self.num_classes:
            raise ValueError(
                "DiT: class labels y were given to an unconditional model (num_classes=0)."
            )
        if y is None and self.num_classes:
            if not self.null_class:
                raise ValueError(
                    f"DiT: this model is class-conditional (num_classes={self.num_classes}); pass y."
                )
            y = jnp.full((x.shape[0],), self.num_classes, jnp.int32)

        pos = layers.sincos_pos_embed_2d(self.embed_dim, self.grid_shape)  # a constant, not a Param
        h = self.x_embedder(x.astype(self.dtype)) + jnp.asarray(pos, self.dtype)[None]
        c = self.t_embedder(self.time_scale * t, self.dtype)
        if y is not None:
            c = c + self.y_embedder(y)
        run = layers.maybe_remat(_block_call, self.remat)
        for block in self.blocks:
            h = run(block, h, c)
        return self.final_layer(h, c).astype(jnp.float32)

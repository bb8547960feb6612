"""U-ViT (Bao et al. 2023) as used by DCTdiff (dctdiff.md section 8), in Flax NNX.

One class covers both inputs the DCTdiff paper compares:
- DCT tokens (`patch_size=None`): x (N, T, F), token embedding Dense(F -> D), head Dense(D -> F).
- pixels (`patch_size=p`, the baofff/U-ViT baseline): x (N, H, W, C) in NHWC, conv patch embedding
  (p x p, stride p, C -> D), head Dense(D -> p*p*C), unpatchify, then a 3x3 conv (`conv=True`).

Time convention: the model takes continuous t in [0, 1] and forms the network time input
tau = `time_scale` * t = 999 t itself (as the reference's `nnet(x, t * 999)`); callers never
multiply by 999. The time token is the sinusoid of tau (cosine half first) with no MLP.

Layout: tokens [class?, time, x_1..x_T] + learned position embedding; depth//2 in-blocks whose
outputs are pushed on a stack, a mid-block, depth//2 out-blocks that each start with
Dense(2D -> D)(concat[x, stack.pop()]); final LN -> head -> drop the extra tokens.
Module names follow the reference (`patch_embed`, `in_blocks`, `mid_block`, `out_blocks`,
`skip_linear`, `decoder_pred`, `final_layer`, ...) so PyTorch weights map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dctjax.codec import _checks
from dctjax.models import layers

# name -> (embed_dim D, depth, num_heads); dctdiff.md 8.3. 'T' and 'XS' are for tests/quickstart.
UVIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (64, 4, 4),
    "XS": (256, 6, 4),
    "S": (512, 12, 8),
    "M": (768, 16, 12),
    "M18": (768, 18, 12),
    "M20": (768, 20, 12),
    "L": (1024, 20, 16),
    "H": (1152, 28, 16),
}

LN_EPS = 1e-5  # PyTorch's default, used by the reference (Flax defaults to 1e-6)


class Block(nnx.Module):
    """Pre-LN transformer block, optionally preceded by the long-skip Dense(2D -> D).

    x (N, T, D) [, skip (N, T, D)] -> (N, T, D).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        qkv_bias: bool,
        skip: bool,
        attention: str = "auto",
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ):
        linear = layers.make_linear(
            layers.normal_002, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        norm = dict(epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.skip_linear = linear(2 * dim, dim) if skip else None
        self.norm1 = layers.LayerNorm(dim, **norm)
        self.attn = layers.Attention(
            dim, num_heads, qkv_bias=qkv_bias, linear=linear, implementation=attention
        )
        self.norm2 = layers.LayerNorm(dim, **norm)
        self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), approximate=False, linear=linear)

    def __call__(self, x: jax.Array, skip: jax.Array | None = None) -> jax.Array:
        if self.skip_linear is not None:
            x = self.skip_linear(jnp.concatenate([x, skip], axis=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _block_call(block: Block, x: jax.Array, skip: jax.Array | None) -> jax.Array:
    return block(x, skip)


class UViT(nnx.Module):
    """U-ViT noise-prediction network: `model(x, t, y=None)` -> float32, same shape as x.

    Args:
      input_shape: per-example shape of x: (T, F) DCT tokens, or (H, W, C) pixels with patch_size.
      size: a key of `UVIT_SIZES`; explicit embed_dim / depth / num_heads override its values.
      mlp_ratio, qkv_bias: MLP hidden = mlp_ratio * D; qkv Dense bias (the reference: 4, False).
      num_classes: 0 for unconditional; else a class token, nnx.Embed N(0, 1), before the time token.
      patch_size: None for tokens; p for the pixel baseline (H and W divisible by p).
      conv: the final 3x3 conv of the pixel baseline (default: True with pixels; tokens: no conv).
      time_scale: tau = time_scale * t (999, the reference's network time input).
      remat: gradient checkpointing of every block (the reference's `use_checkpoint`).
      attention: 'auto' (cuDNN flash attention where it runs, else XLA), 'xla' or 'cudnn'
        (`layers.attention_implementation`).
      dtype, param_dtype: compute and parameter dtypes (e.g. bfloat16 and float32).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        size: str | None = "S",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        num_classes: int = 0,
        patch_size: int | None = None,
        conv: bool | None = None,
        time_scale: float = 999.0,
        remat: bool = False,
        attention: str = "auto",
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        d, depth, heads = layers.resolve_size(
            UVIT_SIZES, size, embed_dim, depth, num_heads, "U-ViT"
        )
        layers.check_mlp_ratio(mlp_ratio)
        self.num_classes = layers.check_num_classes(num_classes)
        self.time_scale = _checks.check_positive(time_scale, "time_scale")
        self.dtype = layers.compute_dtype(dtype)
        param_dtype = layers.compute_dtype(param_dtype, "param_dtype")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.embed_dim, self.depth, self.num_heads = d, depth, heads
        self.patch_size = patch_size
        self.remat = bool(remat)
        self.extras = 2 if self.num_classes else 1

        linear = layers.make_linear(
            layers.normal_002, dtype=self.dtype, param_dtype=param_dtype, rngs=rngs
        )
        if patch_size is None:
            self._init_token_io(conv, linear)
        else:
            self._init_pixel_io(patch_size, conv, linear, param_dtype, rngs)

        self.label_emb = (
            nnx.Embed(
                self.num_classes,
                d,
                embedding_init=nnx.initializers.normal(1.0),
                dtype=self.dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if self.num_classes
            else None
        )
        self.pos_embed = nnx.Param(
            layers.normal_002(rngs.params(), (1, self.extras + self.num_tokens, d), param_dtype)
        )
        block = dict(
            qkv_bias=qkv_bias,
            attention=attention,
            dtype=self.dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.in_blocks = nnx.List(
            [Block(d, heads, mlp_ratio, skip=False, **block) for _ in range(depth // 2)]
        )
        self.mid_block = Block(d, heads, mlp_ratio, skip=False, **block)
        self.out_blocks = nnx.List(
            [Block(d, heads, mlp_ratio, skip=True, **block) for _ in range(depth // 2)]
        )
        self.norm = layers.LayerNorm(
            d, epsilon=LN_EPS, dtype=self.dtype, param_dtype=param_dtype, rngs=rngs
        )

    def _init_token_io(self, conv: bool | None, linear: layers.LinearFactory) -> None:
        """DCT tokens (T, F): Dense(F -> D) in, Dense(D -> F) out, no conv."""
        if conv:
            raise ValueError("conv=True (the final 3x3 conv) needs pixels: set patch_size.")
        if len(self.input_shape) != 2:
            raise ValueError(
                f"input_shape={self.input_shape} must be (T, F) for DCT tokens; for pixels "
                "(H, W, C) set patch_size."
            )
        num_tokens, features = self.input_shape
        _checks.check_int_range(num_tokens, "input_shape[0] (tokens)", 1, 1 << 24)
        _checks.check_int_range(features, "input_shape[1] (features)", 1, 1 << 24)
        self.conv, self.grid_shape, self.num_tokens = False, None, num_tokens
        self.patch_embed = linear(features, self.embed_dim)
        self.decoder_pred = linear(self.embed_dim, features)
        self.final_layer = None

    def _init_pixel_io(
        self,
        patch_size: int,
        conv: bool | None,
        linear: layers.LinearFactory,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ) -> None:
        """Pixels (H, W, C): conv p x p stride p in, Dense(D -> p*p*C) + unpatchify + 3x3 conv out.

        The convs keep PyTorch's default init (the reference re-initialises only Linear layers).
        """
        p = _checks.check_int_range(patch_size, "patch_size", 1, 1 << 12)
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape={self.input_shape} must be (H, W, C) with patch_size.")
        h, w, c = self.input_shape
        if h < 1 or w < 1 or c < 1 or h % p or w % p:
            raise ValueError(
                f"input_shape={self.input_shape}: the image size {h}x{w} is not divisible by "
                f"patch_size={p}."
            )
        self.patch_size, self.conv = p, True if conv is None else bool(conv)
        self.grid_shape = (h // p, w // p)
        self.num_tokens = self.grid_shape[0] * self.grid_shape[1]

        def torch_conv(cin: int, cout: int, k: int, stride: int, pad: int) -> nnx.Conv:
            return nnx.Conv(
                cin,
                cout,
                (k, k),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                kernel_init=layers.torch_conv_kernel_init,
                bias_init=layers.torch_bias_init(cin * k * k),
                dtype=self.dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        self.patch_embed = torch_conv(c, self.embed_dim, p, p, 0)
        self.decoder_pred = linear(self.embed_dim, p * p * c)
        self.final_layer = torch_conv(c, c, 3, 1, 1) if self.conv else None

    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
        """x (N, T, F) or (N, H, W, C); t () or (N,) in [0, 1]; y (N,) int or None -> float32 like x."""
        t = layers.check_time_inputs(x, t, self.input_shape, "UViT")
        y = layers.check_labels(y, x.shape[0], "UViT")
        if y is not None and not self.num_classes:
            raise ValueError(
                "UViT: class labels y were given to an unconditional model (num_classes=0)."
            )
        if y is None and self.num_classes:
            raise ValueError(
                f"UViT: this model is class-conditional (num_classes={self.num_classes}); pass y."
            )

        h = self.patch_embed(x.astype(self.dtype))
        h = h.reshape(x.shape[0], self.num_tokens, self.embed_dim)
        tau = self.time_scale * t
        extras = [layers.timestep_embedding(tau, self.embed_dim).astype(self.dtype)[:, None]]
        if y is not None:
            extras.insert(0, self.label_emb(y)[:, None])  # [class, time, tokens]
        h = jnp.concatenate([*extras, h], axis=1) + self.pos_embed[...].astype(self.dtype)

        run = layers.maybe_remat(_block_call, self.remat)
        skips = []
        for block in self.in_blocks:
            h = run(block, h, None)
            skips.append(h)
        h = run(self.mid_block, h, None)
        for block in self.out_blocks:
            h = run(block, h, skips.pop())  # the first out-block pairs with the last in-block

        h = self.decoder_pred(self.norm(h))[:, self.extras :]
        if self.patch_size is not None:
            h = layers.unpatchify(h, self.patch_size, self.grid_shape, self.input_shape[-1])
            if self.final_layer is not None:
                h = self.final_layer(h)
        return h.astype(jnp.float32)

"""The latent-diffusion `AutoencoderKL` (SD-VAE) with an optional PatchGAN discriminator, in Flax NNX.

spectral.md section 4.2, following CompVis latent-diffusion (`ldm/modules/diffusionmodules/model.py`:
`Encoder`, `Decoder`, `ResnetBlock`, `AttnBlock`, `Downsample`, `Upsample`;
`ldm/models/autoencoder.py::AutoencoderKL`; `ldm/modules/distributions/distributions.py::
DiagonalGaussianDistribution`) and taming-transformers (`taming/modules/discriminator/model.py::
NLayerDiscriminator`, `weights_init`), in NHWC:

- Encoder: conv_in 3x3 -> per level `num_res_blocks` ResnetBlocks (each followed by an AttnBlock on
  the levels in `attn_levels`, LDM's `attn_resolutions`) and, except on the last level, a
  Downsample (zero pad 1 bottom/right, 3x3 stride-2 VALID conv) -> mid ResnetBlock, AttnBlock,
  ResnetBlock -> GroupNorm + swish -> conv_out 3x3 to 2 z (`double_z`) or z channels; then
  quant_conv 1x1. The posterior is a diagonal Gaussian, logvar clipped to [-30, 20].
- Decoder: post_quant_conv 1x1 -> conv_in 3x3 -> mid -> per level, from the last, `num_res_blocks + 1`
  ResnetBlocks (+ AttnBlocks) and, except on level 0, an Upsample (nearest x2, 3x3 conv) ->
  GroupNorm + swish -> conv_out 3x3 to the image channels.
- ResnetBlock: GroupNorm, swish, conv1 3x3, GroupNorm, swish, conv2 3x3 (the reference's dropout is
  0 and omitted), a 1x1 nin_shortcut when the channel count changes, residual. No time embedding.
- AttnBlock: GroupNorm, 1x1 q, k, v, a single head softmax(q k^T / sqrt(C)) v over the H W
  positions, 1x1 proj_out, residual.
- Every GroupNorm has eps 1e-6 and a learnable scale and bias; `norm_groups` groups (32 in LDM).

Module names mirror the reference's state dict (`encoder.down[i].block[j].norm1`, ..., `decoder.up[i]`
indexed by level as LDM's `up.insert(0, ...)`), so PyTorch weights convert by transposing the conv
kernels (out, in, kh, kw) -> (kh, kw, in, out) and renaming weight -> kernel / scale.

Precision as the reference under bf16 autocast: with dtype=bfloat16 the convs and the attention
matmuls compute in bfloat16 (softmax in float32), while the GroupNorm statistics and outputs, and so
the residual streams, stay float32; the latents, logits and images returned are float32.

Initialisation as PyTorch's defaults: every conv kernel and bias U(+-1/sqrt(fan_in)), fan_in = in kh
kw (kaiming-uniform with a = sqrt(5)); GroupNorm scale 1, bias 0. The discriminator follows taming's
`weights_init` (conv kernels N(0, 0.02^2), norm scale N(1, 0.02^2), norm bias 0, conv biases at the
PyTorch default). The model's state is nnx.Param only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dctjax.codec import _checks
from dctjax.models import layers

# name -> the Encoder/Decoder configuration. 'ldm_f16d16' is spectral.md 4.2 (channels
# [128, 128, 256, 256, 512], f16, 16 latent channels, attention on the lowest resolution level, LDM's
# attn_resolutions=[16] at 256 px); 'ldm_f8d4' is Stable Diffusion's VAE (f8, 4 channels, attention
# only in the mid blocks); 'T' is a CPU size for tests (f2).
AUTOENCODER_SIZES: dict[str, dict[str, Any]] = {
    "T": dict(
        ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, attn_levels=(1,), norm_groups=8
    ),
    "ldm_f8d4": dict(
        ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, attn_levels=(), norm_groups=32
    ),
    "ldm_f16d16": dict(
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        z_channels=16,
        attn_levels=(4,),
        norm_groups=32,
    ),
}

# The keys a `discriminator` mapping may hold, with taming's defaults (disc_num_layers=3, ndf=64).
DISCRIMINATOR_DEFAULTS: dict[str, int] = {"ndf": 64, "n_layers": 3}

GROUP_NORM_EPS = 1e-6
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d's default
LOGVAR_RANGE = (-30.0, 20.0)
LEAKY_SLOPE = 0.2


def registry_sizes() -> dict[str, tuple[int, int, int]]:
    """(ch, downsampling factor, latent channels) per size, for `model_sizes`."""
    return {
        name: (s["ch"], 2 ** (len(s["ch_mult"]) - 1), s["z_channels"])
        for name, s in AUTOENCODER_SIZES.items()
    }


def swish(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(x)


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    strides: int = 1,
    padding: Any = "SAME",
    use_bias: bool = True,
    kernel_init: layers.Initializer = layers.torch_conv_kernel_init,
    dtype: Any,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """An nnx.Conv with PyTorch's default bias init (and kernel init unless given)."""
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=(strides, strides),
        padding=padding,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=layers.torch_bias_init(in_ch * kernel * kernel),
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


# ----------------------------------------------------------------------------- norms


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm(groups, C, eps=1e-6) on NHWC, statistics and output in float32."""

    def __init__(self, channels: int, groups: int, *, eps: float = GROUP_NORM_EPS):
        if channels % groups:
            raise ValueError(
                f"GroupNorm: {channels} channels are not divisible by norm_groups={groups}; pass "
                "norm_groups= a divisor of every channel count (ch * ch_mult[i])."
            )
        self.groups, self.eps = int(groups), float(eps)
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        xg = x.astype(jnp.float32).reshape(n, h, w, self.groups, c // self.groups)
        mean = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(xg - mean), axis=(1, 2, 4), keepdims=True)
        y = ((xg - mean) * jax.lax.rsqrt(var + self.eps)).reshape(n, h, w, c)
        return y * self.scale[...] + self.bias[...]


class BatchStatNorm(nnx.Module):
    """torch.nn.BatchNorm2d in training mode, without running averages: x normalised by the batch's
    per-channel mean and biased variance over (N, H, W), eps 1e-5, then a learnable scale and bias
    (taming init N(1, 0.02^2) and 0). Float32 statistics and output."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, eps: float = BATCH_NORM_EPS):
        self.eps = float(eps)
        scale = 1.0 + 0.02 * jax.random.normal(rngs.params(), (channels,), jnp.float32)
        self.scale = nnx.Param(scale)
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


# ----------------------------------------------------------------------------- blocks


class ResnetBlock(nnx.Module):
    """x (N, H, W, C_in) -> float32 (N, H, W, C_out); LDM's ResnetBlock with temb_channels=0."""

    def __init__(self, in_ch: int, out_ch: int, *, groups: int, dtype: Any, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(in_ch, groups)
        self.conv1 = _conv(in_ch, out_ch, 3, dtype=dtype, rngs=rngs)
        self.norm2 = GroupNorm(out_ch, groups)
        self.conv2 = _conv(out_ch, out_ch, 3, dtype=dtype, rngs=rngs)
        self.nin_shortcut = (
            _conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs) if in_ch != out_ch else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x.astype(jnp.float32) + h.astype(jnp.float32)


class AttnBlock(nnx.Module):
    """x (N, H, W, C) -> float32 x + proj_out(softmax(q k^T / sqrt(C)) v), one head over H W."""

    def __init__(self, channels: int, *, groups: int, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm = GroupNorm(channels, groups)
        self.q = _conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.k = _conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.v = _conv(channels, channels, 1, dtype=dtype, rngs=rngs)
        self.proj_out = _conv(channels, channels, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(n, h * w, c) for m in (self.q, self.k, self.v))
        logits = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits * (c**-0.5), axis=-1).astype(self.dtype)
        out = jnp.einsum("nqk,nkc->nqc", weights, v.astype(self.dtype)).reshape(n, h, w, c)
        return x.astype(jnp.float32) + self.proj_out(out).astype(jnp.float32)


class Downsample(nnx.Module):
    """(N, H, W, C) -> (N, H/2, W/2, C): zero pad (0, 1) on H and W, then a 3x3 stride-2 VALID conv."""

    def __init__(self, channels: int, *, dtype: Any, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, strides=2, padding="VALID", dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
    """(N, H, W, C) -> (N, 2H, 2W, C): nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int, *, dtype: Any, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class Level(nnx.Module):
    """One resolution level: ResnetBlocks `block[j]`, each followed by `attn[j]` when present, then
    `downsample` (encoder) or `upsample` (decoder) when present."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        num_blocks: int,
        *,
        attention: bool,
        resample: str | None,
        groups: int,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        kw = dict(groups=groups, dtype=dtype, rngs=rngs)
        chans = [in_ch] + [out_ch] * num_blocks
        self.block = nnx.List([ResnetBlock(chans[j], out_ch, **kw) for j in range(num_blocks)])
        self.attn = nnx.List(
            [AttnBlock(out_ch, **kw) for _ in range(num_blocks)] if attention else []
        )
        rs = dict(dtype=dtype, rngs=rngs)
        self.downsample = Downsample(out_ch, **rs) if resample == "down" else None
        self.upsample = Upsample(out_ch, **rs) if resample == "up" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class MidBlock(nnx.Module):
    """block_1 (ResnetBlock), attn_1 (AttnBlock), block_2 (ResnetBlock) at constant width."""

    def __init__(self, channels: int, *, groups: int, dtype: Any, rngs: nnx.Rngs):
        kw = dict(groups=groups, dtype=dtype, rngs=rngs)
        self.block_1 = ResnetBlock(channels, channels, **kw)
        self.attn_1 = AttnBlock(channels, **kw)
        self.block_2 = ResnetBlock(channels, channels, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nnx.Module):
    """x (N, H, W, C_img) -> (N, H/f, W/f, 2 z or z), the conv_out output in the compute dtype."""

    def __init__(
        self,
        in_ch: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        out_ch: int,
        *,
        attn_levels: Sequence[int],
        groups: int,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        kw = dict(groups=groups, dtype=dtype, rngs=rngs)
        n_levels = len(ch_mult)
        self.conv_in = _conv(in_ch, ch, 3, dtype=dtype, rngs=rngs)
        in_mult = (1, *ch_mult)
        self.down = nnx.List(
            [
                Level(
                    ch * in_mult[i],
                    ch * ch_mult[i],
                    num_res_blocks,
                    attention=i in attn_levels,
                    resample="down" if i != n_levels - 1 else None,
                    **kw,
                )
                for i in range(n_levels)
            ]
        )
        top = ch * ch_mult[-1]
        self.mid = MidBlock(top, **kw)
        self.norm_out = GroupNorm(top, groups)
        self.conv_out = _conv(top, out_ch, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class Decoder(nnx.Module):
    """z (N, h, w, z) -> (image (N, h f, w f, C_img), hidden): `hidden` is the float32 input of
    `conv_out` (norm_out + swish), the output conv_out(hidden) in the compute dtype."""

    def __init__(
        self,
        z_ch: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        out_ch: int,
        *,
        attn_levels: Sequence[int],
        groups: int,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        kw = dict(groups=groups, dtype=dtype, rngs=rngs)
        n_levels = len(ch_mult)
        top = ch * ch_mult[-1]
        self.conv_in = _conv(z_ch, top, 3, dtype=dtype, rngs=rngs)
        self.mid = MidBlock(top, **kw)
        block_in = [ch * ch_mult[i + 1] if i < n_levels - 1 else top for i in range(n_levels)]
        self.up = nnx.List(  # indexed by level; run from the last level to level 0
            [
                Level(
                    block_in[i],
                    ch * ch_mult[i],
                    num_res_blocks + 1,
                    attention=i in attn_levels,
                    resample="up" if i != 0 else None,
                    **kw,
                )
                for i in range(n_levels)
            ]
        )
        self.norm_out = GroupNorm(ch * ch_mult[0], groups)
        # 3x3 SAME (= PyTorch padding 1); `Autoencoder.decode` documents its reproduction.
        self.conv_out = _conv(ch * ch_mult[0], out_ch, 3, dtype=dtype, rngs=rngs)

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        hidden = swish(self.norm_out(h))
        return self.conv_out(hidden), hidden


class NLayerDiscriminator(nnx.Module):
    """taming's PatchGAN: x (N, H, W, C) -> float32 logits (N, h', w', 1).

    Conv 4x4 s2 p1 + LeakyReLU(0.2); for n = 1..n_layers-1 Conv 4x4 s2 p1 (no bias) to
    ndf min(2^n, 8) + norm + LeakyReLU; Conv 4x4 s1 p1 (no bias) to ndf min(2^n_layers, 8) + norm +
    LeakyReLU; Conv 4x4 s1 p1 to 1. Padding is 1 on each side (PyTorch's), not SAME. The norm is
    the reference's BatchNorm2d as it runs in training mode, the only mode the discriminator is used
    in: batch statistics with a learnable scale and bias and no running averages (`BatchStatNorm`),
    so the state stays nnx.Param only. `convs[i]` and `norms[i - 1]` are taming's `main` layers.
    """

    def __init__(self, in_ch: int, *, ndf: int, n_layers: int, dtype: Any, rngs: nnx.Rngs):
        pad = ((1, 1), (1, 1))
        conv = dict(padding=pad, kernel_init=layers.normal_002, dtype=dtype, rngs=rngs)
        mults = [min(2**n, 8) for n in range(n_layers + 1)]
        convs = [_conv(in_ch, ndf, 4, strides=2, **conv)]
        norms = []
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1
            cin, cout = ndf * mults[n - 1], ndf * mults[n]
            convs.append(_conv(cin, cout, 4, strides=stride, use_bias=False, **conv))
            norms.append(BatchStatNorm(cout, rngs=rngs))
        convs.append(_conv(ndf * mults[n_layers], 1, 4, **conv))
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.leaky_relu(self.convs[0](x).astype(jnp.float32), LEAKY_SLOPE)
        for conv, norm in zip(self.convs[1:-1], self.norms, strict=True):
            h = jax.nn.leaky_relu(norm(conv(h)), LEAKY_SLOPE)
        return self.convs[-1](h).astype(jnp.float32)


# ----------------------------------------------------------------------------- the model


def check_discriminator(discriminator: Mapping[str, Any] | None) -> dict[str, int] | None:
    """None, or a mapping of `DISCRIMINATOR_DEFAULTS` keys -> the full, checked keyword dict."""
    if discriminator is None:
        return None
    if hasattr(discriminator, "to_dict"):  # an ml_collections.ConfigDict
        discriminator = discriminator.to_dict()
    if not isinstance(discriminator, Mapping):
        raise ValueError(
            "discriminator must be None (no GAN) or a mapping like dict(ndf=64, n_layers=3), got "
            f"{type(discriminator).__name__}."
        )
    unknown = sorted(set(discriminator) - set(DISCRIMINATOR_DEFAULTS))
    if unknown:
        raise ValueError(
            f"discriminator has unknown key(s) {unknown}; valid keys are "
            f"{list(DISCRIMINATOR_DEFAULTS)}."
        )
    d = {**DISCRIMINATOR_DEFAULTS, **discriminator}
    d["ndf"] = _checks.check_int_range(d["ndf"], "discriminator ndf", 1, 1 << 12)
    d["n_layers"] = _checks.check_int_range(d["n_layers"], "discriminator n_layers", 1, 8)
    return d


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over (H, W, C) -> float32 (N,), as
    DiagonalGaussianDistribution.kl()."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return jnp.sum(kl, axis=tuple(range(1, mean.ndim)))


class Autoencoder(nnx.Module):
    """LDM AutoencoderKL: `encode(x)` -> (mean, logvar), `decode(z)` -> image, `__call__(x, key)`.

    Args:
      input_shape: (H, W, C), the per-example image shape; H and W divisible by the downsampling
        factor 2^(len(ch_mult) - 1). The image channels C are the Encoder's input and the
        Decoder's (and discriminator's) output/input channels (3 for RGB).
      size: a key of `AUTOENCODER_SIZES` ('ldm_f16d16', 'ldm_f8d4', 'T') or None; the explicit
        arguments below that are not None override its values.
      ch, ch_mult: the base width and the per-level multipliers (level i has ch ch_mult[i] channels).
      num_res_blocks: ResnetBlocks per encoder level (the decoder has one more per level).
      z_channels: the latent channels (LDM's z_channels = embed_dim).
      attn_levels: the levels (indices into ch_mult) with an AttnBlock after each ResnetBlock, in
        the encoder and the decoder (the mid blocks always have one).
      norm_groups: the GroupNorm group count; it must divide every level's channel count.
      double_z: True for the KL autoencoder (the encoder predicts mean and logvar); False for a
        deterministic autoencoder (`encode` returns (mean, None)).
      discriminator: None (no GAN) or a mapping of `DISCRIMINATOR_DEFAULTS` keys (ndf, n_layers;
        {} gives taming's 64, 3) that builds `self.discriminator`, an `NLayerDiscriminator`.
      dtype: the compute dtype of the convs and attention (float32 or bfloat16); parameters,
        GroupNorm and every returned array are float32.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        size: str | None = "ldm_f16d16",
        ch: int | None = None,
        ch_mult: Sequence[int] | None = None,
        num_res_blocks: int | None = None,
        z_channels: int | None = None,
        attn_levels: Sequence[int] | None = None,
        norm_groups: int | None = None,
        double_z: bool = True,
        discriminator: Mapping[str, Any] | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if size is not None and size not in AUTOENCODER_SIZES:
            raise ValueError(
                f"unknown Autoencoder size={size!r}; choose one of {sorted(AUTOENCODER_SIZES)}."
            )
        base = AUTOENCODER_SIZES[size] if size is not None else {}
        given = dict(
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            z_channels=z_channels,
            attn_levels=attn_levels,
            norm_groups=norm_groups,
        )
        cfg = {k: v if v is not None else base.get(k) for k, v in given.items()}
        for k, v in cfg.items():
            if v is None:
                raise ValueError(
                    f"{k} is not set: pass size= one of {sorted(AUTOENCODER_SIZES)} or {k}=."
                )
        self.ch = _checks.check_int_range(cfg["ch"], "ch", 1, 1 << 14)
        self.ch_mult = tuple(
            _checks.check_int_range(m, "ch_mult[i]", 1, 1 << 10) for m in cfg["ch_mult"]
        )
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level.")
        self.num_res_blocks = _checks.check_int_range(
            cfg["num_res_blocks"], "num_res_blocks", 1, 64
        )
        self.z_channels = _checks.check_int_range(cfg["z_channels"], "z_channels", 1, 1 << 12)
        n_levels = len(self.ch_mult)
        self.attn_levels = tuple(
            sorted(
                {
                    _checks.check_int_range(i, "attn_levels[i]", 0, n_levels - 1)
                    for i in cfg["attn_levels"]
                }
            )
        )
        self.norm_groups = _checks.check_int_range(cfg["norm_groups"], "norm_groups", 1, 1 << 14)
        bad = sorted({self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups})
        if bad:
            raise ValueError(
                f"norm_groups={self.norm_groups} does not divide the channel count(s) {bad} "
                f"(ch={self.ch} x ch_mult={self.ch_mult}); pass a norm_groups that divides them."
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"input_shape={self.input_shape} must be (H, W, C), e.g. (256, 256, 3)."
            )
        h, w, c = self.input_shape
        _checks.check_int_range(c, "input_shape[2] (channels)", 1, 1 << 12)
        self.downsample_factor = f = 2 ** (n_levels - 1)
        if h < 1 or w < 1 or h % f or w % f:
            raise ValueError(
                f"input_shape={self.input_shape}: the image size {h}x{w} is not divisible by the "
                f"downsampling factor {f} = 2^(len(ch_mult) - 1) of ch_mult={self.ch_mult}; crop or "
                f"resize the images to a multiple of {f}, or use a config with fewer levels."
            )
        self.double_z = bool(double_z)
        self.latent_channels = self.z_channels
        self.latent_shape = (h // f, w // f, self.z_channels)
        self.dtype = layers.compute_dtype(dtype)
        self.discriminator_config = check_discriminator(discriminator)

        zc = self.z_channels
        moments = 2 * zc if self.double_z else zc
        arch = dict(
            attn_levels=self.attn_levels, groups=self.norm_groups, dtype=self.dtype, rngs=rngs
        )
        self.encoder = Encoder(c, self.ch, self.ch_mult, self.num_res_blocks, moments, **arch)
        self.quant_conv = _conv(moments, moments, 1, dtype=self.dtype, rngs=rngs)
        self.post_quant_conv = _conv(zc, zc, 1, dtype=self.dtype, rngs=rngs)
        self.decoder = Decoder(zc, self.ch, self.ch_mult, self.num_res_blocks, c, **arch)
        self.discriminator = (
            NLayerDiscriminator(c, **self.discriminator_config, dtype=self.dtype, rngs=rngs)
            if self.discriminator_config is not None
            else None
        )

    def _check_spatial(self, x: jax.Array, name: str, channels: int, multiple: int) -> None:
        _checks.check_rank(x, 4, name, "batch, height, width, channels")
        if x.shape[-1] != channels:
            raise ValueError(
                f"Autoencoder: {name} must have {channels} channels (NHWC), got shape {x.shape}."
            )
        if multiple > 1:
            _checks.check_divisible(x.shape[1], x.shape[2], multiple, f"Autoencoder {name}")

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """x (N, H, W, C) in [-1, 1] -> float32 (mean, logvar), each (N, H/f, W/f, z); logvar is
        clipped to [-30, 20], and None when double_z=False."""
        self._check_spatial(x, "x", self.input_shape[-1], self.downsample_factor)
        moments = self.quant_conv(self.encoder(x.astype(self.dtype))).astype(jnp.float32)
        if not self.double_z:
            return moments, None
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(
        self, z: jax.Array, return_hidden: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """z (N, h, w, z) -> float32 image (N, h f, w f, C), or (image, hidden) with return_hidden.

        `hidden` (N, h f, w f, ch ch_mult[0]) float32 is the input of `self.decoder.conv_out`, a 3x3
        SAME nnx.Conv, so for a loss's gradient w.r.t. its kernel (the adaptive GAN weight)
          jax.lax.conv_general_dilated(hidden, kernel, (1, 1), 'SAME',
              dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + bias
        reproduces the image with kernel, bias = conv_out.kernel[...], conv_out.bias[...] (exactly
        in float32; with dtype=bfloat16 cast hidden and kernel to bfloat16 first, as the conv does).
        """
        self._check_spatial(z, "z", self.z_channels, 1)
        z = self.post_quant_conv(z.astype(self.dtype))
        image, hidden = self.decoder(z)
        image = image.astype(jnp.float32)
        return (image, hidden) if return_hidden else image

    def sample(self, mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
        """A posterior sample mean + exp(logvar / 2) eps, eps ~ N(0, 1), float32 of mean's shape."""
        if logvar is None:
            raise ValueError(
                "Autoencoder.sample: logvar is None (double_z=False has no posterior)."
            )
        eps = jax.random.normal(key, mean.shape, jnp.float32)
        return mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps

    def discriminate(self, x: jax.Array) -> jax.Array:
        """x (N, H, W, C) -> float32 PatchGAN logits (N, h', w', 1), statistics over this batch."""
        if self.discriminator is None:
            raise ValueError(
                "Autoencoder.discriminate: no discriminator; build the model with "
                "discriminator=dict(ndf=64, n_layers=3)."
            )
        self._check_spatial(x, "x", self.input_shape[-1], 1)
        return self.discriminator(x.astype(self.dtype))

    def __call__(
        self, x: jax.Array, key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array]:
        """x (N, H, W, C) -> (reconstruction, mean, logvar, z), all float32; z is a posterior sample
        when `key` is given and double_z, else the mean."""
        mean, logvar = self.encode(x)
        z = self.sample(mean, logvar, key) if key is not None and self.double_z else mean
        return self.decode(z), mean, logvar, z

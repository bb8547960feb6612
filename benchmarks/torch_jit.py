"""A PyTorch transcription of JiT (LTH14/JiT `model_jit.py` + `util/model_util.py`) with the
Spectral Forcing patch embedding of WeichenFan/Spectral_Forcing (NCHW). The parity tests
(tests/models/test_jit.py) use it as their oracle, `benchmarks/torch_jit_step.py` as the PyTorch side.

Written from the reference code independently of `dctjax.models.jit`: module names follow the
reference (`x_embedder.proj1`, `t_embedder.mlp.0`, `blocks.i.attn.q_norm.weight`, ...). The Spectral
Forcing low-pass is a separate NumPy/SciPy implementation (`scipy.fft.dctn(norm='ortho')` per
window and channel, mask sigmoid(kappa (c_min + (c_max - c_min) clip(t) - r))), applied to the
input before the channel-major linear patch embedding; `torch_sf_filter` is the same operator in
torch matrix form (the reference's own form), for timing. Deviations from the reference: the 2-D
RoPE and pos-embed grid may be non-square (gh, gw), and dropout is not modelled (eval).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- model_util


def rotate_half(x):
    """'... (d r) -> ... d r', (x1, x2) -> (-x2, x1), back to '... (d r)'."""
    x = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).reshape(*x.shape[:-2], -1)


class VisionRotaryEmbeddingFast(nn.Module):
    """The reference's 'lang' frequencies, theta 1e4, with a (gh, gw) grid for pt_seq_len."""

    def __init__(self, dim, grid, num_cls_token=0, theta=10000):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))

        def axis(n):
            t = torch.arange(n) / n * n
            f = torch.einsum("..., f -> ... f", t, freqs)
            return f.repeat_interleave(2, dim=-1)  # '... n -> ... (n r)', r=2

        gh, gw = grid
        fh, fw = axis(gh), axis(gw)
        # broadcat((freqs[:, None, :], freqs[None, :, :]), dim=-1)
        freqs = torch.cat(
            [fh[:, None, :].expand(gh, gw, -1), fw[None, :, :].expand(gh, gw, -1)], dim=-1
        )
        freqs = freqs.reshape(-1, freqs.shape[-1])
        cos, sin = freqs.cos(), freqs.sin()
        if num_cls_token > 0:
            cos = torch.cat([torch.ones(num_cls_token, cos.shape[1]), cos], dim=0)
            sin = torch.cat([torch.zeros(num_cls_token, sin.shape[1]), sin], dim=0)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def forward(self, t):
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


class RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid):
    gh, gw = grid
    g = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))  # w first
    g = np.stack(g, axis=0).reshape([2, 1, gh, gw])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, g[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, g[1])
    return np.concatenate([emb_h, emb_w], axis=1)


# ----------------------------------------------------------------------------- Spectral Forcing


def sf_filter(x, t, window_size=None, kappa=30.0, c_min=0.05, c_max=1.0, fixed_scale=None):
    """x (B, C, H, W) numpy, t (B,) -> IDCT(DCT(x) * M_t) per channel and window (float64)."""
    x = np.asarray(x, np.float64)
    b, c, h, w = x.shape
    n = h if window_size is None else window_size
    assert h == w or window_size is not None, "square images only without a window"
    scale = np.full((b,), fixed_scale) if fixed_scale is not None else np.asarray(t, np.float64)
    cutoff = c_min + (c_max - c_min) * np.clip(scale, 0.0, 1.0)
    u = np.arange(n, dtype=np.float64)
    r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2) / math.sqrt(2 * (n - 1) ** 2)
    mask = 1.0 / (1.0 + np.exp(-kappa * (cutoff[:, None, None] - r[None])))  # (B, n, n)
    win = x.reshape(b, c, h // n, n, w // n, n)
    coef = scipy.fft.dctn(win, type=2, norm="ortho", axes=(3, 5))
    coef = coef * mask[:, None, None, :, None, :]
    return scipy.fft.idctn(coef, type=2, norm="ortho", axes=(3, 5)).reshape(b, c, h, w)


def torch_sf_filter(x, t, window_size=None, kappa=30.0, c_min=0.05, c_max=1.0, fixed_scale=None):
    """`sf_filter` in torch: x (B, C, H, W) tensor, t (B,) tensor; DCT-II matrix products."""
    b, c, h, w = x.shape
    n = h if window_size is None else window_size
    k = np.arange(n)[:, None]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (np.arange(n)[None] + 0.5) * k / n)
    m[0] /= np.sqrt(2.0)
    m = torch.from_numpy(m).to(x.dtype)
    scale = torch.full((b,), fixed_scale) if fixed_scale is not None else t
    cutoff = c_min + (c_max - c_min) * scale.clamp(0.0, 1.0).to(x.dtype)
    u = torch.arange(n, dtype=x.dtype)
    r = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2) / math.sqrt(2 * (n - 1) ** 2)
    mask = torch.sigmoid(kappa * (cutoff[:, None, None] - r[None]))
    win = x.reshape(b, c, h // n, n, w // n, n)
    coef = torch.einsum("ui,vj,bcpiqj->bcpuqv", m, m, win) * mask[:, None, None, :, None, :]
    return torch.einsum("ui,vj,bcpuqv->bcpiqj", m, m, coef).reshape(b, c, h, w)


def window_partition(x, p):
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c, p, p)


# ----------------------------------------------------------------------------- model_jit


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class BottleneckPatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, pca_dim, embed_dim, sf=None, sf_fn=None):
        super().__init__()
        self.patch_size, self.pca_dim, self.sf = patch_size, pca_dim, sf
        self.sf_fn = sf_fn  # None: the NumPy/SciPy `sf_filter` (the tests' oracle)
        if sf is not None:
            self.proj1 = nn.Linear(in_chans * patch_size**2, pca_dim, bias=False)
        else:
            self.proj1 = nn.Conv2d(in_chans, pca_dim, patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(pca_dim, embed_dim, kernel_size=1, stride=1, bias=True)

    def forward(self, x, t):
        b, c, h, w = x.shape
        p = self.patch_size
        if self.sf is None:
            return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)
        if self.sf_fn is None:
            x = torch.from_numpy(sf_filter(x.numpy(), t.numpy(), **self.sf)).to(x.dtype)
        else:
            x = self.sf_fn(x, t, **self.sf)
        tok = window_partition(x, p)
        x = self.proj1(tok.reshape(b, tok.shape[1], c * p * p))
        x = x.transpose(1, 2).reshape(b, self.pca_dim, h // p, w // p)
        return self.proj2(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
        )
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        emb = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = rope(self.q_norm(q)), rope(self.k_norm(k))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SwiGLUFFN(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        hidden_dim = int(hidden_dim * 2 / 3)
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class JiTBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = RMSNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = RMSNorm(hidden_size, eps=1e-6)
        self.mlp = SwiGLUFFN(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c, feat_rope):
        mods = self.adaLN_modulation(c).chunk(6, dim=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(self.norm1(x), shift_msa, scale_msa), feat_rope
        )
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class JiT(nn.Module):
    """forward(x (N, C, H, W), t (N,), y (N,)) -> (N, C, H, W); y indexes num_classes + 1 rows."""

    def __init__(
        self,
        input_size=(32, 32),
        patch_size=8,
        in_channels=3,
        hidden_size=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        num_classes=10,
        bottleneck_dim=32,
        in_context_len=32,
        in_context_start=1,
        sf=None,
        sf_fn=None,
    ):
        super().__init__()
        h, w = input_size
        self.patch_size, self.out_channels = patch_size, in_channels
        self.grid = (h // patch_size, w // patch_size)
        self.in_context_len, self.in_context_start = in_context_len, in_context_start
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.x_embedder = BottleneckPatchEmbed(
            patch_size, in_channels, bottleneck_dim, hidden_size, sf, sf_fn
        )
        pos = get_2d_sincos_pos_embed(hidden_size, self.grid)
        self.register_buffer("pos_embed", torch.from_numpy(pos).float().unsqueeze(0))
        if in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, in_context_len, hidden_size))
        half_head_dim = hidden_size // num_heads // 2
        self.feat_rope = VisionRotaryEmbeddingFast(half_head_dim, self.grid, 0)
        self.feat_rope_incontext = VisionRotaryEmbeddingFast(
            half_head_dim, self.grid, in_context_len
        )
        self.blocks = nn.ModuleList(
            [JiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)

    def unpatchify(self, x, p):
        c = self.out_channels
        gh, gw = self.grid
        x = x.reshape(x.shape[0], gh, gw, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, gh * p, gw * p)

    def forward(self, x, t, y):
        t_emb = self.t_embedder(t)
        y_emb = self.y_embedder.embedding_table(y)
        c = t_emb + y_emb
        x = self.x_embedder(x, t)
        x = x + self.pos_embed.to(dtype=x.dtype)
        for i, block in enumerate(self.blocks):
            if self.in_context_len > 0 and i == self.in_context_start:
                tokens = y_emb.unsqueeze(1).repeat(1, self.in_context_len, 1)
                x = torch.cat([tokens + self.in_context_posemb, x], dim=1)
            rope = self.feat_rope if i < self.in_context_start else self.feat_rope_incontext
            x = block(x, c, rope)
        x = x[:, self.in_context_len :]
        return self.unpatchify(self.final_layer(x, c), self.patch_size)

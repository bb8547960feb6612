"""A PyTorch transcription of the DCTransformer (Nash et al. 2021), written from the dctjax spec
(/work/shared/spec/dctransformer.md §3.1-§3.6), independently of `dctjax.models.dctransformer`.
The parity tests (tests/models/test_dctransformer_torch.py) use it as their oracle,
`benchmarks/torch_dctransformer_step.py` as the PyTorch side of the train-step comparison.

    E_input    = LN(Encoder(Conv_{k,s,SAME}(scale(D)) + P_2d (+ class)))         (N, M, d)
    E_channel  = C[in_c] + P[in_p] + V[in_v] + P_slot (+ class) (+ P_chunk[min(i, K) - 1])
    H_channel  = Dec_c(E_channel; E_input)  -> LN -> Linear -> channel logits    (N, T, 3B^2 + 1)
    E_position = H_channel + C[target_c]
    H_position = Dec_p(E_position; E_input) -> LN -> Linear -> position logits   (N, T, G_h G_w)
    E_value    = H_position + E_input[cell(target_p)] (+ P[target_p])
    H_value    = Dec_v(E_value; E_input)    -> LN -> Linear -> value logits      (N, T, 2 clip + 1)

Every sublayer is h + alpha * Dropout(f(LN(h))) with its own zero-initialised scalar alpha
(ReZero). A PAR spec [(n_self, n_fc), ...] gives per block n_self self-attention sublayers, in a
decoder then one cross-attention to E_input, then n_fc FC sublayers (Linear(d, 4d) -> exact GELU ->
Linear(4d, d)). Attention has 64 features per head (inner width heads * 64) and runs through
`F.scaled_dot_product_attention` with a boolean mask: decoder self-attention is causal with PAD
keys masked, a query always seeing itself; the encoder and cross-attention are unmasked.

`load_nnx_params` copies an NNX parameter state (`nnx.state(model, nnx.Param)` or its
`nnx.to_pure_dict`) into the module; `param_pairs` lists the (NNX path, torch parameter, layout)
correspondence, which the tests also use to compare gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEAD_FEATURES = 64

Spec = Sequence[tuple[int, int]]


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one axis: output ceil(size / stride), the smaller half before."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


def sublayer_kinds(spec: Spec, decoder: bool) -> list[str]:
    """A PAR spec -> the sublayer kinds in order ('self', 'cross', 'fc')."""
    kinds: list[str] = []
    for n_self, n_fc in spec:
        kinds += ["self"] * n_self + (["cross"] if decoder else []) + ["fc"] * n_fc
    return kinds


class Attention(nn.Module):
    """Multi-head attention with `heads` heads of 64 features; self (fused qkv projection) or
    cross (q from x, fused kv from the memory). x (N, T, d), memory (N, S, d) -> (N, T, d)."""

    def __init__(self, dim: int, heads: int, cross: bool):
        super().__init__()
        self.heads, self.cross = heads, cross
        inner = heads * HEAD_FEATURES
        if cross:
            self.q = nn.Linear(dim, inner)
            self.kv = nn.Linear(dim, 2 * inner)
        else:
            self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        return x.view(n, t, self.heads, HEAD_FEATURES).transpose(1, 2)  # (N, h, T, 64)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        n, t, _ = x.shape
        if self.cross:
            q = self.q(x)
            k, v = self.kv(memory).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask
        )
        return self.proj(out.transpose(1, 2).reshape(n, t, self.heads * HEAD_FEATURES))


class ReZeroSublayer(nn.Module):
    """h + alpha * Dropout(f(LN(h))), alpha a scalar starting at 0; f one of 'self', 'cross', 'fc'."""

    def __init__(self, kind: str, dim: int, heads: int, dropout: float):
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        if kind == "fc":
            self.fn = nn.Sequential(
                nn.Linear(dim, 4 * dim), nn.GELU(approximate="none"), nn.Linear(4 * dim, dim)
            )
        else:
            self.fn = Attention(dim, heads, cross=kind == "cross")
        self.alpha = nn.Parameter(torch.zeros(()))
        self.drop = _dropout(dropout)

    def forward(
        self, h: torch.Tensor, memory: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.norm(h)
        if self.kind == "fc":
            y = self.fn(x)
        elif self.kind == "self":
            y = self.fn(x, None, mask)
        else:
            y = self.fn(x, memory, None)
        return h + self.alpha * self.drop(y)


class Stack(nn.Module):
    """The sublayers of one PAR spec (decoder: a cross-attention after each block's self-attention)."""

    def __init__(self, spec: Spec, dim: int, heads: int, decoder: bool, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            ReZeroSublayer(k, dim, heads, dropout) for k in sublayer_kinds(spec, decoder)
        )

    def forward(
        self, h: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h, memory, mask)
        return h


class DCTransformer(nn.Module):
    """forward(encoder_image (N, G_h, G_w, 3B^2) int, input_channel/position/value (N, T) int,
    input_mask (N, T) bool, target_channel/position (N, T) int, labels (N,) | None,
    chunk_index (N,) | None) -> logits (channel (N, T, 3B^2+1), position (N, T, G_h G_w),
    value (N, T, 2 clip + 1)).

    Embedding tables hold the START / PAD (and STOP) rows: C 3B^2 + 3, P G_h G_w + 2,
    V 2 clip + 3 rows."""

    def __init__(
        self,
        *,
        block_size: int,
        grid_shape: tuple[int, int],
        clip: int,
        num_slots: int,
        hidden: int,
        heads: int,
        encoder_spec: Spec,
        channel_spec: Spec,
        position_spec: Spec,
        value_spec: Spec,
        downsample: tuple[int, int],
        dropout: float = 0.0,
        input_scaling: str = "log",
        input_scale: float = 1024.0,
        num_classes: int = 0,
        value_pos_embedding: bool = False,
        chunk_embeddings: int = 0,
    ):
        super().__init__()
        if input_scaling not in ("log", "linear"):
            raise ValueError(f"input_scaling={input_scaling!r}")
        d = hidden
        gh, gw = grid_shape
        k, s = downsample
        channels = 3 * block_size**2
        self.grid_shape, self.stride, self.hidden = (gh, gw), s, d
        self.input_scaling, self.input_scale = input_scaling, float(input_scale)
        self.value_pos_embedding = value_pos_embedding
        self.chunk_embeddings = chunk_embeddings
        self.num_classes = num_classes
        self.enc_grid = (math.ceil(gh / s), math.ceil(gw / s))
        ph, pw = tf_same_padding(gh, k, s), tf_same_padding(gw, k, s)
        self.pad = (0, 0, pw[0], pw[1], ph[0], ph[1])  # F.pad on NHWC: C, W, H
        # encoder
        self.conv = nn.Conv2d(channels, d, k, stride=s, padding=0)
        self.enc_pos = nn.Parameter(torch.zeros(self.enc_grid[0] * self.enc_grid[1], d))
        self.encoder = Stack(encoder_spec, d, heads, decoder=False, dropout=dropout)
        self.enc_norm = nn.LayerNorm(d)
        # decoder inputs
        self.emb_channel = nn.Embedding(channels + 3, d)
        self.emb_position = nn.Embedding(gh * gw + 2, d)
        self.emb_value = nn.Embedding(2 * clip + 3, d)
        self.emb_slot = nn.Parameter(torch.zeros(num_slots, d))
        self.emb_class = nn.Embedding(num_classes, d) if num_classes else None
        self.emb_chunk = nn.Embedding(chunk_embeddings, d) if chunk_embeddings else None
        self.drop = _dropout(dropout)
        # decoders and heads
        self.dec_channel = Stack(channel_spec, d, heads, decoder=True, dropout=dropout)
        self.dec_position = Stack(position_spec, d, heads, decoder=True, dropout=dropout)
        self.dec_value = Stack(value_spec, d, heads, decoder=True, dropout=dropout)
        self.norm_channel, self.norm_position, self.norm_value = (nn.LayerNorm(d) for _ in "cpv")
        self.head_channel = nn.Linear(d, channels + 1)
        self.head_position = nn.Linear(d, gh * gw)
        self.head_value = nn.Linear(d, 2 * clip + 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform linear weights, zero biases, N(0, 0.02) embeddings, LeCun-normal conv,
        unit LayerNorms and zero ReZero alphas (the dctjax initialisation's distributions)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        std = 1.0 / math.sqrt(self.conv.weight[0].numel()) / 0.87962566103423978  # fan-in
        nn.init.trunc_normal_(self.conv.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.conv.bias)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.emb_slot, std=0.02)

    def encode(self, encoder_image: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(N, G_h, G_w, 3B^2) int -> E_input (N, M, d)."""
        v = encoder_image.to(self.conv.weight.dtype)
        if self.input_scaling == "log":
            v = torch.sign(v) * torch.log1p(v.abs())
        else:
            v = v / self.input_scale
        v = F.pad(v, self.pad).permute(0, 3, 1, 2)  # NCHW
        h = self.conv(v).flatten(2).transpose(1, 2) + self.enc_pos  # (N, M, d), row-major cells
        if self.emb_class is not None and labels is not None:
            h = h + self.emb_class(labels)[:, None]
        return self.enc_norm(self.encoder(self.drop(h)))

    def self_attention_mask(self, input_mask: torch.Tensor) -> torch.Tensor:
        """(N, T) bool -> (N, 1, T, T) bool, True = attend: key <= query and (key valid or
        key == query)."""
        t = input_mask.shape[1]
        idx = torch.arange(t, device=input_mask.device)
        causal = idx[None, :] <= idx[:, None]
        itself = idx[None, :] == idx[:, None]
        return (causal & (input_mask[:, None, :] | itself))[:, None]

    def cells(self, positions: torch.Tensor) -> torch.Tensor:
        """Luma-grid positions row * G_w + col -> encoder cells of the strided grid."""
        gw = self.grid_shape[1]
        row, col = positions // gw, positions % gw
        return (row // self.stride) * self.enc_grid[1] + col // self.stride

    def forward(
        self,
        encoder_image: torch.Tensor,
        input_channel: torch.Tensor,
        input_position: torch.Tensor,
        input_value: torch.Tensor,
        input_mask: torch.Tensor,
        target_channel: torch.Tensor,
        target_position: torch.Tensor,
        labels: torch.Tensor | None = None,
        chunk_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory = self.encode(encoder_image, labels)
        mask = self.self_attention_mask(input_mask.bool())
        t = input_channel.shape[1]
        e = (
            self.emb_channel(input_channel)
            + self.emb_position(input_position)
            + self.emb_value(input_value)
            + self.emb_slot[:t]
        )
        if self.emb_class is not None and labels is not None:
            e = e + self.emb_class(labels)[:, None]
        if self.emb_chunk is not None and chunk_index is not None:
            e = e + self.emb_chunk(chunk_index.clamp(1, self.chunk_embeddings) - 1)[:, None]
        h_c = self.dec_channel(self.drop(e), memory, mask)
        h_p = self.dec_position(h_c + self.emb_channel(target_channel), memory, mask)
        cell = self.cells(target_position)
        e_v = h_p + torch.gather(memory, 1, cell[..., None].expand(-1, -1, self.hidden))
        if self.value_pos_embedding:
            e_v = e_v + self.emb_position(target_position)
        h_v = self.dec_value(e_v, memory, mask)
        return (
            self.head_channel(self.norm_channel(h_c)),
            self.head_position(self.norm_position(h_p)),
            self.head_value(self.norm_value(h_v)),
        )


def chunk_loss(
    logits: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Channel CE on loss_mask + position / value CE on their masks, summed over the batch and
    divided by the number of loss_mask slots (nats per target element)."""
    total = 0.0
    for lg, target, mask in zip(
        logits,
        (batch["target_channel"], batch["target_position"], batch["target_value"]),
        (batch["loss_mask"], batch["position_loss_mask"], batch["value_loss_mask"]),
        strict=True,
    ):
        ce = F.cross_entropy(lg.flatten(0, 1), target.flatten(), reduction="none")
        total = total + (ce * mask.flatten().to(ce.dtype)).sum()
    return total / batch["loss_mask"].sum().clamp_min(1)


# ----------------------------------------------------------------------------- NNX weights

_ATTENTION = {"qkv": "qkv", "q": "q", "kv": "kv", "proj": "out"}
_STACKS = {
    "encoder": "encoder",
    "dec_channel": "channel_decoder",
    "dec_position": "position_decoder",
    "dec_value": "value_decoder",
}
_TOP = {
    "emb_channel": ("channel_embed", "embedding"),
    "emb_position": ("position_embed", "embedding"),
    "emb_value": ("value_embed", "embedding"),
    "emb_class": ("class_embed", "embedding"),
    "emb_chunk": ("chunk_embed", "embedding"),
    "enc_pos": ("encoder_pos",),
    "emb_slot": ("slot_embed",),
}


def _norm(prefix: tuple, ln: nn.LayerNorm) -> Iterator[tuple[tuple, nn.Parameter, str]]:
    yield (*prefix, "scale"), ln.weight, "copy"
    yield (*prefix, "bias"), ln.bias, "copy"


def _linear(prefix: tuple, lin: nn.Linear) -> Iterator[tuple[tuple, nn.Parameter, str]]:
    yield (*prefix, "kernel"), lin.weight, "linear"
    yield (*prefix, "bias"), lin.bias, "copy"


def param_pairs(model: DCTransformer) -> list[tuple[tuple, nn.Parameter, str]]:
    """(NNX parameter path, torch parameter, layout) for every parameter of `model`. Layouts:
    'copy'; 'linear' (NNX kernel (in, out) = torch weight (out, in) transposed); 'conv' (NNX
    kernel HWIO, torch weight OIHW)."""
    pairs = [
        (("conv", "kernel"), model.conv.weight, "conv"),
        (("conv", "bias"), model.conv.bias, "copy"),
    ]
    for attr, path in _TOP.items():
        obj = getattr(model, attr)
        if obj is not None:
            pairs.append((path, obj.weight if isinstance(obj, nn.Embedding) else obj, "copy"))
    for attr, name in _STACKS.items():
        for i, layer in enumerate(getattr(model, attr).layers):
            pre = (name, "sublayers", i)
            pairs.append(((*pre, "alpha"), layer.alpha, "copy"))
            pairs += _norm((*pre, "norm"), layer.norm)
            if layer.kind == "fc":
                pairs += _linear((*pre, "f", "fc1"), layer.fn[0])
                pairs += _linear((*pre, "f", "fc2"), layer.fn[2])
            else:
                for t_name, j_name in _ATTENTION.items():
                    if hasattr(layer.fn, t_name):
                        pairs += _linear((*pre, "f", j_name), getattr(layer.fn, t_name))
    pairs += _norm(("encoder_norm",), model.enc_norm)
    for term in ("channel", "position", "value"):
        pairs += _norm((f"{term}_norm",), getattr(model, f"norm_{term}"))
        pairs += _linear((f"{term}_head",), getattr(model, f"head_{term}"))
    return pairs


def to_torch_layout(array: Any, layout: str) -> np.ndarray:
    """An NNX array -> the torch parameter's layout (see `param_pairs`)."""
    a = np.asarray(array)
    if layout == "linear":
        return a.T
    if layout == "conv":
        return a.transpose(3, 2, 0, 1)
    return a


def pure_dict(params: Any) -> Mapping:
    """`nnx.state(model, nnx.Param)` (an nnx.State) or its pure dict -> the nested pure dict."""
    if isinstance(params, Mapping) and not hasattr(params, "flat_state"):
        return params
    from flax import nnx

    return nnx.to_pure_dict(params)


def lookup(tree: Mapping, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@torch.no_grad()
def load_nnx_params(model: DCTransformer, params: Any) -> DCTransformer:
    """Copies an NNX parameter state (or pure dict) into `model` (in place; also returned).
    Every NNX leaf must be used exactly once."""
    tree = pure_dict(params)
    used = 0
    for path, p, layout in param_pairs(model):
        value = torch.from_numpy(np.array(to_torch_layout(lookup(tree, path), layout)))  # a copy
        if value.shape != p.shape:
            raise ValueError(
                f"{'/'.join(map(str, path))}: {tuple(value.shape)} != {tuple(p.shape)}"
            )
        p.copy_(value.to(p.dtype))
        used += 1
    n_leaves = _count_leaves(tree)
    if used != n_leaves or used != len(list(model.parameters())):
        raise ValueError(
            f"copied {used} parameters; NNX has {n_leaves}, torch {len(list(model.parameters()))}"
        )
    return model


def _count_leaves(tree: Any) -> int:
    if isinstance(tree, Mapping):
        return sum(_count_leaves(v) for v in tree.values())
    return 1

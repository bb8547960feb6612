"""Building blocks shared by the U-ViT and DiT backbones (Flax NNX).

Conventions:
- Activations are batch-first: tokens (N, T, D), images NHWC (N, H, W, C).
- `dtype` is the compute dtype (float32 or bfloat16); parameters are `param_dtype` (float32).
  Attention logits and softmax run in float32 whatever `dtype` is (XLA's and cuDNN's
  `jax.nn.dot_product_attention` and the Pallas splash TPU kernel accumulate the logits and take
  the softmax in float32).
- Fused qkv features are ordered [q | k | v], each split by heads (3 outermost, then heads, then
  head dim), as in the PyTorch references, so their weights convert by a transpose only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache, partial
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


@jax.custom_vjp
def dense_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x (..., K) @ kernel (K, N) -> (..., N), with a backward pass laid out for XLA's CPU backend.

    The kernel gradient is one 2-D matmul over the flattened leading dims, x2^T @ g2. Autodiff of
    the N-d `dot_general` gives the same numbers, but XLA's CPU backend then copies a transposed
    (N, M) activation for every weight gradient (U-ViT-S train step: ~5-10% slower at batch 8-32).
    On CPU with many rows see `cpu_kernel_gradient`.
    """
    return jnp.matmul(x, kernel)


def _dense_matmul_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    return jnp.matmul(x, kernel), (x, kernel)


# Rows (flattened leading positions) from which the CPU kernel gradient takes the packed-library
# route of `cpu_kernel_gradient`.
CPU_KERNEL_GRAD_MIN_ROWS = 1024


def cpu_kernel_gradient(x2: jax.Array, g2: jax.Array) -> jax.Array:
    """x2^T @ g2 for x2 (M, K), g2 (M, N) -> (K, N), as XLA's CPU backend runs it fastest.

    XLA CPU hands a product that contracts the leading dim of both operands to Eigen, ~0.7-0.9x
    the speed of YNNPACK's row-major kernel at M >= 1024 (measured for K, N in 256-3072 on AVX-512).
    So with M >= `CPU_KERNEL_GRAD_MIN_ROWS` the smaller operand is transposed first (an M x
    min(K, N) copy; the optimization barriers keep XLA from folding the transposes back into the
    product or into its consumers) and the product is row-major: x2^T @ g2, or (g2^T @ x2)^T when
    N < K. Whole train steps, side by side (`benchmarks/kernel_gradient.py`): DCTransformer
    quickstart (M = 2,048) -3%, at 1,024 slots -2%, U-ViT-S at batch 32 -2%, JiT-B/16 at batch 8
    (M = 2,304) level within the noise. With fewer rows XLA overlaps the Eigen product with the
    input gradient on the other core, and the copy does not pay (JiT-B/32 at batch 8, M = 768:
    +2-3%).
    """
    m, k = x2.shape
    n = g2.shape[1]
    if m < CPU_KERNEL_GRAD_MIN_ROWS:
        return jnp.matmul(x2.T, g2)
    if k <= n:
        return jnp.matmul(jax.lax.optimization_barrier(x2.T), g2)
    dkernel_t = jax.lax.optimization_barrier(jnp.matmul(jax.lax.optimization_barrier(g2.T), x2))
    # one (K, N) copy here, not a transposed read in each optimizer pass over the gradient
    return jax.lax.optimization_barrier(dkernel_t.T)


def _dense_matmul_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    dx = jnp.matmul(g, kernel.T)
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    if jax.default_backend() == "cpu":
        dkernel = cpu_kernel_gradient(x2, g2)
    else:  # GPU / TPU libraries take transposed operands as they are
        dkernel = jnp.matmul(x2.T, g2)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """`lax.dot_general` for `nnx.Linear(dot_general=...)`: its contraction (last dim of lhs with
    dim 0 of a 2-D rhs) goes through `dense_matmul`; anything else to `lax.dot_general`."""
    (lc, rc), (lb, rb) = dimension_numbers
    plain = (
        tuple(lc) == (lhs.ndim - 1,)
        and tuple(rc) == (0,)
        and rhs.ndim == 2
        and not lb
        and not rb
        and precision is None
        and preferred_element_type is None
        and kwargs.get("out_sharding") is None
        and lhs.dtype == rhs.dtype
    )
    if plain:
        return dense_matmul(lhs, rhs)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type,
        **kwargs,
    )  # fmt: skip


def make_linear(
    kernel_init: Initializer, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
) -> LinearFactory:
    """A Dense factory `(in, out, use_bias=True, kernel_init=...) -> nnx.Linear`, biases zero.

    The layers multiply through `dense_dot_general` (same numbers, a faster backward on CPU).
    """
    return partial(
        nnx.Linear,
        kernel_init=kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        dot_general=dense_dot_general,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(
    x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, epsilon: float
) -> jax.Array:
    """LayerNorm over the last axis, PyTorch's formula: (x - mean) / sqrt(var + eps) * scale + bias.

    x (..., D); scale, bias (D,) or None. Statistics are two-pass and float32 whatever x's dtype
    (var = mean((x - mean)^2), as torch; Flax's default E[x^2] - E[x]^2 loses digits when
    |mean| >> std). The output has x's dtype. The backward pass is the closed form
    dx = rstd * (gs - mean(gs) - xhat * mean(gs * xhat)) with gs = g * scale, from x and the
    saved (mean, rstd): autodiff of the forward makes XLA materialise scale * rstd as a full
    (..., D) array and costs ~2x as much on CPU.
    """
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True) + epsilon)
    y = (xf - mean) * rstd
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype), (x, mean, rstd, scale, bias)


def _layer_norm_bwd(epsilon, res, g):
    x, mean, rstd, scale, bias = res
    xhat = (x.astype(jnp.float32) - mean) * rstd
    gf = g.astype(jnp.float32)
    gs = gf * scale.astype(jnp.float32) if scale is not None else gf
    dx = rstd * (
        gs
        - jnp.mean(gs, axis=-1, keepdims=True)
        - xhat * jnp.mean(gs * xhat, axis=-1, keepdims=True)
    )
    lead = tuple(range(x.ndim - 1))
    dscale = None if scale is None else jnp.sum(gf * xhat, axis=lead).astype(scale.dtype)
    dbias = None if bias is None else jnp.sum(gf, axis=lead).astype(bias.dtype)
    return dx.astype(x.dtype), dscale, dbias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x: jax.Array, weight: jax.Array, epsilon: float) -> jax.Array:
    """RMSNorm over the last axis (LlamaRMSNorm): x * rsqrt(mean(x^2) + eps) * weight, in float32.

    x (..., D), weight (D,); the output has x's dtype. The backward pass is the closed form
    dx = rstd * (gw - xhat * mean(gw * xhat)) with gw = g * weight, from x and the saved rstd (as
    for `layer_norm`: autodiff would materialise weight * rstd as a full (..., D) array).
    """
    return _rms_norm_fwd(x, weight, epsilon)[0]


def _rms_norm_fwd(x, weight, epsilon):
    xf = x.astype(jnp.float32)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + epsilon)
    return (xf * rstd * weight.astype(jnp.float32)).astype(x.dtype), (x, rstd, weight)


def _rms_norm_bwd(epsilon, res, g):
    x, rstd, weight = res
    xhat = x.astype(jnp.float32) * rstd
    gf = g.astype(jnp.float32)
    gw = gf * weight.astype(jnp.float32)
    dx = rstd * (gw - xhat * jnp.mean(gw * xhat, axis=-1, keepdims=True))
    dweight = jnp.sum(gf * xhat, axis=tuple(range(x.ndim - 1))).astype(weight.dtype)
    return dx.astype(x.dtype), dweight


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis with PyTorch's numerics (see `layer_norm`).

    Parameters `scale` (ones) and `bias` (zeros), named as `nnx.LayerNorm`'s, so checkpoints and
    weight conversions are the same; `use_scale=use_bias=False` is DiT's non-affine norm.
    Computes in `dtype` (statistics always float32).
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # the parameters are constants at init
        self.epsilon = float(epsilon)
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype)) if use_scale else None
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        return layer_norm(x.astype(self.dtype), scale, bias, self.epsilon)


ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas_tpu")


def check_attention(requested: str) -> str:
    """`requested` if it is one of `ATTENTION_IMPLEMENTATIONS`, else a ValueError naming them."""
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention={requested!r} is not one of {ATTENTION_IMPLEMENTATIONS}; 'auto' picks cuDNN "
            "flash attention on NVIDIA GPUs, the Pallas splash kernel on TPUs and XLA otherwise."
        )
    return requested


@cache
def _cudnn_problem(dtype: str, head_dim: int) -> str | None:
    """Why jax's cuDNN flash attention cannot run (N, T, h, head_dim) `dtype` on the default
    backend, or None."""
    spec = jax.ShapeDtypeStruct((1, 8, 1, head_dim), jnp.dtype(dtype))
    try:
        jax.eval_shape(
            partial(jax.nn.dot_product_attention, implementation="cudnn"), spec, spec, spec
        )
    except Exception as e:  # jax raises RuntimeError, NotImplementedError or ValueError here
        return f"{type(e).__name__}: {e}"
    return None


# Runs the Pallas TPU kernel through the Pallas interpreter (plain HLO, any backend): tests only.
_PALLAS_INTERPRET = False


def _pallas_tpu_problem(dtype: str) -> str | None:
    """Why jax's Pallas splash attention kernel cannot run `dtype` attention here, or None.

    It needs the TPU backend, and one device per kernel call: Mosaic kernels are not partitioned
    automatically, so with several devices the call is wrapped in a `shard_map` over the batch,
    which needs the mesh as context (`jax.set_mesh(mesh)` around tracing the step).
    `_PALLAS_INTERPRET` (tests) skips the backend and device checks: the interpreter runs anywhere.
    """
    if not _PALLAS_INTERPRET and jax.default_backend() != "tpu":
        return f"the default backend is {jax.default_backend()}, not tpu"
    if dtype not in ("bfloat16", "float32"):
        return f"{dtype} is not bfloat16 or float32"
    if not _PALLAS_INTERPRET and jax.device_count() > 1 and jax.sharding.get_abstract_mesh().empty:
        return (
            f"jax sees {jax.device_count()} devices and no mesh is set, and Mosaic kernels are not "
            "partitioned automatically (trace the step under `jax.set_mesh(mesh)`)"
        )
    return None


def attention_implementation(requested: str, dtype: Any, head_dim: int) -> str:
    """The attention implementation for `requested` (one of `ATTENTION_IMPLEMENTATIONS`).

    'auto' is, in order: jax's Pallas splash attention kernel ('pallas_tpu', see
    `pallas_tpu_attention`) on a TPU (bfloat16 or float32; on several devices only with the mesh
    set while tracing, `jax.set_mesh`); cuDNN's fused flash attention where jax
    can run it for this dtype and head dim (an NVIDIA GPU, bfloat16 or float16, head dim a multiple
    of 8 up to 128/256); else 'xla'. jax's own default (`implementation=None`) is always XLA's
    unfused softmax(q k^T) v, which writes the (N, h, T, T) logits to memory: at 1024 tokens that,
    not the matmuls, would bound a GPU or TPU step. An explicit 'cudnn' or 'pallas_tpu' that cannot
    run is a ValueError naming why.
    """
    if check_attention(requested) == "xla":
        return "xla"
    name = jnp.dtype(dtype).name
    if requested in ("auto", "pallas_tpu"):
        tpu_problem = _pallas_tpu_problem(name)
        if tpu_problem is None:
            return "pallas_tpu"
        if requested == "pallas_tpu":
            raise ValueError(
                f"attention='pallas_tpu' cannot run {name} attention with head dim {head_dim} "
                f"({tpu_problem}). It needs a TPU (jax.default_backend() == 'tpu'), bfloat16 or "
                "float32 compute, and on several devices the mesh set while tracing; use "
                "attention='auto' or 'xla'."
            )
    problem = _cudnn_problem(name, int(head_dim))
    if problem is None:
        return "cudnn"
    if requested == "cudnn":
        raise ValueError(
            f"attention='cudnn' cannot run {name} attention with head dim "
            f"{head_dim} on the {jax.default_backend()} backend ({problem}). It needs an NVIDIA "
            "GPU and bfloat16/float16 compute (config.dtype='bfloat16'); use attention='auto' or "
            "'xla'."
        )
    return "xla"


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "auto"
) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v over (N, T, h, head_dim) -> (N, T, h, head_dim).

    With cuDNN, an odd T is padded by one token that is masked out as a key (and its query row is
    dropped): jax's cuDNN training rule rejects odd sequence lengths (it checks the length as if a
    bias were given, because the absent bias is passed on as an empty placeholder), and U-ViT's
    token count is odd (1024 tokens + the time token). 'pallas_tpu' pads to a multiple of 128
    (`pallas_tpu_attention`).
    """
    impl = attention_implementation(implementation, q.dtype, q.shape[-1])
    if impl == "pallas_tpu":
        return pallas_tpu_attention(q, k, v, interpret=_PALLAS_INTERPRET)
    t = q.shape[1]
    if impl == "xla" or t % 2 == 0:
        return jax.nn.dot_product_attention(q, k, v, implementation=impl)
    return padded_attention(q, k, v, t + 1, impl)


def padded_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, padded_len: int, implementation: str
) -> jax.Array:
    """Attention over T tokens computed at length `padded_len` >= T with the extra keys masked.

    (N, T, h, head_dim) -> (N, T, h, head_dim); equal to unpadded attention (values and gradients).
    """
    n, t = q.shape[:2]
    if padded_len < t:
        raise ValueError(f"padded_len={padded_len} is shorter than the {t} tokens.")
    pad = [(0, 0), (0, padded_len - t), (0, 0), (0, 0)]
    lengths = jnp.full((n,), t, jnp.int32)
    out = jax.nn.dot_product_attention(
        *(jnp.pad(a, pad) for a in (q, k, v)),
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    return out[:, :t]


SPLASH_LANES = 128  # the splash kernel's sequence blocks are multiples of the TPU's 128 lanes


def splash_block_size(padded_len: int) -> int:
    """The splash kernel's q and kv block (forward and backward) for a multiple of 128 tokens: the
    largest of 512, 384, 256, 128 that divides it (MaxText's defaults are 512)."""
    if padded_len % SPLASH_LANES:
        raise ValueError(f"padded_len={padded_len} is not a multiple of {SPLASH_LANES}.")
    return next(b for b in (512, 384, 256, 128) if padded_len % b == 0)


@lru_cache(maxsize=32)
def _splash_kernel(num_heads: int, padded_len: int, interpret: bool) -> Any:
    """jax's splash attention kernel (one batch element, (h, T, d) inputs), full mask, no scale."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as splash,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as splash_mask,
    )

    b = splash_block_size(padded_len)
    blocks = splash.BlockSizes(
        block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
        block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b,
    )  # fmt: skip
    mask = splash_mask.MultiHeadMask([splash_mask.FullMask((padded_len, padded_len))] * num_heads)
    with jax.ensure_compile_time_eval():  # concrete mask arrays, not tracers of the first caller
        return splash.make_splash_mha_single_device(mask, block_sizes=blocks, interpret=interpret)


def _splash_call(q: jax.Array, k: jax.Array, v: jax.Array, t: int, interpret: bool) -> jax.Array:
    """(N, h, Tp, d) q (already scaled), k, v -> (N, h, Tp, d); keys at positions >= t masked."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import (
        SegmentIds,
    )

    h, tp = q.shape[1], q.shape[2]
    kernel = _splash_kernel(h, tp, interpret)
    if t == tp:
        return jax.vmap(kernel)(q, k, v)
    # real tokens are segment 1, padding segment 0: a real query sees only the real keys, a padded
    # query only the padded keys (no empty softmax row); the padded rows are dropped by the caller
    ids = (jnp.arange(tp) < t).astype(jnp.int32)
    return jax.vmap(lambda a, b, c: kernel(a, b, c, segment_ids=SegmentIds(ids, ids)))(q, k, v)


def pallas_tpu_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, interpret: bool = False
) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v with jax's Pallas splash attention TPU kernel.

    (N, T, h, head_dim) -> (N, T, h, head_dim), the layout of `jax.nn.dot_product_attention`; the
    kernel takes (h, T, head_dim) per batch element (vmapped over N). The kernel has no scale
    argument: q is multiplied by 1/sqrt(head_dim) in its dtype first (exact for head dims 4^k, one
    rounding otherwise in bfloat16). Its sequence blocks are multiples of 128 tokens, so T is padded
    with zeros to the next multiple of 128 (U-ViT's 1025 -> 1152, JiT's 288 -> 384) and the padded
    keys are masked by segment ids; the padded query rows are dropped, so values and gradients equal
    unpadded attention. Logits, softmax and the accumulators are float32 in the kernel.

    With a mesh set while tracing (`jax.set_mesh`), the call runs per batch shard in a `shard_map`
    over every mesh axis (N must divide), since Mosaic kernels are not partitioned automatically.
    `interpret=True` runs the kernel in the Pallas interpreter (any backend; tests).
    """
    n, t, _, d = q.shape
    tp = -(-t // SPLASH_LANES) * SPLASH_LANES
    scale = np.asarray(1.0 / math.sqrt(d), q.dtype)

    def to_kernel(a: jax.Array) -> jax.Array:
        return jnp.pad(a, [(0, 0), (0, tp - t), (0, 0), (0, 0)]).transpose(0, 2, 1, 3)

    def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out = _splash_call(to_kernel(q * scale), to_kernel(k), to_kernel(v), t, interpret)
        return out.transpose(0, 2, 1, 3)[:, :t]

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return attend(q, k, v)
    if n % mesh.size:
        raise ValueError(
            f"pallas_tpu attention splits the batch over all {mesh.size} devices of the mesh "
            f"{dict(mesh.shape)}; the batch {n} does not divide. Use attention='xla'."
        )
    spec = jax.sharding.PartitionSpec(mesh.axis_names)
    return jax.shard_map(attend, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)(q, k, v)


class Attention(nnx.Module):
    """Multi-head self-attention: qkv Dense(D -> 3D), softmax(q k^T / sqrt(D/h)) v, Dense(D -> D).

    (N, T, D) -> (N, T, D). The softmax runs in float32 (`dot_product_attention`);
    `implementation` is one of `ATTENTION_IMPLEMENTATIONS` ('auto': the Pallas splash kernel on
    TPUs, cuDNN flash attention on NVIDIA GPUs, else XLA).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        linear: LinearFactory,
        implementation: str = "auto",
    ):
        self.num_heads = num_heads
        self.implementation = check_attention(implementation)
        self.qkv = linear(dim, 3 * dim, use_bias=qkv_bias)
        self.proj = linear(dim, dim, use_bias=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        # split, not index: the gradient is then one concatenate instead of three padded copies
        q, k, v = (
            y.reshape(n, t, self.num_heads, d // self.num_heads)
            for y in jnp.split(self.qkv(x), 3, axis=-1)
        )
        out = dot_product_attention(q, k, v, self.implementation)
        return self.proj(out.reshape(n, t, d))


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    """GELU, elementwise. Exact: x/2 * (1 + erf(x / sqrt(2))), PyTorch's `nn.GELU()` formula.

    `jax.nn.gelu(approximate=False)` evaluates the same function through erfc, which XLA's CPU
    backend computes ~3x slower than erf (U-ViT-S train step: 4-5% of the time); the two differ
    by < 1.2e-6 absolute in float32. `approximate=True` is the tanh form (DiT).
    """
    if approximate:
        return jax.nn.gelu(x, approximate=True)
    return 0.5 * x * (1 + jax.lax.erf(x * np.asarray(1 / math.sqrt(2), x.dtype)))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout (PyTorch's nn.Dropout in training); the identity without a key."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Mlp(nnx.Module):
    """Dense(D -> hidden) -> GELU -> Dense(hidden -> D); `approximate=False` is the exact erf GELU."""

    def __init__(self, dim: int, hidden: int, *, approximate: bool, linear: LinearFactory):
        self.approximate = approximate
        self.fc1 = linear(dim, hidden)
        self.fc2 = linear(hidden, dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x), self.approximate))


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

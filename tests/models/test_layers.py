"""The shared layers' numerics against closed forms: GELU, the Dense matmul's VJP, LayerNorm."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from dctjax.models import layers


def test_gelu_exact_matches_erf_closed_form():
    x = np.linspace(-12.0, 12.0, 20001)
    ref = 0.5 * x * (1 + erf(x / math.sqrt(2)))  # PyTorch's nn.GELU() formula, float64
    got = np.asarray(jax.jit(layers.gelu)(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=2e-6)
    tanh = np.asarray(layers.gelu(jnp.asarray(x, jnp.float32), approximate=True), np.float64)
    ref_tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(tanh, ref_tanh, atol=2e-6, rtol=2e-6)
    d = jax.grad(lambda v: layers.gelu(v).sum())(jnp.asarray(x, jnp.float32))
    ref_d = 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(np.asarray(d, np.float64), ref_d, atol=5e-6, rtol=5e-6)


@pytest.mark.parametrize("lead", [(7,), (2, 5), (2, 3, 4)])
def test_dense_matmul_vjp_closed_form(lead):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((*lead, 6))
    w = rng.standard_normal((6, 3))
    g = rng.standard_normal((*lead, 3))
    y, vjp = jax.vjp(layers.dense_matmul, jnp.float32(x), jnp.float32(w))
    dx, dw = vjp(jnp.float32(g))
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, g @ w.T, rtol=1e-5, atol=1e-5)
    dw_ref = x.reshape(-1, 6).T @ g.reshape(-1, 3)  # summed over every leading position
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)
    assert dx.dtype == jnp.float32 and dw.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(1024, 48, 80), (1200, 80, 48), (300, 8, 5)])
def test_cpu_kernel_gradient_is_x_transpose_g(shape):
    """Both routes (rows >= CPU_KERNEL_GRAD_MIN_ROWS: a transposed operand first, K <= N and
    K > N; fewer rows: the plain product) give x^T g, also through dense_matmul's VJP."""
    m, k, n = shape
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((m, k)), rng.standard_normal((m, n))
    ref = x.T @ g  # float64
    got = jax.jit(layers.cpu_kernel_gradient)(jnp.float32(x), jnp.float32(g))
    assert got.shape == (k, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-4 * math.sqrt(m))
    _, vjp = jax.vjp(layers.dense_matmul, jnp.float32(x.reshape(2, m // 2, k)), jnp.ones((k, n)))
    dw = vjp(jnp.float32(g.reshape(2, m // 2, n)))[1]
    np.testing.assert_allclose(dw, got, rtol=1e-5, atol=1e-4)
    jaxpr = str(jax.make_jaxpr(layers.cpu_kernel_gradient)(jnp.float32(x), jnp.float32(g)))
    assert ("optimization_barrier" in jaxpr) == (m >= layers.CPU_KERNEL_GRAD_MIN_ROWS)


def test_dense_dot_general_routes_and_falls_back():
    rng = np.random.default_rng(1)
    x = jnp.float32(rng.standard_normal((2, 4, 6)))
    w = jnp.float32(rng.standard_normal((6, 5)))
    dims = (((2,), (0,)), ((), ()))
    np.testing.assert_allclose(
        layers.dense_dot_general(x, w, dims), jax.lax.dot_general(x, w, dims), rtol=1e-6
    )
    jaxpr = str(jax.make_jaxpr(lambda a, b: layers.dense_dot_general(a, b, dims))(x, w))
    assert "custom_vjp_call" in jaxpr
    other = (((1,), (0,)), ((), ()))  # contracts a non-last axis: the plain dot_general path
    y = jnp.float32(rng.standard_normal((2, 4)))
    got = layers.dense_dot_general(y.T, jnp.float32(rng.standard_normal((2, 3))), other)
    assert got.shape == (4, 3)
    hi = layers.dense_dot_general(x, w, dims, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(hi, np.asarray(x) @ np.asarray(w), rtol=1e-5, atol=1e-5)
    # bfloat16 layers keep bfloat16 activations and gradients
    lin = layers.make_linear(
        layers.normal_002, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
    )(6, 5)
    assert lin(x).dtype == jnp.bfloat16
    grads = nnx.grad(lambda m: m(x).astype(jnp.float32).sum())(lin)
    assert grads.kernel[...].dtype == jnp.float32


def _ln64(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if scale is None else scale) + (0 if bias is None else bias)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_forward_and_vjp_against_finite_differences(affine):
    rng = np.random.default_rng(2)
    eps = 1e-5
    x = rng.standard_normal((2, 3, 8)) * 2 + 0.5
    scale = 1 + 0.3 * rng.standard_normal(8) if affine else None
    bias = 0.2 * rng.standard_normal(8) if affine else None
    g = rng.standard_normal(x.shape)
    f32 = lambda a: None if a is None else jnp.float32(a)  # noqa: E731
    y, vjp = jax.vjp(lambda a, s, b: layers.layer_norm(a, s, b, eps), f32(x), f32(scale), f32(bias))
    np.testing.assert_allclose(y, _ln64(x, scale, bias, eps), rtol=1e-5, atol=1e-5)
    dx, dscale, dbias = vjp(jnp.float32(g))

    def numeric(arr, which):  # central differences of <g, LN(...)> in float64
        out = np.zeros_like(arr)
        h = 1e-6
        for i in np.ndindex(arr.shape):
            args = {"x": x, "scale": scale, "bias": bias}
            plus, minus = arr.copy(), arr.copy()
            plus[i] += h
            minus[i] -= h
            lp = np.sum(g * _ln64(**{**args, which: plus}, eps=eps))
            lm = np.sum(g * _ln64(**{**args, which: minus}, eps=eps))
            out[i] = (lp - lm) / (2 * h)
        return out

    np.testing.assert_allclose(dx, numeric(x, "x"), rtol=1e-4, atol=1e-5)
    if affine:
        np.testing.assert_allclose(dscale, numeric(scale, "scale"), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dbias, numeric(bias, "bias"), rtol=1e-4, atol=1e-5)
    else:
        assert dscale is None and dbias is None


def test_layer_norm_two_pass_variance_with_large_mean():
    """|mean| >> std: the two-pass variance (PyTorch's) keeps the digits E[x^2] - E[x]^2 loses."""
    rng = np.random.default_rng(3)
    x = np.float32(1000.0 + 0.1 * rng.standard_normal((4, 64)))
    ref = _ln64(x.astype(np.float64), None, None, 1e-5)
    got = np.asarray(layers.layer_norm(jnp.asarray(x), None, None, 1e-5))
    np.testing.assert_allclose(got, ref, atol=5e-3)
    one_pass = np.mean(x * x, -1, keepdims=True) - np.mean(x, -1, keepdims=True) ** 2
    naive = (x - x.mean(-1, keepdims=True)) / np.sqrt(np.maximum(one_pass, 0) + 1e-5)
    assert np.abs(naive - ref).max() > 0.1  # what the one-pass formula gives in float32


def test_layer_norm_module_params_and_dtype():
    ln = layers.LayerNorm(8, epsilon=1e-6, dtype=jnp.bfloat16)
    state = nnx.state(ln, nnx.Param)
    assert set(nnx.to_pure_dict(state)) == {"scale", "bias"}
    np.testing.assert_array_equal(ln.scale[...], np.ones(8, np.float32))
    np.testing.assert_array_equal(ln.bias[...], np.zeros(8, np.float32))
    assert ln(jnp.ones((2, 8))).dtype == jnp.bfloat16
    bare = layers.LayerNorm(8, use_scale=False, use_bias=False)
    assert not jax.tree.leaves(nnx.state(bare, nnx.Param))


def _attention_reference(q, k, v):
    """softmax(q k^T / sqrt(d)) v per head in float64; (N, T, h, d) arrays."""
    logits = np.einsum("nthd,nshd->nhts", q, k) / math.sqrt(q.shape[-1])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("nhts,nshd->nthd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("padded_len", [8, 12])
def test_padded_attention_equals_unpadded(padded_len):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 7, 3, 8)) for _ in range(3))
    f = lambda *a: layers.padded_attention(*a, padded_len=padded_len, implementation="xla")  # noqa: E731
    got = f(*(jnp.float32(a) for a in (q, k, v)))
    assert got.shape == (2, 7, 3, 8)
    np.testing.assert_allclose(got, _attention_reference(q, k, v), rtol=1e-5, atol=1e-5)
    g = jnp.float32(rng.standard_normal((2, 7, 3, 8)))
    args = tuple(jnp.float32(a) for a in (q, k, v))
    grads = jax.vjp(f, *args)[1](g)
    ref = jax.vjp(lambda *a: jax.nn.dot_product_attention(*a), *args)[1](g)
    for a, b in zip(grads, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_attention_implementation_on_cpu():
    assert layers.attention_implementation("auto", jnp.float32, 64) == "xla"
    assert layers.attention_implementation("auto", jnp.bfloat16, 64) == "xla"
    assert layers.attention_implementation("xla", jnp.bfloat16, 64) == "xla"
    with pytest.raises(ValueError, match="needs an NVIDIA GPU.*attention='auto'"):
        layers.attention_implementation("cudnn", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="attention='flash' is not one of"):
        layers.attention_implementation("flash", jnp.float32, 64)
    assert (
        layers.check_attention("cudnn") == "cudnn"
    )  # valid name: whether it runs is checked later
    with pytest.raises(ValueError, match="padded_len=4 is shorter than the 5 tokens"):
        layers.padded_attention(*(jnp.zeros((1, 5, 1, 8)),) * 3, padded_len=4, implementation="xla")
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 5, 2, 8)) for _ in range(3))
    got = layers.dot_product_attention(*(jnp.float32(a) for a in (q, k, v)))
    np.testing.assert_allclose(got, _attention_reference(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.fixture
def cudnn_visible(monkeypatch):
    """Makes jax's cuDNN attention checks pass on this CPU machine, for lowering to CUDA only."""
    fa = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
    if not hasattr(fa, "check_cudnn_version") or not hasattr(fa, "check_compute_capability"):
        pytest.skip("this jax has other cuDNN checks")
    monkeypatch.setattr(fa, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fa, "check_compute_capability", lambda capability: True)
    layers._cudnn_problem.cache_clear()
    yield
    layers._cudnn_problem.cache_clear()


def _cuda_hlo(f, *specs) -> str:
    return jax.jit(f).trace(*specs).lower(lowering_platforms=("cuda",)).as_text()


def test_auto_attention_lowers_to_cudnn_kernels_on_gpu(cudnn_visible):
    """What a GPU run compiles: U-ViT's bf16 train-step gradient with an odd token count (16 tokens +
    the time token) uses cuDNN's fused forward and backward kernels, through the padding."""
    from dctjax.models.uvit import UViT

    assert layers.attention_implementation("auto", jnp.bfloat16, 16) == "cudnn"
    assert layers.attention_implementation("auto", jnp.float32, 16) == "xla"
    model = UViT((16, 6), size="T", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(params, x, t):
        return jnp.mean(nnx.merge(graphdef, params)(x, t) ** 2)

    specs = (jax.ShapeDtypeStruct((2, 16, 6), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.float32))
    hlo = _cuda_hlo(jax.grad(loss), params, *specs)
    blocks = 2 * (model.depth // 2) + 1  # in-blocks, the mid block, out-blocks
    assert hlo.count("__cudnn$fmhaSoftmax(") == blocks
    assert hlo.count("__cudnn$fmhaSoftmaxBackward(") == hlo.count("__cudnn$fmhaSoftmax(")
    # why the padding: jax's own cuDNN training rule rejects the odd length unpadded
    q = jax.ShapeDtypeStruct((2, 17, 4, 16), jnp.bfloat16)
    unpadded = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn")  # noqa: E731
    with pytest.raises(NotImplementedError, match="sequence length"):
        _cuda_hlo(jax.grad(lambda *a: unpadded(*a).astype(jnp.float32).sum()), q, q, q)


# ----------------------------------------------------------------------------- Pallas TPU kernel


def _attention_grads_reference(q, k, v, g):
    """Closed-form float64 VJP of `_attention_reference` at cotangent g; (N, T, h, d) arrays."""
    scale = 1 / math.sqrt(q.shape[-1])
    logits = np.einsum("nthd,nshd->nhts", q, k) * scale
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("nhts,nshd->nthd", p, v)
    dv = np.einsum("nhts,nthd->nshd", p, g)
    dp = np.einsum("nthd,nshd->nhts", g, v)
    ds = p * (dp - np.einsum("nthd,nthd->nht", g, o)[..., None])
    dq = np.einsum("nhts,nshd->nthd", ds, k) * scale
    dk = np.einsum("nhts,nthd->nshd", ds, q) * scale
    return dq, dk, dv


@pytest.mark.parametrize(
    "shape",
    [(2, 17, 2, 16), (1, 288, 1, 8), (1, 128, 2, 24)],  # U-ViT-T-like, JiT's 32 + 256, no padding
)
def test_pallas_tpu_attention_interpret_matches_float64(shape):
    """The splash kernel in the Pallas interpreter: padded to a multiple of 128 with the padding
    masked by segment ids, values and gradients equal float64 attention over the T real tokens."""
    rng = np.random.default_rng(4)
    q, k, v, g = (rng.standard_normal(shape) for _ in range(4))
    f = jax.jit(lambda *a: layers.pallas_tpu_attention(*a, interpret=True))
    args = tuple(jnp.float32(a) for a in (q, k, v))
    out, vjp = jax.vjp(f, *args)
    assert out.shape == shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _attention_reference(q, k, v), rtol=2e-5, atol=2e-5)
    for got, ref in zip(vjp(jnp.float32(g)), _attention_grads_reference(q, k, v, g), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # bfloat16 inputs: float32 logits and softmax, one bf16 rounding of the output
    bf = f(*(jnp.bfloat16(a) for a in (q, k, v)))
    assert bf.dtype == jnp.bfloat16
    ref_bf = _attention_reference(*(np.asarray(jnp.bfloat16(a), np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(bf, np.float64), ref_bf, rtol=2e-2, atol=2e-2)


def test_splash_block_size():
    assert [layers.splash_block_size(n) for n in (128, 256, 384, 1152, 1024, 1280)] == [
        128, 256, 384, 384, 512, 256,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a multiple of 128"):
        layers.splash_block_size(1025)


def test_pallas_tpu_requests_on_cpu():
    assert layers.check_attention("pallas_tpu") == "pallas_tpu"
    assert layers.attention_implementation("auto", jnp.bfloat16, 64) == "xla"
    with pytest.raises(
        ValueError, match="backend is cpu, not tpu.*It needs a TPU.*'auto' or 'xla'"
    ):
        layers.attention_implementation("pallas_tpu", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="attention='splash' is not one of"):
        layers.attention_implementation("splash", jnp.bfloat16, 64)


@pytest.fixture
def tpu_visible(monkeypatch):
    """Makes jax's default backend look like a TPU on this CPU machine, for lowering only."""
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    layers._cudnn_problem.cache_clear()
    yield monkeypatch
    layers._cudnn_problem.cache_clear()


def _kernel_runs(hlo: str) -> dict[str, int]:
    """How often each Mosaic kernel (by kernel_name) runs in lowered StableHLO text: the custom
    calls sit in private functions that are called once per use (nested calls multiply)."""
    funcs = dict(re.findall(r"func\.func \w+ @(\w+)\((.*?)(?=\n  func\.func |\Z)", hlo, re.S))

    def runs(name: str) -> int:
        if name == "main":
            return 1
        calls = {
            caller: len(re.findall(rf"call @{name}\(", body)) for caller, body in funcs.items()
        }
        return sum(n * runs(caller) for caller, n in calls.items() if n)

    counts: dict[str, int] = {}
    for name, body in funcs.items():
        for kernel in re.findall(r'tpu_custom_call\(.*?kernel_name = "(\w+)"', body):
            counts[kernel] = counts.get(kernel, 0) + runs(name)
    return counts


def _uvit_t_grad_hlo(platform: str = "tpu") -> tuple[str, int]:
    from dctjax.models import make_model

    model = make_model("uvit", input_shape=(16, 6), size="T", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(params, x, t):
        return jnp.mean(nnx.merge(graphdef, params)(x, t) ** 2)

    specs = (jax.ShapeDtypeStruct((8, 16, 6), jnp.float32), jax.ShapeDtypeStruct((8,), jnp.float32))
    lowered = jax.jit(jax.grad(loss)).trace(params, *specs).lower(lowering_platforms=(platform,))
    return lowered.as_text(), 2 * (model.depth // 2) + 1  # in-blocks, the mid block, out-blocks


def test_auto_attention_lowers_to_splash_kernels_on_tpu(tpu_visible):
    """What a one-chip TPU run compiles: U-ViT-T's bf16 train-step gradient (16 tokens + the time
    token, padded to 128) runs the splash forward, dq and dkv kernels once per block."""
    tpu_visible.setattr(jax, "device_count", lambda *a: 1)
    assert layers.attention_implementation("auto", jnp.bfloat16, 16) == "pallas_tpu"
    assert layers.attention_implementation("auto", jnp.float32, 64) == "pallas_tpu"
    assert layers.attention_implementation("pallas_tpu", jnp.bfloat16, 64) == "pallas_tpu"
    hlo, blocks = _uvit_t_grad_hlo()
    assert _kernel_runs(hlo) == {
        "splash_mha_fwd_segmented_residuals": blocks,
        "splash_mha_dq_segmented_no_residuals": blocks,
        "splash_mha_dkv_segmented_no_residuals": blocks,
    }
    assert "tensor<8x4x128x16xbf16>" in hlo  # (N, h, T padded to 128, head dim) for the kernel


def test_pallas_tpu_on_several_devices_needs_the_mesh(tpu_visible):
    """Mosaic kernels are not partitioned automatically: with 8 devices and no mesh set, 'auto'
    keeps XLA and 'pallas_tpu' says why; under `jax.set_mesh` each batch shard runs the kernel."""
    assert jax.device_count() == 8
    assert layers.attention_implementation("auto", jnp.bfloat16, 16) == "xla"
    with pytest.raises(ValueError, match="8 devices and no mesh is set.*jax.set_mesh"):
        layers.attention_implementation("pallas_tpu", jnp.bfloat16, 16)
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        assert layers.attention_implementation("auto", jnp.bfloat16, 16) == "pallas_tpu"
        hlo, blocks = _uvit_t_grad_hlo()
    assert set(_kernel_runs(hlo).values()) == {blocks}
    assert "tensor<1x4x128x16xbf16>" in hlo  # one of the 8 batch shards per kernel call


def test_pallas_tpu_interpret_through_the_models(monkeypatch):
    """Every model reaches the kernel through `layers.dot_product_attention`: U-ViT-T's output and
    gradient with the kernel (interpreted, under a batch-sharded mesh) equal XLA attention's."""
    from dctjax.models import make_model

    model = make_model("uvit", input_shape=(16, 6), size="T", rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(5)
    x, t = jnp.float32(rng.standard_normal((8, 16, 6))), jnp.float32(rng.uniform(size=8))

    def loss(params):
        return jnp.mean(nnx.merge(graphdef, params)(x, t) ** 2)

    ref, ref_grad = jax.jit(jax.value_and_grad(loss))(params)
    monkeypatch.setattr(layers, "_PALLAS_INTERPRET", True)
    assert layers.attention_implementation("auto", jnp.float32, 16) == "pallas_tpu"
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        step = jax.jit(jax.value_and_grad(loss))
        jaxpr = str(step.trace(params).jaxpr)
        got, grad = step(params)
    assert jaxpr.count("pallas_call") >= 3 and "shard_map" in jaxpr  # fwd, dq, dkv kernels
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rms_norm_values_and_closed_form_gradients():
    """rms_norm and its custom VJP against float64 NumPy and against autodiff of the formula."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (3, 5, 8)).astype(np.float32)
    w = rng.normal(1.0, 0.2, (8,)).astype(np.float32)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64**2, -1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(np.asarray(layers.rms_norm(x, w, 1e-6)), want, rtol=1e-5)

    def plain(x, w):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * w

    g = rng.normal(size=x.shape).astype(np.float32)
    got = jax.grad(lambda x, w: jnp.sum(layers.rms_norm(x, w, 1e-6) * g), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(plain(x, w) * g), (0, 1))(x, w)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)

"""JiT (Li & He) and its Spectral Forcing form against an independent PyTorch transcription.

`benchmarks/torch_jit.py` transcribes the reference PyTorch code (LTH14/JiT, WeichenFan/
Spectral_Forcing) in NCHW; the NNX weights are copied into it after every parameter is perturbed
(the zero-initialised adaLN and output layers included), and both run the same inputs.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
from flax import nnx

from dctjax.models import JIT_SIZES, JiT, make_model, model_sizes, registered_models
from dctjax.models.jit import apply_rope, rope_tables
from dctjax.models.layers import dropout

IMG = (32, 32, 3)
TINY = dict(input_shape=IMG, size="T")  # D 64, depth 4, 4 heads (head dim 16), bottleneck 32


def _jit(**kw):
    return JiT(**{**TINY, **kw}, rngs=nnx.Rngs(0))


def _perturb(model, seed=0, std=0.05):
    """Adds N(0, std^2) to every parameter, so zero-initialised layers are exercised too."""
    rng = np.random.default_rng(seed)
    params = nnx.state(model, nnx.Param)
    new = jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + std * rng.standard_normal(p.shape), p.dtype), params
    )
    nnx.update(model, new)
    return model


@nnx.jit
def _forward(model, x, t, y=None, key=None):
    return model(x, t, y, dropout_key=key)


def _inputs(n=3, seed=1, shape=IMG):
    kx, kt = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, *shape), jnp.float32)
    t = jax.random.uniform(kt, (n,), jnp.float32)
    return x, t


# ----------------------------------------------------------------------------- torch comparison


def _to_torch(model, torch):
    """Builds the transcription with `model`'s hyper-parameters and copies its weights."""
    ref = pytest.importorskip("benchmarks.torch_jit")
    h, w, c = model.input_shape
    tm = ref.JiT(
        input_size=(h, w),
        patch_size=model.patch_size,
        in_channels=c,
        hidden_size=model.embed_dim,
        depth=model.depth,
        num_heads=model.num_heads,
        num_classes=model.num_classes,
        bottleneck_dim=model.bottleneck,
        in_context_len=model.in_context_len,
        in_context_start=model.in_context_start,
        sf=model.spectral_forcing,
    ).double()

    def t(a):
        return torch.from_numpy(np.asarray(a[...], np.float64).copy())

    def lin(dst, src):
        dst.weight.data = t(src.kernel).T.contiguous()
        if src.bias is not None:
            dst.bias.data = t(src.bias)

    xe = model.x_embedder
    if model.spectral_forcing is None:
        tm.x_embedder.proj1.weight.data = t(xe.proj1.kernel).permute(3, 2, 0, 1).contiguous()
    else:
        lin(tm.x_embedder.proj1, xe.proj1)
    tm.x_embedder.proj2.weight.data = t(xe.proj2.kernel).T[:, :, None, None].contiguous()
    tm.x_embedder.proj2.bias.data = t(xe.proj2.bias)
    lin(tm.t_embedder.mlp[0], model.t_embedder.linear1)
    lin(tm.t_embedder.mlp[2], model.t_embedder.linear2)
    tm.y_embedder.embedding_table.weight.data = t(model.y_embedder.embedding)
    if model.in_context_len:
        tm.in_context_posemb.data = t(model.in_context_posemb)
    for tb, b in zip(tm.blocks, model.blocks, strict=True):
        tb.norm1.weight.data, tb.norm2.weight.data = t(b.norm1.weight), t(b.norm2.weight)
        tb.attn.q_norm.weight.data = t(b.attn.q_norm.weight)
        tb.attn.k_norm.weight.data = t(b.attn.k_norm.weight)
        lin(tb.attn.qkv, b.attn.qkv)
        lin(tb.attn.proj, b.attn.proj)
        lin(tb.mlp.w12, b.mlp.w12)
        lin(tb.mlp.w3, b.mlp.w3)
        lin(tb.adaLN_modulation[1], b.adaLN_modulation)
    fl = model.final_layer
    tm.final_layer.norm_final.weight.data = t(fl.norm_final.weight)
    lin(tm.final_layer.linear, fl.linear)
    lin(tm.final_layer.adaLN_modulation[1], fl.adaLN_modulation)
    return tm.eval()


def _compare(model, x, t, y, rtol=1e-4):
    torch = pytest.importorskip("torch")
    tm = _to_torch(model, torch)
    out = np.asarray(_forward(model, x, t, y))
    y_t = np.full((x.shape[0],), model.num_classes) if y is None else np.asarray(y)
    with torch.no_grad():
        ref = tm(
            torch.from_numpy(np.asarray(x, np.float64).transpose(0, 3, 1, 2).copy()),
            torch.from_numpy(np.array(t, np.float32)),
            torch.from_numpy(y_t.astype(np.int64)),
        ).numpy()
    ref = ref.transpose(0, 2, 3, 1)
    assert out.dtype == np.float32 and out.shape == x.shape
    scale = np.abs(ref).max()
    assert scale > 0.05  # not a trivial all-zero comparison
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(
    "kw,labels",
    [
        (dict(patch_size=8, num_classes=10), [3, 0, 9]),  # class-conditional
        (dict(patch_size=8, num_classes=10), None),  # the null class, row 10
        (dict(patch_size=4, num_classes=0, in_context_start=2), None),  # unconditional, row 0
        (dict(patch_size=8, num_classes=5, in_context_start=0, in_context_len=3), [1, 4, 5]),
        (dict(patch_size=8, num_classes=5, in_context_len=0), [1, 2, 3]),  # no in-context tokens
    ],
)
def test_vanilla_matches_torch(kw, labels):
    model = _perturb(_jit(**kw))
    x, t = _inputs()
    _compare(model, x, t, None if labels is None else jnp.asarray(labels))


def test_non_square_matches_torch():
    model = _perturb(_jit(input_shape=(16, 32, 3), patch_size=4, num_classes=3))
    x, t = _inputs(shape=(16, 32, 3))
    _compare(model, x, t, jnp.asarray([0, 1, 2]))


@pytest.mark.parametrize(
    "sf",
    [
        {},  # the reference default: full-image DCT, kappa 30, c(t) = 0.05 + 0.95 t
        dict(window_size=16, kappa=20.0, c_min=0.1, c_max=0.9),
        dict(fixed_scale=0.3),  # the time-independent ablation
    ],
)
def test_spectral_forcing_matches_torch(sf):
    model = _perturb(_jit(patch_size=8, num_classes=4, spectral_forcing=sf))
    assert model.x_embedder.proj1.kernel.shape == (3 * 8 * 8, 32)  # Linear(C p^2 -> bottleneck)
    x, t = _inputs()
    t = t.at[0].set(0.0)  # the strongest low-pass
    _compare(model, x, t, jnp.asarray([0, 3, 4]))


def test_spectral_forcing_filters_the_input():
    """The SF model sees the low-passed input: at t = 0 the highest DCT basis function (gain
    sigmoid(30 (0.05 - 1)) ~ 4e-13) is removed, so adding it barely changes the output; at t = 1
    (gain 0.5) it is kept."""
    model = _perturb(_jit(patch_size=8, spectral_forcing={}))
    x, _ = _inputs(n=1)
    delta = np.zeros((32, 32))
    delta[31, 31] = 8.0
    corner = scipy.fft.idctn(delta, type=2, norm="ortho")
    xc = x + jnp.asarray(corner, jnp.float32)[None, :, :, None]
    out = _forward(model, jnp.concatenate([xc, x, xc, x]), jnp.asarray([0.0, 0.0, 1.0, 1.0]))
    d0 = float(jnp.abs(out[0] - out[1]).max())
    d1 = float(jnp.abs(out[2] - out[3]).max())
    assert d0 < 1e-4 < d1


# ----------------------------------------------------------------------------- RoPE


def test_rope_adjacent_pairs_by_hand():
    """2 x 2 grid, head dim 8: freqs (1, 1e4^(-2/4) = 0.01); features 0-3 rotate by the row i,
    4-7 by the column j; adjacent pairs (0,1), (2,3), ... rotate together."""
    cos, sin = rope_tables(8, (2, 2))
    q = np.arange(1.0, 9.0)

    def rot(a, b, angle):  # the pair (a, b) rotated by angle
        return [
            a * math.cos(angle) - b * math.sin(angle),
            b * math.cos(angle) + a * math.sin(angle),
        ]

    expected = {
        0: [1, 2, 3, 4, 5, 6, 7, 8],  # (i, j) = (0, 0)
        1: [1, 2, 3, 4, *rot(5, 6, 1.0), *rot(7, 8, 0.01)],  # (0, 1)
        2: [*rot(1, 2, 1.0), *rot(3, 4, 0.01), 5, 6, 7, 8],  # (1, 0)
        3: [*rot(1, 2, 1.0), *rot(3, 4, 0.01), *rot(5, 6, 1.0), *rot(7, 8, 0.01)],  # (1, 1)
    }
    x = jnp.broadcast_to(jnp.asarray(q, jnp.float32), (1, 4, 1, 8))
    out = np.asarray(apply_rope(x, jnp.asarray(cos), jnp.asarray(sin)))[0, :, 0]
    for n, e in expected.items():
        np.testing.assert_allclose(out[n], e, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cos[3], np.cos([1, 1, 0.01, 0.01, 1, 1, 0.01, 0.01]), rtol=1e-6)


def test_rope_in_context_tokens_unrotated():
    cos, sin = rope_tables(8, (2, 2), num_prefix=3)
    assert cos.shape == sin.shape == (7, 8)
    np.testing.assert_array_equal(cos[:3], 1.0)
    np.testing.assert_array_equal(sin[:3], 0.0)
    plain = rope_tables(8, (2, 2))
    np.testing.assert_array_equal(cos[3:], plain[0])
    np.testing.assert_array_equal(sin[3:], plain[1])
    x = jax.random.normal(jax.random.key(0), (2, 7, 3, 8))
    np.testing.assert_array_equal(
        apply_rope(x, jnp.asarray(cos), jnp.asarray(sin))[:, :3], x[:, :3]
    )


# ----------------------------------------------------------------------------- init, jit, dtypes


def test_zero_output_at_init_and_init_statistics():
    model = _jit(patch_size=8, num_classes=10)
    x, t = _inputs()
    assert float(jnp.abs(_forward(model, x, t, jnp.asarray([1, 2, 3]))).max()) == 0.0
    fl = model.final_layer
    for p in (fl.linear.kernel, fl.linear.bias, fl.adaLN_modulation.kernel):
        assert float(jnp.abs(p[...]).max()) == 0.0
    assert all(float(jnp.abs(b.adaLN_modulation.kernel[...]).max()) == 0.0 for b in model.blocks)
    # xavier-uniform bounds as torch: the conv weight viewed as (out, C p p)
    k1 = np.asarray(model.x_embedder.proj1.kernel[...])
    bound = math.sqrt(6 / (3 * 64 + 32))
    assert np.abs(k1).max() <= bound and np.abs(k1).max() > 0.9 * bound
    qkv = np.asarray(model.blocks[0].attn.qkv.kernel[...])
    assert np.abs(qkv).max() <= math.sqrt(6 / (64 + 192))
    assert abs(np.asarray(model.y_embedder.embedding[...]).std() - 0.02) < 0.004
    assert abs(np.asarray(model.in_context_posemb[...]).std() - 0.02) < 0.004
    assert model.y_embedder.embedding.shape == (11, 64)
    # only Params: the trainer requires it
    assert jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))) == []


def test_jit_grad_and_bf16():
    model = _perturb(_jit(patch_size=8, num_classes=4, proj_dropout=0.1, remat=True))
    x, t = _inputs()
    y = jnp.asarray([0, 1, 2])

    @nnx.jit
    def loss_and_grad(m, x, t, y, key):
        def loss(m):
            return jnp.mean((m(x, t, y, dropout_key=key) - x) ** 2)

        return nnx.value_and_grad(loss)(m)

    start = time.perf_counter()
    value, grads = loss_and_grad(model, x, t, y, jax.random.key(3))
    print(f"jit + grad (compile + run): {time.perf_counter() - start:.2f}s")
    assert np.isfinite(float(value))
    g = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(a)).all() for a in g)
    assert float(jnp.abs(grads["final_layer"]["linear"]["kernel"][...]).max()) > 0

    bf = _perturb(_jit(patch_size=8, num_classes=4, dtype=jnp.bfloat16))
    ref = _perturb(_jit(patch_size=8, num_classes=4))
    out_bf, out_32 = _forward(bf, x, t, y), _forward(ref, x, t, y)
    assert out_bf.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf, nnx.Param)))
    rel = float(jnp.linalg.norm(out_bf - out_32) / jnp.linalg.norm(out_32))
    assert rel < 0.05, rel


# ----------------------------------------------------------------------------- dropout


def test_dropout_only_with_a_key_and_in_the_middle_blocks():
    model = _perturb(_jit(depth=8, patch_size=8, proj_dropout=0.5))
    assert model.dropout_blocks == (2, 3, 4, 5)  # depth//4 <= i < depth//4 * 3
    assert [b.proj_dropout for b in model.blocks] == [0, 0, 0.5, 0.5, 0.5, 0.5, 0, 0]
    x, t = _inputs()
    base = _forward(model, x, t)
    a = _forward(model, x, t, None, jax.random.key(0))
    b = _forward(model, x, t, None, jax.random.key(1))
    assert float(jnp.abs(a - base).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3
    # Zero the gates of the middle blocks: they are then the identity and dropout has no effect.
    for i in model.dropout_blocks:
        blk = model.blocks[i].adaLN_modulation
        blk.kernel[...] = jnp.zeros_like(blk.kernel[...])
        blk.bias[...] = jnp.zeros_like(blk.bias[...])
    a = _forward(model, x, t, None, jax.random.key(0))
    np.testing.assert_allclose(a, _forward(model, x, t), atol=1e-6)
    # proj_dropout=0: a key changes nothing
    plain = _perturb(_jit(patch_size=8))
    a = _forward(plain, x, t, None, jax.random.key(0))
    np.testing.assert_array_equal(a, _forward(plain, x, t))


def test_dropout_function():
    x = jnp.ones((200_000,))
    out = np.asarray(dropout(x, 0.2, jax.random.key(0)))
    assert set(np.unique(out)) <= {0.0, 1.25}
    assert abs((out == 0).mean() - 0.2) < 0.01 and abs(out.mean() - 1.0) < 0.01
    np.testing.assert_array_equal(dropout(x, 0.2, None), x)


# ----------------------------------------------------------------------------- sizes, registry


def _num_params(**kw):
    abstract = nnx.eval_shape(lambda: make_model("jit", rngs=nnx.Rngs(0), **kw))
    return sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param))), abstract


def _closed_form(d, depth, heads, p, bottleneck, classes, ic=32, ch=3):
    hidden = int(4 * d * 2 / 3)
    block = (
        3 * d * d + 3 * d + d * d + d  # qkv, proj (biases)
        + 2 * (d // heads) + 2 * d  # q/k norm, norm1/norm2 weights
        + d * 2 * hidden + 2 * hidden + hidden * d + d  # SwiGLU w12, w3
        + d * 6 * d + 6 * d  # adaLN
    )  # fmt: skip
    return (
        depth * block
        + ch * p * p * bottleneck + bottleneck * d + d  # patch embed
        + 256 * d + d + d * d + d  # timestep MLP
        + (classes + 1) * d + ic * d  # class table, in-context position embedding
        + d + d * 2 * d + 2 * d + d * p * p * ch + p * p * ch  # final layer
    )  # fmt: skip


@pytest.mark.parametrize(
    "size,patch,paper",
    [("B", 16, 131e6), ("L", 16, 459e6), ("H", 16, 953e6), ("700M", 32, None)],
)
def test_param_counts(size, patch, paper):
    n, abstract = _num_params(
        input_shape=(256, 256, 3), size=size, patch_size=patch, num_classes=1000
    )
    d, depth, heads = model_sizes("jit")[size]
    print(f"JiT-{size}/{patch} at 256 px: {n / 1e6:.2f}M parameters")
    assert n == _closed_form(d, depth, heads, patch, abstract.bottleneck, 1000)
    assert abstract.embed_dim // abstract.num_heads == d // heads
    if paper is not None:
        assert abs(n / paper - 1) < 0.01, n
    else:
        assert 680e6 < n < 700e6


def test_registry_and_sizes():
    assert "jit" in registered_models()
    assert model_sizes("jit") == JIT_SIZES
    assert JIT_SIZES["700M"] == (1024, 36, 16) and JIT_SIZES["B"] == (768, 12, 12)
    m = nnx.eval_shape(
        lambda: make_model(
            "jit", input_shape=IMG, size="S", patch_size=8, num_classes=2, rngs=nnx.Rngs(0)
        )
    )
    assert (m.embed_dim, m.depth, m.num_heads, m.bottleneck, m.in_context_start) == (
        192, 6, 3, 64, 2,
    )  # fmt: skip
    assert m.null_class is True and m.null_label == 2 and m.num_tokens == 16
    h = nnx.eval_shape(lambda: _jit(size="B", depth=2, in_context_start=1, patch_size=16))
    assert h.bottleneck == 128 and h.embed_dim == 768
    ml_collections = pytest.importorskip("ml_collections")
    sf = ml_collections.ConfigDict(dict(window_size=16, kappa=30.0))
    m = nnx.eval_shape(lambda: _jit(patch_size=8, spectral_forcing=sf))
    assert m.spectral_forcing == {"window_size": 16, "kappa": 30.0}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(patch_size=5), "patch_size=5"),
        (dict(input_shape=(32, 32)), "input_shape"),
        (dict(embed_dim=60, num_heads=6), "divisible by 4"),  # head dim 10
        (dict(size=None, embed_dim=64, depth=2, num_heads=4), "bottleneck"),
        (dict(size=None, embed_dim=64, depth=2, num_heads=4, bottleneck=8), "in_context_start"),
        (dict(in_context_start=4), "in_context_start"),
        (dict(in_context_len=-1), "in_context_len"),
        (dict(proj_dropout=1.0), "proj_dropout"),
        (dict(attention="flash"), "attention"),
        (dict(dtype=jnp.int32), "dtype"),
        (dict(spectral_forcing=dict(cutoff=0.5)), "valid keys"),
        (dict(spectral_forcing=dict(c_min=0.9, c_max=0.5)), "c_min"),
        (dict(spectral_forcing=dict(window_size=7)), "window_size"),
        (dict(spectral_forcing=dict(schedule="contour")), "k0"),
        (dict(spectral_forcing=0.5), "mapping"),
        (dict(size="XXL"), "size"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: _jit(**kw))


def test_bad_call_arguments():
    model = _jit(patch_size=8)
    x, t = _inputs()
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, jnp.asarray([0, 1, 2]))
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :16], t)
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, t[:2])
    with pytest.raises(ValueError, match="null label"):
        _ = model.null_label
    cond = _jit(patch_size=8, num_classes=3)
    with pytest.raises(ValueError, match="y must be integer"):
        cond(x, t, jnp.asarray([0.0, 1.0, 2.0]))

"""U-ViT (tokens and pixels) against a NumPy transcription of dctdiff.md section 8 / baofff U-ViT."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from dctjax.models import UViT, make_model, model_sizes, registered_models
from dctjax.models.layers import patchify, timestep_embedding, unpatchify

TOKENS = (16, 24)  # T tokens of 6L = 24 features (B = 2, L = 4)
TINY = dict(size="T", embed_dim=32, depth=4, num_heads=4)


def _np(v):
    return np.asarray(v[...], np.float64)


# ----------------------------------------------------------------------------- NumPy reference


def ref_time_embedding(t, dim):
    """Spec 8.1: tau = 999 t; [cos(tau f), sin(tau f)], f_j = exp(-ln(1e4) j / half)."""
    half = dim // 2
    f = np.exp(-math.log(1e4) * np.arange(half) / half)
    # tau and tau*f rounded to float32 like the reference's float32 torch arithmetic.
    args = (np.float32(999.0) * t.astype(np.float32))[:, None] * f.astype(np.float32)[None]
    args = args.astype(np.float64)
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    return np.concatenate([emb, np.zeros_like(emb[:, :1])], -1) if dim % 2 else emb


def ref_linear(x, lin):
    out = x @ _np(lin.kernel)
    return out + _np(lin.bias) if lin.bias is not None else out


def ref_ln(x, ln, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * _np(ln.scale) + _np(ln.bias)


def ref_attention(x, attn, heads):
    n, t, d = x.shape
    qkv = ref_linear(x, attn.qkv).reshape(n, t, 3, heads, d // heads)  # (K H D) feature order
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (N, H, T, hd)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return ref_linear((p @ v).transpose(0, 2, 1, 3).reshape(n, t, d), attn.proj)


def ref_block(x, blk, heads, skip=None):
    if skip is not None:
        x = ref_linear(np.concatenate([x, skip], -1), blk.skip_linear)
    x = x + ref_attention(ref_ln(x, blk.norm1), blk.attn, heads)
    h = ref_linear(ref_ln(x, blk.norm2), blk.mlp.fc1)
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))  # exact GELU
    return x + ref_linear(h, blk.mlp.fc2)


def ref_conv(x, conv, stride, pad):
    """Cross-correlation NHWC, kernel (kh, kw, Cin, Cout), by explicit shifts."""
    w, b = _np(conv.kernel), _np(conv.bias)
    kh, kw = w.shape[:2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[-1])) + b
    for a in range(kh):
        for c in range(kw):
            out += x[:, a : a + stride * ho : stride, c : c + stride * wo : stride] @ w[a, c]
    return out


def ref_unpatchify(x, p, gh, gw, ch):
    """einops 'B (h w) (p1 p2 C) -> B (h p1) (w p2) C', written as loops."""
    out = np.zeros((x.shape[0], gh * p, gw * p, ch))
    for i in range(gh):
        for j in range(gw):
            out[:, i * p : (i + 1) * p, j * p : (j + 1) * p] = x[:, i * gw + j].reshape(
                -1, p, p, ch
            )
    return out


def ref_uvit(model, x, t, y=None, pairing="stack"):
    """The U-ViT forward pass of dctdiff.md 8.1 (and baofff's pixel variant) in float64 NumPy.

    pairing='stack' pops the skips (first out-block <-> last in-block); 'queue' is the wrong order.
    """
    x = np.asarray(x, np.float64)
    heads, d = model.num_heads, model.embed_dim
    if model.patch_size is None:
        h = ref_linear(x, model.patch_embed)
    else:
        h = ref_conv(x, model.patch_embed, model.patch_size, 0).reshape(x.shape[0], -1, d)
    extras = [ref_time_embedding(np.asarray(t), d)[:, None]]
    if y is not None:
        extras.insert(0, _np(model.label_emb.embedding)[np.asarray(y)][:, None])
    h = np.concatenate([*extras, h], 1) + _np(model.pos_embed)
    skips = []
    for blk in model.in_blocks:
        h = ref_block(h, blk, heads)
        skips.append(h)
    h = ref_block(h, model.mid_block, heads)
    for blk in model.out_blocks:
        h = ref_block(h, blk, heads, skips.pop() if pairing == "stack" else skips.pop(0))
    h = ref_linear(ref_ln(h, model.norm), model.decoder_pred)[:, len(extras) :]
    if model.patch_size is not None:
        (gh, gw), p = model.grid_shape, model.patch_size
        h = ref_unpatchify(h, p, gh, gw, x.shape[-1])
        if model.final_layer is not None:
            h = ref_conv(h, model.final_layer, 1, 1)
    return h


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def uncond():
    return make_model("uvit", input_shape=TOKENS, **TINY, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def cond():
    return make_model("uvit", input_shape=TOKENS, **TINY, num_classes=5, rngs=nnx.Rngs(1))


@jax.jit
def _fwd(model, x, t, y=None):
    """One compiled forward pass (faster than op-by-op on CPU); the module is a pytree."""
    return model(x, t, y)


def _perturbed(model, seed=0, scale=0.2):
    """A copy with every Param + N(0, scale^2): pre-activations of order 1, so that e.g. the
    tanh-approximate GELU or a wrong LN epsilon would show (at init they are ~0.1)."""
    model = nnx.clone(model)
    rng = np.random.default_rng(seed)  # host-side noise: nothing to compile
    noise = lambda a: a + jnp.asarray(scale * rng.normal(size=a.shape), a.dtype)  # noqa: E731
    nnx.update(model, jax.tree.map(noise, nnx.state(model, nnx.Param)))
    return model


def _inputs(shape, n=2, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, *shape)).astype(np.float32), r.uniform(size=(n,)).astype(np.float32)


# ----------------------------------------------------------------------------- tests


def test_time_embedding_closed_form():
    t = np.array([0.0, 1e-3, 0.37, 1.0], np.float32)
    for dim in (8, 33):
        got = np.asarray(timestep_embedding(999.0 * jnp.asarray(t), dim))
        np.testing.assert_allclose(got, ref_time_embedding(t, dim), atol=2e-6)
        # Exact (float64) tau = 999 t: only the float32 rounding of tau * f (|arg| < 1e3) differs.
        half = dim // 2
        f = np.exp(-np.log(1e4) * np.arange(half) / half)
        a = 999.0 * t.astype(np.float64)[:, None] * f
        np.testing.assert_allclose(
            got[:, : 2 * half], np.concatenate([np.cos(a), np.sin(a)], -1), atol=2e-4
        )
        assert got.shape == (4, dim) and (dim % 2 == 0 or np.all(got[:, -1] == 0))


@pytest.mark.parametrize("which", ["uncond", "cond"])
@pytest.mark.parametrize("perturb", [False, True])
def test_matches_numpy_reference(which, perturb, request):
    model = request.getfixturevalue(which)
    model = _perturbed(model) if perturb else model
    x, t = _inputs(TOKENS)
    y = np.array([4, 1]) if which == "cond" else None
    got = np.asarray(
        _fwd(model, jnp.asarray(x), jnp.asarray(t), None if y is None else jnp.asarray(y))
    )
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, ref_uvit(model, x, t, y), rtol=1e-4, atol=2e-5)
    assert model.extras == (2 if which == "cond" else 1)


def test_skip_pairing_first_out_block_takes_last_in_block(uncond):
    x, t = _inputs(TOKENS, seed=3)
    got = np.asarray(_fwd(uncond, jnp.asarray(x), jnp.asarray(t)))
    np.testing.assert_allclose(got, ref_uvit(uncond, x, t, pairing="stack"), rtol=1e-4, atol=2e-5)
    wrong = ref_uvit(uncond, x, t, pairing="queue")
    assert np.abs(got - wrong).max() > 1e-3  # the test can tell the two pairings apart


def test_init_statistics(cond):
    model = cond
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(state)
    }
    kernels = np.concatenate([v.ravel() for k, v in flat.items() if "kernel" in k])
    assert kernels.size > 60_000
    assert abs(kernels.std() - 0.02) < 5e-4 and abs(kernels.mean()) < 3e-4
    assert np.mean(np.abs(kernels) > 0.04) > 0.03  # N(0, 0.02^2): ~4.6% beyond 2 sigma
    assert np.abs(kernels).max() > 0.07  # > 3.5 sigma: not truncated at 2 sigma
    for k, v in flat.items():
        if "norm" in k and "scale" in k:
            assert np.all(v == 1), k
        elif "bias" in k:
            assert np.all(v == 0), k
    pos = np.asarray(model.pos_embed[...])
    assert pos.shape == (1, 2 + 16, 32) and abs(pos.std() - 0.02) < 3e-3
    emb = np.asarray(model.label_emb.embedding[...])  # N(0, 1), not Flax's std 1/sqrt(D) = 0.18
    assert emb.shape == (5, 32) and abs(emb.std() - 1.0) < 0.3
    assert all(m.epsilon == 1e-5 for _, m in nnx.iter_graph(model) if isinstance(m, nnx.LayerNorm))


def _num_params(**kw):
    abstract = nnx.eval_shape(lambda: make_model("uvit", rngs=nnx.Rngs(0), **kw))
    return sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def _closed_form_count(d, depth, tokens, feats, classes=0):
    block = 12 * d * d + 10 * d  # qkv (no bias) 3D^2, proj D^2+D, MLP 8D^2+5D, 2 LN 4D
    extras = 2 if classes else 1
    return (
        (depth + 1) * block
        + depth // 2 * (2 * d * d + d)  # skip Dense(2D -> D)
        + (extras + tokens) * d  # position embedding
        + (feats * d + d) + (d * feats + feats) + 2 * d  # token embedding, head, final LN
        + classes * d
    )  # fmt: skip


@pytest.mark.parametrize(
    "size,tokens,feats,paper",
    [("S", 256, 24, 44e6), ("M", 1024, 48, 131e6)],  # CelebA-64 / FFHQ-256 settings
)
def test_param_counts(size, tokens, feats, paper):
    n = _num_params(input_shape=(tokens, feats), size=size)
    d, depth, _ = model_sizes("uvit")[size]
    assert n == _closed_form_count(d, depth, tokens, feats)
    assert abs(n / paper - 1) < 0.02, n


def test_pixel_uvit_matches_reference_and_shapes():
    model = make_model(
        "uvit_pixel", input_shape=(8, 12, 3), patch_size=4, num_classes=3, **TINY, rngs=nnx.Rngs(3)
    )
    assert model.grid_shape == (2, 3) and model.conv and model.num_tokens == 6
    x, t = _inputs((8, 12, 3))
    y = np.array([0, 2])
    got = np.asarray(_fwd(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_uvit(model, x, t, y), rtol=1e-4, atol=2e-5)


def test_patchify_unpatchify_inverse():
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
    p = patchify(jnp.asarray(x), 4)
    assert p.shape == (2, 6, 48)
    # Features in (p1, p2, C) order: token (i, j) = x[i*4:(i+1)*4, j*4:(j+1)*4, :] flattened.
    np.testing.assert_array_equal(np.asarray(p[:, 1 * 3 + 2]), x[:, 4:8, 8:12].reshape(2, -1))
    np.testing.assert_array_equal(np.asarray(unpatchify(p, 4, (2, 3), 3)), x)
    np.testing.assert_array_equal(ref_unpatchify(np.asarray(p, np.float64), 4, 2, 3, 3), x)


def test_jit_grads_remat_and_bf16(uncond):
    x, t = (jnp.asarray(a) for a in _inputs(TOKENS, n=2, seed=5))
    graphdef, params = nnx.split(uncond)

    @jax.jit
    def loss_and_grad(params, gd_remat):
        def loss(p):
            return jnp.mean(nnx.merge(gd_remat, p)(x, t) ** 2)

        return jax.value_and_grad(loss)(params)

    val, grads = loss_and_grad(params, graphdef)
    assert np.isfinite(val) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    remat = make_model("uvit", input_shape=TOKENS, **TINY, remat=True, rngs=nnx.Rngs(0))
    graphdef_r, params_r = nnx.split(remat)
    val_r, grads_r = loss_and_grad(params_r, graphdef_r)
    np.testing.assert_allclose(val_r, val, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)

    bf16 = make_model("uvit", input_shape=TOKENS, **TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert bf16.pos_embed[...].dtype == jnp.float32
    ref = np.asarray(_fwd(uncond, x, t))
    got = _fwd(bf16, x, t)
    assert got.dtype == jnp.float32
    assert np.linalg.norm(np.asarray(got) - ref) / np.linalg.norm(ref) < 0.05


def test_scalar_time_broadcasts(uncond):
    x, _ = _inputs(TOKENS)
    a = _fwd(uncond, jnp.asarray(x), 0.25)
    b = _fwd(uncond, jnp.asarray(x), jnp.full((2,), 0.25))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_registry():
    assert {"uvit", "uvit_pixel", "dit"} <= set(registered_models())
    assert {"S", "M", "L", "H", "M18", "M20", "T"} <= set(model_sizes("uvit"))
    assert model_sizes("uvit")["M18"] == (768, 18, 12)
    with pytest.raises(ValueError, match="unknown model 'vit'.*uvit"):
        make_model("vit", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no argument.*'depht'"):
        make_model("uvit", input_shape=TOKENS, depht=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        make_model("uvit", size="T", rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(size="Q"), "size='Q'"),
        (dict(size="T", num_heads=5), "embed_dim=64 is not divisible by num_heads=5"),
        (dict(size=None, embed_dim=64, depth=2), "num_heads is not set"),
        (dict(size="T", depth=0), "depth=0"),
        (dict(size="T", dtype=jnp.int32), "dtype"),
        (dict(size="T", num_classes=-1), "num_classes"),
        (dict(size="T", conv=True), "conv=True"),
        (dict(size="T", input_shape=(16, 16, 3)), "input_shape"),
        (dict(size="T", input_shape=(18, 16, 3), patch_size=4), "not divisible by patch_size=4"),
        (dict(size="T", input_shape=(16, 24), patch_size=4), "input_shape"),
        (dict(size="T", mlp_ratio=0), "mlp_ratio"),
        (dict(size="T", attention="flash"), "attention='flash' is not one of"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    kwargs = {"input_shape": TOKENS, **kwargs}
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: UViT(rngs=nnx.Rngs(0), **kwargs))


def test_bad_calls_raise(uncond, cond):
    x, t = (jnp.asarray(a) for a in _inputs(TOKENS))
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, t, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="pass y"):
        cond(x, t)
    with pytest.raises(ValueError, match="x must have shape"):
        uncond(x[:, :8], t)
    with pytest.raises(ValueError, match="t must have shape"):
        uncond(x, jnp.zeros((3,)))
    with pytest.raises(ValueError, match="y must be integer"):
        cond(x, t, jnp.array([0.0, 1.0]))

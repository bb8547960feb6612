"""DiT (adaLN-Zero) against a NumPy transcription of Peebles & Xie's DiT and MAE's 2-D sin-cos."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dctjax.models import DiT, make_model, model_sizes
from dctjax.models.layers import sincos_pos_embed_2d

TOKENS = (6, 12)  # a 2 x 3 token grid (non-square on purpose)
GRID = (2, 3)
TINY = dict(size="T", embed_dim=32, depth=2, num_heads=4)


def _np(v):
    return np.asarray(v[...], np.float64)


# ----------------------------------------------------------------------------- NumPy reference


def mae_1d(embed_dim, pos):
    """MAE `get_1d_sincos_pos_embed_from_grid`."""
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(embed_dim, grid_shape):
    """MAE `get_2d_sincos_pos_embed`, with (gh, gw) in place of a square grid_size."""
    gh, gw = grid_shape
    grid = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape([2, 1, gh, gw])
    return np.concatenate(
        [mae_1d(embed_dim // 2, grid[0]), mae_1d(embed_dim // 2, grid[1])], axis=1
    )


def dit_timestep_embedding(t, dim=256):
    """DiT's `TimestepEmbedder.timestep_embedding` of tau = 999 t, float32 arguments."""
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / half).astype(np.float32)
    args = ((np.float32(999.0) * t.astype(np.float32))[:, None] * freqs[None]).astype(np.float64)
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


def lin(x, m):
    return x @ _np(m.kernel) + _np(m.bias)


def silu(x):
    return x / (1 + np.exp(-x))


def ln(x, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def ref_attention(x, attn, heads):
    n, t, d = x.shape
    qkv = lin(x, attn.qkv).reshape(n, t, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    s = q @ k.transpose(0, 1, 3, 2) * (d // heads) ** -0.5
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return lin((p @ v).transpose(0, 2, 1, 3).reshape(n, t, d), attn.proj)


def ref_mlp(x, mlp):
    h = lin(x, mlp.fc1)
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GELU(tanh)
    return lin(h, mlp.fc2)


def ref_dit(model, x, t, y=None):
    d, heads = model.embed_dim, model.num_heads
    h = lin(np.asarray(x, np.float64), model.x_embedder) + mae_2d(d, model.grid_shape)[None]
    te = model.t_embedder
    c = lin(silu(lin(dit_timestep_embedding(np.asarray(t)), te.linear1)), te.linear2)
    if y is not None:
        c = c + _np(model.y_embedder.embedding)[np.asarray(y)]
    for blk in model.blocks:
        sm, cm, gm, sp, cp, gp = np.split(lin(silu(c), blk.adaLN_modulation), 6, axis=-1)
        h = h + gm[:, None] * ref_attention(modulate(ln(h), sm, cm), blk.attn, heads)
        h = h + gp[:, None] * ref_mlp(modulate(ln(h), sp, cp), blk.mlp)
    fl = model.final_layer
    shift, scale = np.split(lin(silu(c), fl.adaLN_modulation), 2, axis=-1)
    return lin(modulate(ln(h), shift, scale), fl.linear)


# ----------------------------------------------------------------------------- helpers


@jax.jit
def _fwd(model, x, t, y=None):
    return model(x, t, y)


def _randomize(module, seed, scale=0.2):
    """Replaces every Param of `module` by N(0, scale^2) (the zero-init would hide everything)."""
    rng = np.random.default_rng(seed)  # host-side noise: nothing to compile
    new = lambda a: jnp.asarray(scale * rng.normal(size=a.shape), a.dtype)  # noqa: E731
    nnx.update(module, jax.tree.map(new, nnx.state(module, nnx.Param)))


def _inputs(n=2, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, *TOKENS)).astype(np.float32), r.uniform(size=(n,)).astype(np.float32)


@pytest.fixture(scope="module")
def cond():
    return make_model(
        "dit", input_shape=TOKENS, grid_shape=GRID, num_classes=4, **TINY, rngs=nnx.Rngs(0)
    )


@pytest.fixture(scope="module")
def random_cond():
    m = make_model(
        "dit", input_shape=TOKENS, grid_shape=GRID, num_classes=4, **TINY, rngs=nnx.Rngs(1)
    )
    _randomize(m, 7)
    return m


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dim,grid", [(64, (4, 4)), (32, (2, 3)), (16, (3, 1))])
def test_pos_embed_matches_mae(dim, grid):
    got = sincos_pos_embed_2d(dim, grid)
    assert got.shape == (grid[0] * grid[1], dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, mae_2d(dim, grid), atol=1e-6)
    # Raster order: the first half depends on the column only, the second on the row only.
    gh, gw = grid
    cols = got[:, : dim // 2].reshape(gh, gw, -1)
    rows = got[:, dim // 2 :].reshape(gh, gw, -1)
    np.testing.assert_array_equal(cols, np.broadcast_to(cols[:1], cols.shape))
    np.testing.assert_array_equal(rows, np.broadcast_to(rows[:, :1], rows.shape))


def test_zero_output_and_init(cond):
    x, t = _inputs()
    out = np.asarray(_fwd(cond, jnp.asarray(x), jnp.asarray(t), jnp.array([0, 3])))
    assert out.shape == x.shape and out.dtype == np.float32 and np.all(out == 0)
    for blk in cond.blocks:
        assert np.all(_np(blk.adaLN_modulation.kernel) == 0) and np.all(
            _np(blk.adaLN_modulation.bias) == 0
        )
    assert np.all(_np(cond.final_layer.linear.kernel) == 0)
    assert cond.y_embedder.embedding.shape == (5, 32)  # num_classes + the null row
    assert abs(_np(cond.y_embedder.embedding).std() - 0.02) < 6e-3
    assert abs(_np(cond.t_embedder.linear1.kernel).std() - 0.02) < 1e-3
    # xavier-uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    w = _np(cond.blocks[0].mlp.fc1.kernel)
    a = math.sqrt(6 / (32 + 128))
    assert (
        np.abs(w).max() <= a
        and np.abs(w).max() > 0.95 * a
        and abs(w.std() - a / math.sqrt(3)) < 0.01
    )
    assert np.all(_np(cond.x_embedder.bias) == 0)


def test_adaln_zero_gates():
    model = make_model("dit", input_shape=TOKENS, grid_shape=GRID, **TINY, rngs=nnx.Rngs(2))
    blk, d = model.blocks[0], 32
    r = np.random.default_rng(0)
    h = jnp.asarray(r.normal(size=(2, *TOKENS[:1], d)), jnp.float32)
    c = jnp.asarray(r.normal(size=(2, d)), jnp.float32)
    apply = jax.jit(lambda b, h, c: b(h, c))
    np.testing.assert_array_equal(
        np.asarray(apply(blk, h, c)), np.asarray(h)
    )  # zero gates: identity
    _randomize(blk.adaLN_modulation, 3)
    assert np.abs(np.asarray(apply(blk, h, c) - h)).max() > 1e-2
    # Zeroing only the gate columns ([shift, scale, gate] x [msa, mlp]) gives the identity back.
    for m in (blk.adaLN_modulation.kernel, blk.adaLN_modulation.bias):
        m[...] = m[...].at[..., 2 * d : 3 * d].set(0).at[..., 5 * d : 6 * d].set(0)
    np.testing.assert_array_equal(np.asarray(apply(blk, h, c)), np.asarray(h))


def test_matches_numpy_reference(random_cond):
    x, t = _inputs(seed=1)
    y = np.array([3, 0])
    got = np.asarray(_fwd(random_cond, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    np.testing.assert_allclose(got, ref_dit(random_cond, x, t, y), rtol=1e-4, atol=2e-5)
    # y=None selects the null row (index num_classes), as for classifier-free guidance.
    null = np.asarray(_fwd(random_cond, jnp.asarray(x), jnp.asarray(t)))
    np.testing.assert_allclose(
        null, ref_dit(random_cond, x, t, np.array([4, 4])), rtol=1e-4, atol=2e-5
    )
    assert random_cond.null_label == 4


def test_jit_grads_and_bf16(random_cond):
    x, t = (jnp.asarray(a) for a in _inputs(seed=2))
    y = jnp.array([1, 2])
    graphdef, params = nnx.split(random_cond)
    loss = jax.jit(jax.value_and_grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(x, t, y) ** 2)))
    val, grads = loss(params)
    assert np.isfinite(val) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.abs(np.asarray(grads["blocks"][0]["adaLN_modulation"]["kernel"][...])).max() > 0

    bf16 = make_model(
        "dit",
        input_shape=TOKENS,
        grid_shape=GRID,
        num_classes=4,
        dtype="bfloat16",
        **TINY,
        rngs=nnx.Rngs(1),
    )
    nnx.update(bf16, nnx.state(random_cond, nnx.Param))
    assert bf16.x_embedder.kernel[...].dtype == jnp.float32
    ref = np.asarray(_fwd(random_cond, x, t, y))
    got = _fwd(bf16, x, t, y)
    assert got.dtype == jnp.float32
    assert np.linalg.norm(np.asarray(got) - ref) / np.linalg.norm(ref) < 0.05


def test_param_count_xl():
    """DiT-XL/2 on 32x32x4 latents (256 tokens of 2*2*4) has 675M parameters (paper, table 4)."""
    abstract = nnx.eval_shape(
        lambda: make_model(
            "dit", input_shape=(256, 16), size="XL", num_classes=1000, rngs=nnx.Rngs(0)
        )
    )
    n = sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert abs(n / 675e6 - 1) < 0.005, n
    assert model_sizes("dit") == {
        "T": (64, 4, 4),
        "S": (384, 12, 6),
        "B": (768, 12, 12),
        "L": (1024, 24, 16),
        "XL": (1152, 28, 16),
    }


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(size="XXL"), "size='XXL'"),
        (dict(size="T", embed_dim=30, num_heads=6), "divisible by 4"),
        (dict(size="T", num_heads=3), "not divisible by num_heads=3"),
        (dict(size="T"), "grid_shape is needed"),
        (dict(size="T", grid_shape=(3, 3)), "grid_shape=\\(3, 3\\)"),
        (dict(size="T", input_shape=(4, 4, 3)), "must be \\(T, F\\)"),
        (dict(size="T", grid_shape=GRID, dtype="int8"), "dtype"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    kwargs = {"input_shape": TOKENS, **kwargs}
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: DiT(rngs=nnx.Rngs(0), **kwargs))


def test_bad_calls_raise():
    x, t = (jnp.asarray(a) for a in _inputs())
    uncond = nnx.eval_shape(lambda: DiT(TOKENS, grid_shape=GRID, **TINY, rngs=nnx.Rngs(0)))
    no_null = nnx.eval_shape(
        lambda: DiT(
            TOKENS, grid_shape=GRID, num_classes=3, null_class=False, **TINY, rngs=nnx.Rngs(0)
        )
    )
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(lambda m: m(x, t, jnp.array([0, 1])), uncond)
    with pytest.raises(ValueError, match="pass y"):
        jax.eval_shape(lambda m: m(x, t), no_null)
    with pytest.raises(ValueError, match="no null class"):
        _ = no_null.null_label
    with pytest.raises(ValueError, match="x must have shape"):
        jax.eval_shape(lambda m: m(x[:, :4], t), uncond)

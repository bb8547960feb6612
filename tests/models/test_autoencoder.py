"""The LDM autoencoder against an independent PyTorch transcription (NCHW, float64) of CompVis
latent-diffusion's Encoder / Decoder / AutoencoderKL and taming's NLayerDiscriminator, plus shapes,
parameter counts, argument checks, the deterministic (double_z=False) and bfloat16 paths."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dctjax.models import (
    AUTOENCODER_SIZES,
    Autoencoder,
    autoencoder,
    make_model,
    model_sizes,
    registered_models,
)
from dctjax.models.autoencoder import kl_divergence

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

DISC = dict(ndf=8, n_layers=2)


# ----------------------------------------------------------------------------- PyTorch reference


def _norm(c, groups):
    return nn.GroupNorm(groups, c, eps=1e-6, affine=True)


def _swish(x):
    return x * torch.sigmoid(x)


class TResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)
        self.cin, self.cout = cin, cout

    def forward(self, x):
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class TAttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = _norm(c, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        q = q.reshape(b, c, h * w).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, h * w)  # b, c, hw
        w_ = torch.softmax(torch.bmm(q, k) * (int(c) ** (-0.5)), dim=2)
        v = v.reshape(b, c, h * w)
        h_ = torch.bmm(v, w_.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class TDownsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class TUpsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TMid(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.block_1 = TResnetBlock(c, c, groups)
        self.attn_1 = TAttnBlock(c, groups)
        self.block_2 = TResnetBlock(c, c, groups)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


class TEncoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z, groups):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        curr_res, in_ch_mult = resolution, (1, *ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(TResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(TAttnBlock(block_in, groups))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = TDownsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = TMid(block_in, groups)
        self.norm_out = _norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, 2 * z, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        return self.conv_out(_swish(self.norm_out(self.mid(h))))


class TDecoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z, groups):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z, block_in, 3, 1, 1)
        self.mid = TMid(block_in, groups)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(TResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(TAttnBlock(block_in, groups))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = TUpsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out = _norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        hidden = _swish(self.norm_out(h))
        return self.conv_out(hidden), hidden


class TNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        kw, padw = 4, 1
        seq = [nn.Conv2d(input_nc, ndf, kw, 2, padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, 2, padw, bias=False),
                nn.BatchNorm2d(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, 1, padw, bias=False),
            nn.BatchNorm2d(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
        ]
        seq += [nn.Conv2d(ndf * nf_mult, 1, kw, 1, padw)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


class TAutoencoderKL(nn.Module):
    def __init__(self, resolution, ch, ch_mult, num_res_blocks, attn_resolutions, z, groups):
        super().__init__()
        args = (ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z, groups)
        self.encoder, self.decoder = TEncoder(*args), TDecoder(*args)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.discriminator = TNLayerDiscriminator(3, **DISC)

    def encode(self, x):
        mean, logvar = torch.chunk(self.quant_conv(self.encoder(x)), 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def _torch_name(path: tuple) -> str:
    """An NNX parameter path -> the reference state-dict key."""
    parts = [str(p) for p in path]
    if parts[0] == "discriminator":  # convs[i] / norms[i] -> taming's Sequential `main` indices
        kind, i = parts[1], int(parts[2])
        n_layers = DISC["n_layers"]
        if kind == "convs":
            idx = 0 if i == 0 else (3 * n_layers + 2 if i == n_layers + 1 else 3 * i - 1)
        else:
            idx = 3 * (i + 1)
        parts = ["discriminator", "main", str(idx), parts[3]]
    parts[-1] = {"kernel": "weight", "scale": "weight"}.get(parts[-1], parts[-1])
    return ".".join(parts)


def _load_into_torch(model: Autoencoder, tm: nn.Module) -> None:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    sd = tm.state_dict()
    target = {
        k for k in sd if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    done = set()
    for path, var in flat:
        name = _torch_name(path)
        value = np.asarray(var.get_value() if hasattr(var, "get_value") else var.value)
        if value.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
            value = value.transpose(3, 2, 0, 1)
        assert name in sd, name
        assert tuple(sd[name].shape) == value.shape, (name, sd[name].shape, value.shape)
        sd[name] = torch.from_numpy(value.astype(np.float64))
        done.add(name)
    assert done == target, sorted(target ^ done)
    tm.load_state_dict(sd)


def _random_model(seed: int, **kwargs) -> Autoencoder:
    """The tiny model with random float32 parameters drawn in NumPy (no per-shape init compiles):
    conv kernels and biases U(+-1/sqrt(fan_in)), norm scales N(1, 0.1^2), norm biases N(0, 0.1^2),
    so every norm's scale and bias mapping is exercised."""
    kw = dict(input_shape=(32, 32, 3), size="T", discriminator=DISC) | kwargs
    model = nnx.eval_shape(lambda: Autoencoder(**kw, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    fan_in = {}
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and path[-1] == "kernel":
            fan_in[path[:-1]] = math.prod(var.shape[:-1])
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, nnx.Param):
            continue
        if path[:-1] in fan_in:  # a conv's kernel or bias
            bound = 1 / math.sqrt(fan_in[path[:-1]])
            value = rng.uniform(-bound, bound, var.shape)
        else:  # a norm
            value = rng.normal(1.0 if path[-1] == "scale" else 0.0, 0.1, var.shape)
        var.set_value(jnp.asarray(value, jnp.float32))
    return model


@pytest.fixture(scope="module")
def tiny():
    return _random_model(1)


def _t(x) -> "torch.Tensor":
    return torch.from_numpy(np.asarray(x, np.float64).transpose(0, 3, 1, 2).copy())


def _np(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- tests


@nnx.jit
def _reference_outputs(model, x, z, xd16, xd32):
    """Everything the parity test compares, in one compilation."""
    mean, logvar = model.encode(x)
    image, hidden = model.decode(z, return_hidden=True)
    recon, call_mean, _, call_z = model(x)
    return dict(
        mean=mean,
        logvar=logvar,
        image=image,
        hidden=hidden,
        image_plain=model.decode(z),
        recon=recon,
        recon_ref=model.decode(mean),
        call_mean=call_mean,
        call_z=call_z,
        logits16=model.discriminate(xd16),
        logits32=model.discriminate(xd32),
    )


def test_matches_torch_reference(tiny):
    cfg = AUTOENCODER_SIZES["T"]
    assert cfg["attn_levels"]  # the tiny size exercises level attention
    tm = TAutoencoderKL(
        32,
        cfg["ch"],
        cfg["ch_mult"],
        cfg["num_res_blocks"],
        [32 // 2**i for i in cfg["attn_levels"]],
        cfg["z_channels"],
        cfg["norm_groups"],
    ).double()
    _load_into_torch(tiny, tm)
    tm.train()  # BatchNorm2d on batch statistics, as the discriminator runs

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    z = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    # Small batches: the discriminator's batch statistics matter.
    xd16 = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    xd32 = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    out = _reference_outputs(tiny, *map(jnp.asarray, (x, z, xd16, xd32)))
    with torch.no_grad():
        t_mean, t_logvar = tm.encode(_t(x))
        t_image, t_hidden = tm.decode(_t(z))
        t_logits16, t_logits32 = tm.discriminator(_t(xd16)), tm.discriminator(_t(xd32))
    for a in out.values():
        assert a.dtype == jnp.float32
    assert out["mean"].shape == out["logvar"].shape == (2, 16, 16, 4)
    assert tiny.latent_shape == (16, 16, 4) and tiny.downsample_factor == 2
    tol = dict(atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out["mean"], _np(t_mean), **tol)
    np.testing.assert_allclose(out["logvar"], _np(t_logvar), **tol)
    assert out["image"].shape == (2, 32, 32, 3) and out["hidden"].shape == (2, 32, 32, 16)
    np.testing.assert_allclose(out["image"], _np(t_image), **tol)
    np.testing.assert_allclose(out["hidden"], _np(t_hidden), **tol)
    np.testing.assert_allclose(out["image_plain"], out["image"], atol=1e-6)
    assert out["logits16"].shape == (2, 2, 2, 1) and out["logits32"].shape == (2, 6, 6, 1)
    np.testing.assert_allclose(out["logits16"], _np(t_logits16), **tol)
    np.testing.assert_allclose(out["logits32"], _np(t_logits32), **tol)
    # __call__ without a key decodes the mean.
    np.testing.assert_array_equal(out["call_z"], out["call_mean"])
    np.testing.assert_allclose(out["call_mean"], out["mean"], atol=1e-6)
    np.testing.assert_allclose(out["recon"], out["recon_ref"], atol=1e-5)

    # The adaptive GAN weight's reconstruction of the last layer from `hidden`.
    conv = tiny.decoder.conv_out
    assert isinstance(conv, nnx.Conv) and conv.kernel.shape == (3, 3, 16, 3)
    redo = jax.lax.conv_general_dilated(
        out["hidden"], conv.kernel[...], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(redo + conv.bias[...], out["image"], atol=1e-5, rtol=1e-5)


def test_init_follows_pytorch():
    # Layer by layer: every distinct parameter shape costs an init compilation, and a whole real
    # build is slow on CPU (the tests' partitionable threefry), so the layers carry the checks.
    rngs = nnx.Rngs(3)
    conv = autoencoder._conv(16, 32, 3, dtype=jnp.float32, rngs=rngs)
    bound = 1 / math.sqrt(3 * 3 * 16)  # PyTorch: U(+-1/sqrt(fan_in)) for kernel and bias
    k, b = np.asarray(conv.kernel[...]), np.asarray(conv.bias[...])
    assert k.shape == (3, 3, 16, 32) and bound * 0.95 < np.abs(k).max() <= bound
    assert bound * 0.5 < np.abs(b).max() <= bound
    assert abs(k.std() - bound / math.sqrt(3)) < 0.1 * bound
    norm = autoencoder.GroupNorm(32, 8)
    np.testing.assert_array_equal(norm.scale[...], 1.0)
    np.testing.assert_array_equal(norm.bias[...], 0.0)
    # taming's weights_init: conv kernels N(0, 0.02^2), BatchNorm scale N(1, 0.02^2), bias 0.
    dconv = autoencoder._conv(
        16, 32, 4, use_bias=False, kernel_init=autoencoder.layers.normal_002, dtype=jnp.float32,
        rngs=rngs,
    )  # fmt: skip
    dk = np.asarray(dconv.kernel[...])
    assert abs(dk.std() - 0.02) < 0.002 and abs(dk.mean()) < 0.002 and dconv.bias is None
    bn = autoencoder.BatchStatNorm(32, rngs=rngs)
    assert 0 < np.abs(np.asarray(bn.scale[...]) - 1).max() < 0.1
    np.testing.assert_array_equal(bn.bias[...], 0.0)
    # The discriminator uses exactly these: no bias on the normalised convs; Params only.
    abstract = nnx.eval_shape(
        lambda: Autoencoder(input_shape=(32, 32, 3), size="T", discriminator=DISC, rngs=nnx.Rngs(0))
    )
    disc = abstract.discriminator
    assert [c.bias is None for c in disc.convs] == [False, True, True, False]
    assert all(isinstance(n, autoencoder.BatchStatNorm) for n in disc.norms)
    assert jax.tree.leaves(nnx.state(abstract, nnx.Not(nnx.Param))) == []


@nnx.jit
def _sample_outputs(model, mean, logvar, x, key):
    return model.sample(mean, logvar, key), model(x, key), kl_divergence(mean, logvar)


def test_sample_and_kl(tiny):
    rng = np.random.default_rng(0)
    mean = jnp.asarray(rng.normal(size=(2, 16, 16, 4)), jnp.float32)
    logvar = jnp.asarray(rng.normal(size=(2, 16, 16, 4)), jnp.float32)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    key = jax.random.key(5)
    s, (recon, m, lv, z), kl = _sample_outputs(tiny, mean, logvar, x, key)
    eps = np.asarray(jax.random.normal(key, mean.shape, jnp.float32))
    np.testing.assert_allclose(s, mean + np.exp(0.5 * logvar) * eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, m + np.exp(0.5 * lv) * eps, rtol=1e-5, atol=1e-6)
    assert recon.shape == x.shape and not np.allclose(z, m)
    ref = 0.5 * np.sum(np.square(mean) + np.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))
    np.testing.assert_allclose(kl, ref, rtol=1e-5)


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_ldm_sizes_shapes_and_param_counts():
    abstract = nnx.eval_shape(lambda: Autoencoder(input_shape=(256, 256, 3), rngs=nnx.Rngs(0)))
    assert abstract.downsample_factor == 16 and abstract.latent_channels == 16
    assert abstract.latent_shape == (16, 16, 16) and abstract.double_z
    assert abstract.discriminator is None and abstract.attn_levels == (4,)
    assert [abstract.ch * m for m in abstract.ch_mult] == [128, 128, 256, 256, 512]
    n = _count(nnx.state(abstract, nnx.Param))
    assert 60e6 < n < 80e6, n
    graphdef, state = nnx.split(abstract)

    def run(state, x):
        m = nnx.merge(graphdef, state)
        mean, logvar = m.encode(x)
        return mean, logvar, m.decode(mean)

    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    mean, logvar, image = jax.eval_shape(run, state, x)
    assert mean.shape == logvar.shape == (1, 16, 16, 16)
    assert image.shape == (1, 256, 256, 3) and image.dtype == jnp.float32

    # Stable Diffusion's VAE (AutoencoderKL f8, 4 channels) has 83,653,863 parameters; taming's
    # NLayerDiscriminator(3, 64, 3) 2,765,633.
    sd = nnx.eval_shape(
        lambda: Autoencoder(
            input_shape=(256, 256, 3), size="ldm_f8d4", discriminator={}, rngs=nnx.Rngs(0)
        )
    )
    assert sd.latent_shape == (32, 32, 4)
    assert _count(nnx.state(sd.discriminator, nnx.Param)) == 2_765_633
    assert _count(nnx.state(sd, nnx.Param)) == 83_653_863 + 2_765_633


def test_argument_checks(tiny):
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 16"):
        Autoencoder(input_shape=(250, 256, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="downsampling factor 2"):
        Autoencoder(input_shape=(33, 32, 3), size="T", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown Autoencoder size"):
        Autoencoder(input_shape=(32, 32, 3), size="XL", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="norm_groups"):
        Autoencoder(input_shape=(32, 32, 3), size="T", norm_groups=32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attn_levels"):
        Autoencoder(input_shape=(32, 32, 3), size="T", attn_levels=(2,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown key"):
        Autoencoder(input_shape=(32, 32, 3), size="T", discriminator=dict(ndf=8, depth=2), rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ValueError, match="not divisible by 2"):
        tiny.encode(jnp.zeros((1, 31, 32, 3)))
    with pytest.raises(ValueError, match="channels"):
        tiny.decode(jnp.zeros((1, 16, 16, 3)))
    plain = nnx.eval_shape(lambda: Autoencoder(input_shape=(16, 16, 3), size="T", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no discriminator"):
        plain.discriminate(jnp.zeros((1, 16, 16, 3)))


def test_deterministic_autoencoder():
    model = _random_model(4, double_z=False, discriminator=None)
    assert not model.double_z and model.encoder.conv_out.out_features == 4
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    (mean, logvar), (recon, m, lv, z) = nnx.jit(
        lambda model, x, key: (model.encode(x), model(x, key))
    )(model, x, jax.random.key(0))
    assert logvar is None and lv is None
    assert mean.shape == (2, 16, 16, 4) and mean.dtype == jnp.float32 and recon.shape == x.shape
    np.testing.assert_array_equal(z, m)
    with pytest.raises(ValueError, match="logvar is None"):
        model.sample(mean, None, jax.random.key(0))


def test_bfloat16_runs_in_float32_out(tiny):
    abstract = nnx.eval_shape(
        lambda: Autoencoder(
            input_shape=(32, 32, 3),
            size="T",
            discriminator=DISC,
            dtype=jnp.bfloat16,
            rngs=nnx.Rngs(0),
        )
    )
    bf16 = nnx.merge(nnx.graphdef(abstract), nnx.state(tiny, nnx.Param))
    assert bf16.dtype == jnp.bfloat16
    assert {x.dtype for x in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype("float32")}
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)

    @nnx.jit
    def run(bf16, ref, x, key):
        recon, mean, logvar, z = bf16(x, key)
        image, hidden = bf16.decode(mean, return_hidden=True)
        outs = (recon, mean, logvar, z, image, hidden, bf16.discriminate(x))
        return outs, ref.encode(x)[0], ref.decode(mean)

    outs, ref_mean, ref_image = run(bf16, tiny, x, jax.random.key(0))
    for a in outs:
        assert a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a)))
    mean, image = outs[1], outs[4]
    assert float(jnp.max(jnp.abs(mean - ref_mean))) < 0.05 * float(jnp.max(jnp.abs(ref_mean)))
    assert float(jnp.max(jnp.abs(image - ref_image))) < 0.05 * float(jnp.max(jnp.abs(ref_image)))
    assert float(jnp.max(jnp.abs(mean - ref_mean))) > 0  # it did run in bfloat16


def test_registry():
    assert "autoencoder" in registered_models()
    assert model_sizes("autoencoder") == {"T": (16, 2, 4), "ldm_f8d4": (128, 8, 4), "ldm_f16d16": (128, 16, 16)}  # fmt: skip
    model = nnx.eval_shape(
        lambda: make_model("autoencoder", input_shape=(32, 32, 3), size="T", rngs=nnx.Rngs(0))
    )
    assert isinstance(model, Autoencoder) and model.latent_shape == (16, 16, 4)
    with pytest.raises(ValueError, match="num_classes"):
        make_model("autoencoder", input_shape=(32, 32, 3), size="T", num_classes=10, rngs=nnx.Rngs(0))  # fmt: skip

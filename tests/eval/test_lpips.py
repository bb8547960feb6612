"""LPIPS-VGG: parity with a PyTorch transcription of the `lpips` package, gradients, the converter
(state dicts, torch.save files, CLI), the .npz cache and the offline error.

The oracle (`_TorchLPIPS`) is the lpips 0.1.4 code path of `LPIPS(net='vgg', version='0.1')`
(lpips/lpips.py: ScalingLayer, normalize_tensor, NetLinLayer, spatial_average, forward;
lpips/pretrained_networks.py: vgg16 slices) on torchvision 0.28's `vgg16().features`
(models/vgg.py: make_layers(cfgs["D"])), transcribed because the registry's torchvision wheels are
CUDA builds that do not load next to the CPU torch. Parity uses random weights copied through
torch.save files and `convert_files`; nothing is downloaded (URLs are patched to local files).
"""

import copy
import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dctjax.eval import inception_weights as iw
from dctjax.eval import lpips as lp
from dctjax.eval.inception import flatten_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_dist = jax.jit(lp.lpips_distance, static_argnames="dtype")
# d(sum of distances) / d(x, y); compiled once (~7 s on CPU) for all gradient checks at 1x32x32
_grad = jax.jit(jax.grad(lambda p, a, b: lp.lpips_distance(p, a, b).sum(), argnums=(1, 2)))
_GRAD_SHAPE = (1, 32, 32, 3)


def _images(seed: int, shape=(2, 64, 64, 3)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish image in [-1, 1] and a noisy, shifted copy."""
    rng = np.random.default_rng(seed)
    n, h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase = rng.uniform(0, 6, (n, 1, 1, c))
    x = 0.8 * np.sin(4 * xx[None, :, :, None] + 3 * yy[None, :, :, None] + phase)
    x = x + 0.2 * rng.uniform(-1, 1, shape)
    y = np.roll(x, 2, axis=2) + 0.15 * rng.normal(size=shape)
    return np.clip(x, -1, 1).astype(np.float32), np.clip(y, -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def params():
    return lp.random_lpips_params(0)


# ----------------------------------------------------------------------------- torch oracle

_VGG16_CFG = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]


def _torch_modules(seed: int):
    """(vgg, lins): torchvision-layout VGG16 (features + a stand-in classifier) and the 5 lpips
    NetLinLayers (Dropout, Conv2d 1x1 no bias -> keys lin{k}.model.1.weight), random weights."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(seed)

    layers, cin = [], 3
    for v in _VGG16_CFG:  # torchvision.models.vgg.make_layers(cfgs["D"], batch_norm=False)
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    vgg = nn.Module()
    vgg.features = nn.Sequential(*layers)
    vgg.classifier = nn.Sequential(nn.Linear(8, 4))  # ignored by the converter
    for m in vgg.features:
        if isinstance(m, nn.Conv2d):  # torchvision's init, plus non-zero biases
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.uniform_(m.bias, -0.05, 0.05)

    lins = nn.Module()
    for k, c in enumerate((64, 128, 256, 512, 512)):
        lin = nn.Module()
        lin.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, stride=1, padding=0, bias=False))
        with torch.no_grad():
            lin.model[1].weight.abs_()  # the released lin weights are non-negative
        setattr(lins, f"lin{k}", lin)
    return vgg.eval(), lins.eval()


def _torch_lpips(vgg, lins, in0, in1):
    """lpips.LPIPS(net='vgg', version='0.1').forward(in0, in1) for NCHW tensors in [-1, 1]."""
    import torch

    shift = torch.Tensor([-0.030, -0.088, -0.188])[None, :, None, None].to(in0.dtype)
    scale = torch.Tensor([0.458, 0.448, 0.450])[None, :, None, None].to(in0.dtype)
    feats = vgg.features
    slices = [range(4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)]

    def net(h):  # pretrained_networks.vgg16.forward
        outs = []
        for sl in slices:
            for i in sl:
                h = feats[i](h)
            outs.append(h)
        return outs

    def normalize_tensor(in_feat, eps=1e-10):
        norm_factor = torch.sqrt(torch.sum(in_feat**2, dim=1, keepdim=True))
        return in_feat / (norm_factor + eps)

    outs0, outs1 = net((in0 - shift) / scale), net((in1 - shift) / scale)
    val = 0
    for kk in range(5):
        diff = (normalize_tensor(outs0[kk]) - normalize_tensor(outs1[kk])) ** 2
        val = val + getattr(lins, f"lin{kk}").model(diff).mean([2, 3], keepdim=True)
    return val


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """(vgg, lins, vgg_path, lin_path): the modules and their torch.save files (the VGG as a zip
    checkpoint named like torchvision's, the lin layers in the legacy format like the release)."""
    torch = pytest.importorskip("torch")
    vgg, lins = _torch_modules(1)
    d = tmp_path_factory.mktemp("lpips_pth")
    tmp = d / "vgg16.pth"
    torch.save(vgg.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    vgg_path = d / f"vgg16-{digest}.pth"
    tmp.rename(vgg_path)
    lin_path = d / "vgg.pth"
    torch.save(lins.state_dict(), lin_path, _use_new_zipfile_serialization=False)
    return vgg, lins, vgg_path, lin_path


def _assert_params_equal(a, b):
    fa, fb = flatten_params(a), flatten_params(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ----------------------------------------------------------------------------- parity


def test_matches_torch_lpips(torch_files):
    torch = pytest.importorskip("torch")
    vgg, lins, vgg_path, lin_path = torch_files
    params = lp.convert_files(str(vgg_path), str(lin_path))
    x, y = _images(0)
    with torch.no_grad():
        tx, ty = (torch.from_numpy(a.transpose(0, 3, 1, 2).copy()) for a in (x, y))
        want = _torch_lpips(vgg, lins, tx, ty).numpy().reshape(-1)
    got = np.asarray(_dist(params, x, y))
    assert got.shape == (2,) and got.dtype == np.float32
    assert np.all(want > 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)

    # gradients w.r.t. both inputs, on one 32x32 crop, against torch in float64: in float32 a
    # ReLU / max-pool decision that flips on rounding can move torch's own gradient by ~0.4%
    vgg64, lins64 = copy.deepcopy(vgg).double(), copy.deepcopy(lins).double()
    xs, ys = x[:1, :32, :32], y[:1, :32, :32]
    tx = torch.from_numpy(xs.transpose(0, 3, 1, 2).astype(np.float64)).requires_grad_(True)
    ty = torch.from_numpy(ys.transpose(0, 3, 1, 2).astype(np.float64)).requires_grad_(True)
    _torch_lpips(vgg64, lins64, tx, ty).sum().backward()
    for g, t in zip(_grad(params, xs, ys), (tx, ty), strict=True):
        want_g = t.grad.numpy().transpose(0, 2, 3, 1)
        g = np.asarray(g, np.float64)
        assert np.abs(want_g).max() > 0
        assert np.linalg.norm(g - want_g) <= 1e-4 * np.linalg.norm(want_g)
        np.testing.assert_allclose(g, want_g, rtol=1e-3, atol=1e-5 * np.abs(want_g).max())


def test_zero_symmetric_bf16_and_jit(params):
    x, y = _images(1)
    d_xy = np.asarray(_dist(params, x, y))
    assert np.all(d_xy > 0)
    np.testing.assert_allclose(np.asarray(_dist(params, y, x)), d_xy, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(_dist(params, x, x)), 0.0, atol=1e-7)
    d_bf16 = _dist(params, x, y, dtype=jnp.bfloat16)
    assert d_bf16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(d_bf16), d_xy, rtol=5e-2)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        lp.lpips_distance(params, x, y[:, :32])


def test_gradient_finite(params):
    x, y = _images(2, _GRAD_SHAPE)
    gx, gy = _grad(params, x, y)
    assert np.all(np.isfinite(np.asarray(gx))) and np.all(np.isfinite(np.asarray(gy)))
    assert np.abs(np.asarray(gx)).max() > 0
    for g in _grad(params, x, x):  # at x == y: finite (and zero: d is minimal there)
        np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
    # all relu5_3 units dead: the channel norm is 0 there, and the gradient must stay finite
    dead = jax.tree.map(np.copy, params)
    dead["conv5_3"]["bias"] = np.full_like(dead["conv5_3"]["bias"], -1e3)
    for g in _grad(dead, x, y):
        assert np.all(np.isfinite(np.asarray(g)))


def test_random_params_shapes():
    params = lp.random_lpips_params(jax.random.key(3))
    lp.check_lpips_params(params)
    assert sorted(params) == sorted([name for name, *_ in lp.CONVS] + [f"lin{k}" for k in range(5)])
    assert params["conv3_2"]["kernel"].shape == (3, 3, 256, 256)
    assert params["lin4"]["kernel"].shape == (512,)
    assert all(np.all(params[f"lin{k}"]["kernel"] >= 0) for k in range(5))
    _assert_params_equal(lp.random_lpips_params(jax.random.PRNGKey(3)), params)  # raw key
    a, b = lp.random_lpips_params(3), lp.random_lpips_params(4)
    _assert_params_equal(lp.random_lpips_params(3), a)
    assert not np.array_equal(a["conv1_1"]["kernel"], b["conv1_1"]["kernel"])


# ----------------------------------------------------------------------------- converter, npz, CLI


def test_convert_state_dicts_errors(params):
    vgg_sd = {}
    for name, idx, _, _ in lp.CONVS:
        vgg_sd[f"features.{idx}.weight"] = params[name]["kernel"].transpose(3, 2, 0, 1)
        vgg_sd[f"features.{idx}.bias"] = params[name]["bias"]
    vgg_sd["classifier.0.weight"] = np.zeros((4, 8), np.float32)
    lin_sd = {
        f"lin{k}.model.1.weight": params[f"lin{k}"]["kernel"].reshape(1, -1, 1, 1) for k in range(5)
    }
    _assert_params_equal(lp.convert_state_dicts(vgg_sd, lin_sd), params)

    bad = dict(vgg_sd)
    del bad["features.0.bias"]
    bad["features.2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    bad["net.foo"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError) as err:
        lp.convert_state_dicts(bad, {k: v for k, v in lin_sd.items() if not k.startswith("lin4")})
    msg = str(err.value)
    assert "conv1_1/bias" in msg and "lin4/kernel" in msg and "net.foo" in msg
    assert (
        "features.2.weight" in msg and "conv1_2/kernel" not in msg.split("missing")[1].split(";")[0]
    )


def test_npz_round_trip_and_explicit_weights(tmp_path, params):
    path = tmp_path / "sub" / "lpips_vgg.npz"
    lp.save_lpips_params(params, str(path))
    assert os.listdir(tmp_path / "sub") == ["lpips_vgg.npz"]
    _assert_params_equal(lp.load_lpips(str(path)), params)
    with np.load(path) as data:
        assert "conv1_1/kernel" in data.files and "lin0/kernel" in data.files
    with pytest.raises(FileNotFoundError):
        lp.load_lpips(str(tmp_path / "nope.npz"))
    pth = tmp_path / "vgg.pth"
    pth.write_bytes(b"x")
    with pytest.raises(ValueError, match="launch/convert_lpips.py"):
        lp.load_lpips(str(pth))
    other = tmp_path / "other.npz"
    np.savez(other, **{"Mixed_5b/branch1x1/conv/kernel": np.zeros((1, 1, 3, 4), np.float32)})
    with pytest.raises(ValueError, match="Not LPIPS-VGG params"):
        lp.load_lpips(str(other))


def test_convert_cli(tmp_path, torch_files):
    _, _, vgg_path, lin_path = torch_files
    out = tmp_path / "lpips_vgg.npz"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "launch", "convert_lpips.py"),
            f"--vgg={vgg_path}",
            f"--lin={lin_path}",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    _assert_params_equal(lp.load_lpips(str(out)), lp.convert_files(str(vgg_path), str(lin_path)))


# ----------------------------------------------------------------------------- download and cache


def test_download_convert_and_cache(tmp_path, monkeypatch, torch_files):
    _, _, vgg_path, lin_path = torch_files
    monkeypatch.setattr(lp, "VGG16_URL", vgg_path.as_uri())
    monkeypatch.setattr(lp, "LPIPS_LIN_URL", lin_path.as_uri())
    monkeypatch.setattr(lp, "LPIPS_LIN_SHA256", hashlib.sha256(lin_path.read_bytes()).hexdigest())
    cache = tmp_path / "cache"
    want = lp.convert_files(str(vgg_path), str(lin_path))
    _assert_params_equal(lp.load_lpips(cache_dir=str(cache)), want)
    assert os.listdir(cache) == [lp.CACHE_NAME]  # only the converted weights are kept
    monkeypatch.setattr(lp, "VGG16_URL", (tmp_path / "gone-00000000.pth").as_uri())
    monkeypatch.setenv(iw.CACHE_ENV, str(cache))
    _assert_params_equal(lp.load_lpips(), want)  # cached: no second download


def test_download_wrong_lin_hash(tmp_path, monkeypatch):
    lin = tmp_path / "vgg.pth"
    lin.write_bytes(b"not the lpips file")
    monkeypatch.setattr(lp, "LPIPS_LIN_URL", lin.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(iw.WeightsHashError, match="--lpips_weights=PATH"):
        lp.load_lpips(cache_dir=str(cache))
    assert os.listdir(cache) == []


def test_offline_error_names_flag_and_converter(tmp_path, monkeypatch):
    url = (tmp_path / "missing" / "vgg.pth").as_uri()
    monkeypatch.setattr(lp, "LPIPS_LIN_URL", url)
    cache = tmp_path / "cache"
    with pytest.raises(lp.WeightsUnavailableError) as err:
        lp.load_lpips(cache_dir=str(cache))
    msg = str(err.value)
    assert "--lpips_weights=" in msg and "launch/convert_lpips.py" in msg and url in msg
    assert os.listdir(cache) == []

    # the big VGG download failing after the lin layers arrived leaves nothing behind either
    def offline(url, directory, **kw):
        raise iw.WeightsUnavailableError(kw["offline_message"](url, "no network"))

    lin = tmp_path / "vgg.pth"
    lin.write_bytes(b"lin")
    monkeypatch.setattr(lp, "LPIPS_LIN_URL", lin.as_uri())
    monkeypatch.setattr(lp, "LPIPS_LIN_SHA256", hashlib.sha256(b"lin").hexdigest())
    real = lp._download
    monkeypatch.setattr(
        lp, "_download", lambda u, d, **kw: (real if u == lin.as_uri() else offline)(u, d, **kw)
    )
    with pytest.raises(lp.WeightsUnavailableError, match="--lpips_weights=PATH/lpips_vgg.npz"):
        lp.load_lpips(cache_dir=str(cache))
    assert os.listdir(cache) == []


def test_release_constants():
    assert lp.VGG16_URL == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert iw.sha256_prefix(lp.VGG16_URL) == "397923af"
    assert lp.LPIPS_LIN_URL.endswith("/lpips/weights/v0.1/vgg.pth")

"""The FID InceptionV3: parity with pytorch-fid's PyTorch network, the torch-free checkpoint reader,
the converter, the .npz cache, download-and-cache, batching and sharding.

Torch-free tests always run, on random parameters and on weight files written by a small
hand-made `torch.save` writer (`_write_torch_file`, checked against `torch.load` when torch is
installed). Inception at 299x299 costs ~6 GFLOPs per image, so batches are 1-3 images (8 for the
8-device mesh).
"""

import collections
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from dctjax.eval import inception as inc
from dctjax.eval import inception_weights as iw
from dctjax.train.sharding import make_mesh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------- a torch.save writer


class _Global:
    """A pickled reference to `module.name` that need not be importable (torch may be absent)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise NotImplementedError


class _Storage:
    _TYPES = {"float32": "FloatStorage", "float64": "DoubleStorage", "int64": "LongStorage"}

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).reshape(-1)
        self.type_name = self._TYPES[str(self.data.dtype)]


class _Tensor:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return _Global("torch._utils", "_rebuild_tensor_v2"), args


class _TorchPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            pid = ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.data.size)
            return pid + (None,) if self.legacy else pid  # legacy: view_metadata
        return None

    def _save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global_ref


def _write_torch_file(path, tensors: dict, legacy: bool) -> None:
    """`torch.save(OrderedDict(tensors), path)` without torch; values are arrays or _Tensor views."""
    storages: dict[str, _Storage] = {}
    sd = collections.OrderedDict()
    for name, value in tensors.items():
        if not isinstance(value, _Tensor):
            arr = np.ascontiguousarray(value)
            strides = tuple(s // arr.itemsize for s in arr.strides)
            value = _Tensor(_Storage(f"s{len(storages)}", arr), 0, arr.shape, strides)
        storages.setdefault(value.storage.key, value.storage)
        sd[name] = value
    keys = sorted(storages)
    if legacy:
        with open(path, "wb") as f:
            sys_info = {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8},
            }
            for header in (iw._LEGACY_MAGIC, 1001, sys_info):
                pickle.dump(header, f, protocol=2)
            _TorchPickler(f, legacy=True).dump(sd)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                f.write(struct.pack("<q", storages[key].data.size))
                f.write(storages[key].data.tobytes())
    else:
        buf = io.BytesIO()
        _TorchPickler(buf, legacy=False).dump(sd)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("archive/data.pkl", buf.getvalue())
            zf.writestr("archive/byteorder", "little")
            zf.writestr("archive/version", "3\n")
            for key in keys:
                zf.writestr(f"archive/data/{key}", storages[key].data.tobytes())


def _torch_layout(params) -> dict[str, np.ndarray]:
    """Our params as a pytorch-fid state dict (OIHW, BN names, fc and num_batches_tracked)."""
    bn = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    sd = {}
    for path, value in inc.flatten_params(params).items():
        *module, layer, leaf = path.split("/")
        if layer == "conv":
            sd[".".join([*module, "conv.weight"])] = value.transpose(3, 2, 0, 1)
        else:
            sd[".".join([*module, "bn", bn[leaf]])] = value
            if leaf == "var":
                sd[".".join([*module, "bn.num_batches_tracked"])] = np.array(0, np.int64)
    rng = np.random.default_rng(1)
    sd["fc.weight"] = rng.standard_normal((1008, 2048)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1008, np.float32)
    return sd


def _assert_params_equal(a, b) -> None:
    fa, fb = inc.flatten_params(a), inc.flatten_params(b)
    assert list(fa) == list(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def params():
    return inc.random_params(0)


@pytest.fixture(scope="module")
def features(params):
    return inc.InceptionFeatures(params, batch_size=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def base_features(features, images):
    return features(images)


@pytest.fixture(scope="module")
def legacy_pth(tmp_path_factory, params):
    """A random-weights file in the release's format (legacy torch.save of the state dict)."""
    path = tmp_path_factory.mktemp("weights") / "weights.pth"
    _write_torch_file(path, _torch_layout(params), legacy=True)
    return path


# ----------------------------------------------------------------------------- network (no torch)


def test_parameter_tree_follows_torchvision_names(params):
    shapes = inc.param_shapes()
    assert len(shapes) == 94 * 5  # 94 BasicConv2d: kernel + 4 BatchNorm vectors
    assert shapes["Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
    assert shapes["Mixed_6d/branch7x7_2/conv/kernel"] == (1, 7, 160, 160)
    assert shapes["Mixed_7c/branch_pool/bn/var"] == (192,)
    assert inc.num_parameters(params) == 21_820_000  # torchvision's count minus fc/aux/counters
    inc.check_params(params)
    broken = inc.unflatten_params(
        {k: v for k, v in inc.flatten_params(params).items() if k != "Mixed_5b/branch1x1/bn/mean"}
    )
    with pytest.raises(ValueError, match="missing: Mixed_5b/branch1x1/bn/mean"):
        inc.check_params(broken)


def test_resize_is_torch_bilinear_without_antialias():
    x = np.array([0.0, 4.0, 8.0, 12.0], np.float32) * 255 / 12  # so x / 255 = [0, 1/3, 2/3, 1]
    img = np.broadcast_to(x[None, None, :, None], (1, 1, 4, 3))
    up = np.asarray(inc.preprocess(img[:, :, :2], size=4))  # src = 0, .25, .75, 1.25 -> clamped
    np.testing.assert_allclose((up[0, 0, :, 0] + 1) / 2, [0, 1 / 12, 3 / 12, 1 / 3], atol=1e-6)
    down = np.asarray(inc.preprocess(img, size=2))  # src = 0.5, 2.5: two taps, no antialiasing
    np.testing.assert_allclose((down[0, 0, :, 0] + 1) / 2, [1 / 6, 5 / 6], atol=1e-6)
    same = np.asarray(inc.preprocess(np.full((1, 5, 5, 3), 255, np.uint8), size=5))
    np.testing.assert_array_equal(same, 1.0)


def test_features_shapes_dtypes_determinism_and_padding(features, images, base_features):
    out = base_features
    assert features.feature_dims == {"pool3": 2048, "spatial": 2023}
    assert out["pool3"].shape == (3, 2048) and out["spatial"].shape == (3, 2023)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    assert out["pool3"].std() > 0.1 and (out["spatial"] > 0).mean() > 0.1
    again = features(images)
    for k in out:
        np.testing.assert_array_equal(again[k], out[k])
    # images[2] went through a zero-padded batch; here through a full one, in another slot.
    unpadded = features(images[1:3])
    float_input = features(images[1:3].astype(np.float32))
    for k in out:
        np.testing.assert_allclose(unpadded[k], out[k][1:3], rtol=1e-6, atol=1e-5)
        # the same values through a differently compiled program (uint8 vs float32 input)
        np.testing.assert_allclose(float_input[k], unpadded[k], rtol=1e-6, atol=1e-4)
    gray = features(images[:2, ..., :1])
    np.testing.assert_array_equal(gray["pool3"], features(images[:2, ..., [0, 0, 0]])["pool3"])
    empty = features(images[:0])
    assert empty["pool3"].shape == (0, 2048) and empty["spatial"].shape == (0, 2023)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        features(images[0])


def test_mesh_sharded_equals_unsharded(params, images, base_features):
    mesh = make_mesh()  # ('data', 'fsdp') over the 8 fake CPU devices
    assert mesh.size == 8
    with pytest.raises(ValueError, match="divisible by the 8 devices"):
        inc.InceptionFeatures(params, batch_size=4, mesh=mesh)
    sharded = inc.InceptionFeatures(params, batch_size=8, mesh=mesh)
    out = sharded(images)
    for k in out:
        np.testing.assert_allclose(out[k], base_features[k], rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------- weights (no torch)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reader_strided_views_and_dtypes(tmp_path, legacy):
    base = _Storage("shared", np.arange(40, dtype=np.float32))
    tensors = {
        "view": _Tensor(base, 3, (3, 4), (1, 5)),  # offset, non-contiguous
        "tail": _Tensor(base, 30, (2, 5), (5, 1)),  # same storage
        "expand": _Tensor(base, 7, (2, 3), (0, 1)),
        "f64": np.linspace(0, 1, 6).reshape(2, 3),
        "i64": np.array(7, np.int64),
    }
    path = tmp_path / "t.pth"
    _write_torch_file(path, tensors, legacy=legacy)
    sd = iw.read_torch_checkpoint(path)
    assert list(sd) == list(tensors)
    i, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(sd["view"], (3 + i + 5 * j).astype(np.float32))
    np.testing.assert_array_equal(sd["tail"], np.arange(30, 40, dtype=np.float32).reshape(2, 5))
    np.testing.assert_array_equal(sd["expand"], np.tile(np.arange(7, 10, dtype=np.float32), (2, 1)))
    assert sd["f64"].dtype == np.float64 and sd["i64"].dtype == np.int64 and sd["i64"] == 7
    assert sd["view"].flags.c_contiguous and sd["view"].flags.writeable


def test_reader_refuses_other_globals(tmp_path):
    payload = pickle.dumps({"x": collections.Counter()}, protocol=2)
    zpath = tmp_path / "evil.pth"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(
        pickle.UnpicklingError, match="Refusing to load the global collections.Counter"
    ):
        iw.read_torch_checkpoint(zpath)
    lpath = tmp_path / "evil_legacy.pth"
    with open(lpath, "wb") as f:
        for header in (iw._LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(pickle.dumps(os.getcwd, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load the global \w+\.getcwd"):
        iw.read_torch_checkpoint(lpath)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch.save file"):
        iw.read_torch_checkpoint(tmp_path / "junk.pth")


def test_convert_state_dict_and_errors(params):
    sd = _torch_layout(params)
    _assert_params_equal(iw.convert_state_dict(sd), params)
    bad = dict(sd)
    del bad["Mixed_6d.branch1x1.bn.running_var"]
    bad["Mixed_6d.branch1x1.extra.weight"] = np.zeros(3, np.float32)
    bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
    with pytest.raises(ValueError) as err:
        iw.convert_state_dict(bad)
    msg = str(err.value)
    assert "missing (1): Mixed_6d.branch1x1.bn.running_var" in msg
    assert "unexpected (1): Mixed_6d.branch1x1.extra.weight" in msg
    assert "wrong shape (1): Conv2d_1a_3x3.conv.weight" in msg


def test_npz_round_trip_is_atomic(tmp_path, params):
    path = tmp_path / "sub" / "inception.npz"
    iw.save_params(params, path)
    assert os.listdir(tmp_path / "sub") == ["inception.npz"]
    _assert_params_equal(iw.load_params(path), params)
    with np.load(path) as data:
        assert "Mixed_5b/branch1x1/conv/kernel" in data.files
    _assert_params_equal(iw.resolve_weights(str(path)), params)
    feats = inc.load_inception(str(path), batch_size=2)
    assert isinstance(feats, inc.InceptionFeatures) and feats.batch_size == 2


def _hashed_copy(src, directory, digest: str | None = None):
    data = src.read_bytes()
    digest = digest or hashlib.sha256(data).hexdigest()[:8]
    path = directory / f"pt_inception-2015-12-05-{digest}.pth"
    path.write_bytes(data)
    return path


def test_download_convert_and_cache(tmp_path, monkeypatch, legacy_pth, params):
    src = _hashed_copy(legacy_pth, tmp_path)
    monkeypatch.setattr(iw, "FID_WEIGHTS_URL", src.as_uri())
    cache = tmp_path / "cache"
    _assert_params_equal(iw.resolve_weights(None, cache_dir=str(cache)), params)
    assert os.listdir(cache) == [src.stem + ".npz"]  # only the converted weights are kept
    src.unlink()  # a second call must not download again
    monkeypatch.setenv(iw.CACHE_ENV, str(cache))
    _assert_params_equal(iw.resolve_weights(), params)


def test_download_wrong_hash_leaves_nothing(tmp_path, monkeypatch, legacy_pth):
    src = _hashed_copy(legacy_pth, tmp_path, digest="00000000")
    monkeypatch.setattr(iw, "FID_WEIGHTS_URL", src.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(iw.WeightsHashError, match="does not start with 00000000"):
        iw.resolve_weights(None, cache_dir=str(cache))
    assert os.listdir(cache) == []


def test_download_offline_names_the_flag_and_url(tmp_path, monkeypatch):
    url = (tmp_path / "missing" / "pt_inception-2015-12-05-6726825d.pth").as_uri()
    monkeypatch.setattr(iw, "FID_WEIGHTS_URL", url)
    cache = tmp_path / "cache"
    with pytest.raises(iw.WeightsUnavailableError) as err:
        iw.resolve_weights(None, cache_dir=str(cache))
    assert "--inception_weights=" in str(err.value) and url in str(err.value)
    assert os.listdir(cache) == []
    with pytest.raises(FileNotFoundError):
        iw.resolve_weights(str(tmp_path / "nope.pth"))


def test_release_constants():
    assert iw.FID_WEIGHTS_URL.endswith("/fid_weights/pt_inception-2015-12-05-6726825d.pth")
    assert iw.FID_WEIGHTS_SHA256_PREFIX == "6726825d"


def test_convert_cli(tmp_path, legacy_pth, params):
    out = tmp_path / "converted.npz"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "launch", "convert_inception.py"),
            f"--in={legacy_pth}",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "566 tensors" in result.stdout and "21,820,000 parameters" in result.stdout
    _assert_params_equal(iw.load_params(out), params)


# ----------------------------------------------------------------------------- torch


@pytest.fixture(scope="module")
def torch_ref():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        import torch_fid_reference as ref
    finally:
        sys.path.pop(0)
    return torch, ref


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reader_matches_torch_load(tmp_path, torch_ref, legacy):
    torch, _ = torch_ref
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 7, generator=g)
    sd = collections.OrderedDict(
        transposed=base.t(),
        offset=base[2:, 1:5:2],
        param=torch.nn.Parameter(torch.randn(3, 2, generator=g)),
        f64=torch.randn(4, generator=g, dtype=torch.float64),
        i64=torch.arange(5),
        scalar=torch.tensor(3, dtype=torch.int64),
        expanded=torch.arange(3.0).expand(4, 3),
        empty=torch.zeros(0, 3),
    )
    path = tmp_path / "t.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    ours = iw.read_torch_checkpoint(path)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        expected = v.detach().numpy()
        assert ours[k].dtype == expected.dtype and ours[k].shape == expected.shape, k
        np.testing.assert_array_equal(ours[k], expected, err_msg=k)
    # And the test's own writer produces files torch reads identically.
    mine = tmp_path / "mine.pth"
    storage = _Storage("s", np.arange(12, dtype=np.float32))
    written = {"view": _Tensor(storage, 2, (2, 3), (1, 4)), "x": np.eye(2)}
    _write_torch_file(mine, written, legacy=legacy)
    loaded = torch.load(mine, weights_only=True)
    for k, v in iw.read_torch_checkpoint(mine).items():
        np.testing.assert_array_equal(loaded[k].numpy(), v)


@pytest.fixture(scope="module")
def torch_model(torch_ref, tmp_path_factory):
    """pytorch-fid's FID Inception with random weights, saved in both torch.save formats."""
    torch, ref = torch_ref
    torch.manual_seed(0)
    model = ref.fid_inception_v3()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    d = tmp_path_factory.mktemp("torch")
    torch.save(model.state_dict(), d / "zip.pth")
    torch.save(model.state_dict(), d / "legacy.pth", _use_new_zipfile_serialization=False)
    return model, d


@pytest.fixture(scope="module")
def torch_features(torch_model):
    _, d = torch_model
    from_zip = iw.resolve_weights(str(d / "zip.pth"))
    _assert_params_equal(iw.resolve_weights(str(d / "legacy.pth")), from_zip)
    return inc.InceptionFeatures(from_zip, batch_size=2)


@pytest.mark.parametrize("size,n", [(32, 2), (64, 1), (512, 1)])
def test_matches_pytorch_fid(torch_ref, torch_model, torch_features, size, n):
    torch, ref = torch_ref
    model, _ = torch_model
    images = np.random.default_rng(size).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    ours = torch_features(images)

    ref_fid_inception_v3 = ref.fid_inception_v3
    ref.fid_inception_v3 = lambda: model  # pytorch-fid's InceptionV3 wrapper around our model
    try:
        wrapper = ref.InceptionV3([3]).eval()
    finally:
        ref.fid_inception_v3 = ref_fid_inception_v3
    hooked = {}
    handle = model.Mixed_6d.branch1x1.register_forward_hook(
        lambda mod, inp, out: hooked.__setitem__("mixed_6/conv", out)
    )
    try:
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
            pool3 = wrapper(x)[0].reshape(n, 2048).numpy()
            spatial = hooked["mixed_6/conv"].permute(0, 2, 3, 1)[..., :7].reshape(n, -1).numpy()
    finally:
        handle.remove()
    for name, expected in (("pool3", pool3), ("spatial", spatial)):
        scale = np.abs(expected).max()
        assert scale > 1.0
        np.testing.assert_allclose(ours[name], expected, rtol=1e-4, atol=1e-4 * scale, err_msg=name)

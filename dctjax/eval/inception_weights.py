"""The FID Inception weights: a torch-free `torch.save` reader, the pytorch-fid -> JAX converter,
the .npz cache, and download-and-cache of the released file.

No package ships the weights (jax_practice.md section 16). Offline machines pass
`--inception_weights=PATH` (the released .pth or an .npz from `launch/convert_inception.py`);
online ones download `FID_WEIGHTS_URL` once into the cache directory (`$DCTJAX_CACHE`, default
~/.cache/dctjax), check its sha256 prefix and keep only the converted .npz.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import pickle
import re
import struct
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from typing import IO, Any

import ml_dtypes
import numpy as np

from dctjax._io import savez_atomic
from dctjax.eval.inception import Params, check_params, flatten_params, param_shapes
from dctjax.eval.inception import unflatten_params as _unflatten

# pytorch-fid 0.3.0 (inception.py): the TF 2015-12-05 FID Inception, ported to PyTorch.
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
CACHE_ENV = "DCTJAX_CACHE"
_HASH_RE = re.compile(r"-([a-f0-9]{8,})\.")  # torch hub: '<name>-<sha256 prefix>.<ext>'


def sha256_prefix(url_or_name: str) -> str | None:
    """The sha256 prefix in a torch-hub style file name ('...-6726825d.pth' -> '6726825d')."""
    match = _HASH_RE.search(os.path.basename(url_or_name))
    return match.group(1) if match else None


FID_WEIGHTS_SHA256_PREFIX = sha256_prefix(FID_WEIGHTS_URL)


class WeightsUnavailableError(RuntimeError):
    """The weight file could not be downloaded (typically: the machine is offline)."""


class WeightsHashError(RuntimeError):
    """The downloaded file's sha256 does not start with the prefix in its file name."""


# ----------------------------------------------------------------------------- torch.save reader

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name]).newbyteorder("<")


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage `key` (elements of `dtype`), or a legacy view starting `offset` elements in."""

    key: str
    dtype: np.dtype
    offset: int = 0


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"Expected a tensor storage, got {type(storage).__name__}.")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused) -> Any:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; anything else is refused."""

    def __init__(self, file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"Refusing to load the global {module}.{name}: a weight file may only hold a "
                "state dict of tensors (OrderedDict, torch._utils._rebuild_tensor_v2 / "
                "_rebuild_parameter and torch *Storage types)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("Unexpected persistent id in a plain pickle.")
        return self._persistent(pid)


def _storage_ref(pid: Any, legacy: bool) -> _StorageRef:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise pickle.UnpicklingError(f"Unsupported persistent id {pid!r} (not a storage).")
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"Unsupported storage type {storage_type!r}.")
    view = pid[5] if legacy and len(pid) > 5 else None
    if view is not None:  # (view_key, offset, view_size): a view into the root storage `key`
        return _StorageRef(key, storage_type.dtype, int(view[1]))
    return _StorageRef(key, storage_type.dtype)


def _materialize(obj: Any, storages: Mapping[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        flat = storages[obj.storage.key].view(obj.storage.dtype)
        start = obj.storage.offset + obj.offset
        if 0 in obj.size:
            return np.zeros(obj.size, obj.storage.dtype)
        last = start + sum((d - 1) * s for d, s in zip(obj.size, obj.stride, strict=True))
        if start < 0 or last >= flat.size or min(obj.stride, default=0) < 0:
            raise ValueError(
                f"Tensor of size {obj.size}, stride {obj.stride} at offset {start} does not fit "
                f"its storage of {flat.size} elements."
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[start:], obj.size, tuple(s * item for s in obj.stride), writeable=False
        )
        return np.array(view, dtype=obj.storage.dtype.newbyteorder("="), order="C")
    if isinstance(obj, Mapping):
        return {k: _materialize(v, storages) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(v, storages) for v in obj)
    return obj


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise ValueError(f"{path}: a torch zip checkpoint holds one data.pkl; found {pkls}.")
        prefix = pkls[0][: -len("data.pkl")]
        names = set(zf.namelist())
        if f"{prefix}byteorder" in names:
            order = zf.read(f"{prefix}byteorder").decode().strip()
            if order != "little":
                raise ValueError(f"{path}: unsupported byte order {order!r}.")
        refs: dict[str, _StorageRef] = {}

        def persistent_load(pid: Any) -> _StorageRef:
            ref = _storage_ref(pid, legacy=False)
            refs[ref.key] = ref
            return ref

        with zf.open(pkls[0]) as f:
            obj = _Unpickler(f, persistent_load).load()
        storages = {key: np.frombuffer(zf.read(f"{prefix}data/{key}"), np.uint8) for key in refs}
    return _materialize(obj, storages)


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _Unpickler(f).load()
        except Exception:
            magic = None
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a torch.save file (neither zip nor legacy format).")
        protocol = _Unpickler(f).load()
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol {protocol}.")
        sys_info = _Unpickler(f).load()
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported.")
        refs: dict[str, _StorageRef] = {}

        def persistent_load(pid: Any) -> _StorageRef:
            ref = _storage_ref(pid, legacy=True)
            refs.setdefault(ref.key, ref)
            return ref

        obj = _Unpickler(f, persistent_load).load()
        keys = _Unpickler(f).load()
        storages: dict[str, np.ndarray] = {}
        for key in keys:
            if key not in refs:
                raise ValueError(f"{path}: storage {key} is not referenced by any tensor.")
            (numel,) = struct.unpack("<q", f.read(8))
            itemsize = refs[key].dtype.itemsize
            data = f.read(numel * itemsize)
            if len(data) != numel * itemsize:
                raise ValueError(f"{path}: truncated storage {key}.")
            storages[key] = np.frombuffer(data, np.uint8)
    return _materialize(obj, storages)


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The state dict in a `torch.save` file (zip or legacy format) as numpy arrays, without torch.

    Only OrderedDicts of tensors/parameters are accepted (a restricted unpickler). Each tensor
    keeps its dtype (float32/64, float16, bfloat16, integer, bool) and shape; its storage offset
    and strides are applied to the (little-endian) storage and the result copied out C-contiguous.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # as torch decides: a local file header first
    obj = _read_zip(path) if is_zip else _read_legacy(path)
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a flat state dict of tensors.")
    return dict(obj)


# ----------------------------------------------------------------------------- conversion

_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
# Unused by the FID features: the 1008-way classifier, the auxiliary head (absent from the
# pytorch-fid file; present in torchvision checkpoints) and BatchNorm's batch counters.
_IGNORED = re.compile(r"^(fc|AuxLogits)\.|\.num_batches_tracked$")


def _torch_to_flat_name(key: str) -> str | None:
    """'Mixed_5b.branch1x1.conv.weight' -> 'Mixed_5b/branch1x1/conv/kernel' (None: unknown)."""
    *module, layer, leaf = key.split(".")
    if layer == "conv" and leaf == "weight":
        return "/".join([*module, "conv", "kernel"])
    if layer == "bn" and leaf in _BN_NAMES:
        return "/".join([*module, "bn", _BN_NAMES[leaf]])
    return None


def _summarize(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def convert_state_dict(sd: Mapping[str, np.ndarray]) -> Params:
    """pytorch-fid / torchvision Inception3 state dict -> the nested float32 params of
    `dctjax.eval.inception` (conv OIHW -> HWIO; BN weight/bias/running_mean/running_var ->
    scale/bias/mean/var, nothing folded). `fc.*`, `AuxLogits.*` and `*.num_batches_tracked` are
    ignored; ValueError names missing, unexpected or wrongly shaped keys.
    """
    expected = param_shapes()
    flat: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    wrong: list[str] = []
    wrong_names: set[str] = set()
    for key, value in sd.items():
        if _IGNORED.search(key):
            continue
        name = _torch_to_flat_name(key)
        if name is None or name not in expected:
            unexpected.append(key)
            continue
        value = np.asarray(value, np.float32)
        if name.endswith("/kernel") and value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if value.shape != expected[name]:
            wrong.append(f"{key}: {value.shape} (converted) != {expected[name]}")
            wrong_names.add(name)
            continue
        flat[name] = np.ascontiguousarray(value)
    missing = [k for k in expected if k not in flat and k not in wrong_names]
    check_state_dict_match(
        "a pytorch-fid Inception state dict", _flat_to_torch(missing), unexpected, wrong
    )
    return _unflatten({k: flat[k] for k in expected})


def check_state_dict_match(
    what: str, missing: list[str], unexpected: list[str], wrong: list[str]
) -> None:
    """ValueError listing a state dict's missing, unexpected and wrongly shaped entries (if any)."""
    if not (unexpected or missing or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing ({len(missing)}): {_summarize(missing)}")
    if unexpected:
        parts.append(f"unexpected ({len(unexpected)}): {_summarize(unexpected)}")
    if wrong:
        parts.append(f"wrong shape ({len(wrong)}): {_summarize(wrong)}")
    raise ValueError(f"Not {what}; " + "; ".join(parts))


def _flat_to_torch(names: list[str]) -> list[str]:
    inverse = {v: k for k, v in _BN_NAMES.items()}
    out = []
    for name in names:
        *module, layer, leaf = name.split("/")
        leaf = "weight" if layer == "conv" else inverse[leaf]
        out.append(".".join([*module, layer, leaf]))
    return out


# ----------------------------------------------------------------------------- npz cache


def save_params(params: Params, path: str) -> None:
    """Writes the params as .npz with flat 'a/b/c' keys, atomically (temp file + os.replace)."""
    flat = {k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()}
    savez_atomic(path, flat)


def load_params(path: str) -> Params:
    """Reads an .npz written by `save_params`; ValueError if it is not a full Inception."""
    with np.load(os.fspath(path)) as data:
        params = _unflatten({k: data[k].astype(np.float32) for k in data.files})
    check_params(params)
    return params


# ----------------------------------------------------------------------------- resolve / download


def default_cache_dir() -> str:
    """$DCTJAX_CACHE, else ~/.cache/dctjax."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "dctjax")


def _offline_message(url: str, reason: Any) -> str:
    name = os.path.basename(url)
    return (
        f"Could not download the FID Inception weights from {url} ({reason}). This machine may be "
        f"offline: download {name} on a machine with internet access (e.g. `curl -LO {url}`), "
        f"copy it here and pass --inception_weights=PATH/{name} (or an .npz made by "
        "launch/convert_inception.py)."
    )


def _download(
    url: str,
    directory: str,
    *,
    offline_message: Callable[[str, Any], str] = _offline_message,
    weights_flag: str = "--inception_weights",
    sha256: str | None = None,
) -> str:
    """Downloads `url` to a temp file in `directory` and checks its sha256 (`sha256`, a prefix or
    the full hex digest; default: the prefix in the file name). Offline: WeightsUnavailableError
    with `offline_message(url, reason)`; a hash mismatch names `weights_flag` as the way out."""
    expected = sha256 or sha256_prefix(url)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".pth")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
            except OSError as e:  # URLError, HTTPError, timeouts
                raise WeightsUnavailableError(offline_message(url, e)) from e
        actual = digest.hexdigest()
        if expected is None:
            logging.warning("%s names no sha256 prefix; not checking the download.", url)
        elif not actual.startswith(expected):
            raise WeightsHashError(
                f"The file downloaded from {url} has sha256 {actual}, which does not start with "
                f"{expected}; it was deleted. Retry, or download it by hand and pass "
                f"{weights_flag}=PATH."
            )
        return tmp
    except BaseException:
        os.remove(tmp)
        raise


def resolve_weights(weights: str | None = None, cache_dir: str | None = None) -> Params:
    """The FID Inception params.

    - `weights` a path: a torch .pth/.pt (read + converted) or an .npz from `save_params`.
    - `weights` None: the converted .npz in `cache_dir` (default `default_cache_dir()`), named after
      `FID_WEIGHTS_URL`; if absent, downloads the URL (sha256-prefix checked), converts it and
      caches the .npz atomically. Offline: WeightsUnavailableError saying to pass
      --inception_weights=PATH.
    """
    if weights:
        path = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights {path!r} not found.")
        ext = os.path.splitext(path)[1].lower()
        if ext == ".npz":
            return load_params(path)
        if ext in (".pth", ".pt", ".bin", ".ckpt"):
            return convert_state_dict(read_torch_checkpoint(path))
        raise ValueError(f"Inception weights {path!r}: expected a .pth/.pt (torch) or .npz file.")
    url = FID_WEIGHTS_URL
    directory = os.path.expanduser(cache_dir or default_cache_dir())
    cached = os.path.join(directory, os.path.splitext(os.path.basename(url))[0] + ".npz")
    if os.path.isfile(cached):
        return load_params(cached)
    os.makedirs(directory, exist_ok=True)
    logging.info("Downloading the FID Inception weights %s -> %s", url, cached)
    tmp = _download(url, directory)
    try:
        params = convert_state_dict(read_torch_checkpoint(tmp))
    finally:
        os.remove(tmp)
    save_params(params, cached)
    return params

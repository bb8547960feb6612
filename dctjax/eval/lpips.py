"""LPIPS-VGG (Zhang et al. 2018; the `lpips` package's `LPIPS(net='vgg', version='0.1')`) in JAX,
NHWC, as a pure function: a perceptual distance / autoencoder loss, differentiable in its inputs,
with frozen weights held in a plain dict.

    params = load_lpips()                    # or load_lpips("lpips_vgg.npz"), random_lpips_params(0)
    d = lpips_distance(params, x, y)         # x, y (N, H, W, 3) in [-1, 1] -> (N,) float32

Steps, as `lpips.LPIPS.forward`: ScalingLayer ((x - shift) / scale), torchvision VGG16 `features`
up to relu5_3 (3x3 convs with bias + ReLU, 2x2 max pools; taps relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3), per tap unit-normalisation over channels f / (sqrt(sum f^2) + 1e-10), squared
difference, the tap's 1x1 "lin" conv (no bias, non-negative weights), spatial mean, sum over the
5 taps. x and y run through VGG together as one batch of 2N.

Parameters (float32, numpy or jax arrays), keyed by VGG layer names:

    params["conv1_1"]["kernel"] (3, 3, 3, 64) HWIO   params["conv1_1"]["bias"] (64,)
    ... conv1_2, conv2_1, conv2_2, conv3_1..conv3_3, conv4_1..conv4_3, conv5_1..conv5_3
    params["lin0"]["kernel"] (64,) ... params["lin4"]["kernel"] (512,)

Weights. No package ships them in JAX form; like the FID Inception (`inception_weights`), they
come from (1) an .npz made by `launch/convert_lpips.py` (`--lpips_weights=PATH`), or (2) the two
original PyTorch files, downloaded once (torchvision's VGG16 `VGG16_URL`, the LPIPS linear layers
`LPIPS_LIN_URL`), converted and cached as one .npz in `$DCTJAX_CACHE` (default ~/.cache/dctjax).
Offline, (2) fails with WeightsUnavailableError naming the converter and the flag.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dctjax._io import savez_atomic
from dctjax.eval.inception import flatten_params, unflatten_params
from dctjax.eval.inception_weights import (
    WeightsUnavailableError,
    _download,
    check_state_dict_match,
    default_cache_dir,
    read_torch_checkpoint,
)

LPIPSParams = dict[str, Any]

# torchvision's ImageNet VGG16 and the LPIPS v0.1 linear layers (also shipped in the `lpips`
# pip package as lpips/weights/v0.1/vgg.pth).
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_LIN_URL = (
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
)
# sha256 of lpips 0.1.4's lpips/weights/v0.1/vgg.pth (VGG16_URL carries its prefix in its name).
LPIPS_LIN_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
CACHE_NAME = "lpips_vgg16-397923af_v0.1-a78928a0.npz"
WEIGHTS_FLAG = "--lpips_weights"
CONVERTER = "launch/convert_lpips.py"

SHIFT = (-0.030, -0.088, -0.188)  # lpips.ScalingLayer
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor
_PRECISION = lax.Precision.HIGHEST

# VGG16 `features` up to relu5_3: (name, torchvision index, in, out); a 2x2 max pool precedes
# conv2_1, conv3_1, conv4_1 and conv5_1; the LPIPS taps are the ReLUs after the *_TAPS convs.
CONVS: tuple[tuple[str, int, int, int], ...] = (
    ("conv1_1", 0, 3, 64),
    ("conv1_2", 2, 64, 64),
    ("conv2_1", 5, 64, 128),
    ("conv2_2", 7, 128, 128),
    ("conv3_1", 10, 128, 256),
    ("conv3_2", 12, 256, 256),
    ("conv3_3", 14, 256, 256),
    ("conv4_1", 17, 256, 512),
    ("conv4_2", 19, 512, 512),
    ("conv4_3", 21, 512, 512),
    ("conv5_1", 24, 512, 512),
    ("conv5_2", 26, 512, 512),
    ("conv5_3", 28, 512, 512),
)
TAPS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
POOL_BEFORE = frozenset({"conv2_1", "conv3_1", "conv4_1", "conv5_1"})
CHANNELS = (64, 128, 256, 512, 512)


def param_shapes() -> dict[str, tuple[int, ...]]:
    """{'conv1_1/kernel': (3, 3, 3, 64), ..., 'lin4/kernel': (512,)}, in forward order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, _, cin, cout in CONVS:
        shapes[f"{name}/kernel"] = (3, 3, cin, cout)
        shapes[f"{name}/bias"] = (cout,)
    for k, c in enumerate(CHANNELS):
        shapes[f"lin{k}/kernel"] = (c,)
    return shapes


def check_lpips_params(params: Mapping[str, Any]) -> None:
    """ValueError naming missing, unexpected or wrongly shaped leaves."""
    flat = flatten_params(params)
    expected = param_shapes()
    missing = [k for k in expected if k not in flat]
    unexpected = sorted(set(flat) - set(expected))
    wrong = [
        f"{k}: {tuple(np.shape(flat[k]))} != {expected[k]}"
        for k in expected
        if k in flat and tuple(np.shape(flat[k])) != expected[k]
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:10])}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong))
        if items
    ]
    if problems:
        raise ValueError("Not LPIPS-VGG params; " + "; ".join(problems))


def random_lpips_params(key_or_seed: int | jax.Array = 0) -> LPIPSParams:
    """Random float32 numpy params of the right shapes: He-normal conv kernels (torchvision's
    fan-out init), small random biases, non-negative lin weights (uniform [0, 1) / sqrt(C), of the
    order of the released ones). For tests and offline quick runs, not for measurements."""
    if isinstance(key_or_seed, int | np.integer):
        rng = np.random.default_rng(int(key_or_seed))
    else:  # a jax key (typed or raw uint32) seeds numpy's generator: fast on CPU
        key = jnp.asarray(key_or_seed)
        data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        rng = np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())
    params: LPIPSParams = {}
    for name, _, cin, cout in CONVS:
        std = np.float32(np.sqrt(2.0 / (9 * cout)))
        kernel = std * rng.standard_normal((3, 3, cin, cout), np.float32)
        bias = np.float32(0.01) * rng.standard_normal((cout,), np.float32)
        params[name] = {"kernel": kernel, "bias": bias}
    for k, c in enumerate(CHANNELS):
        lin = rng.random((c,), np.float32) / np.float32(np.sqrt(c))
        params[f"lin{k}"] = {"kernel": lin}
    return params


# ----------------------------------------------------------------------------- the network


def _conv_relu(p: Mapping[str, Any], x: jax.Array, dtype: Any) -> jax.Array:
    y = lax.conv_general_dilated(
        x.astype(dtype),
        jnp.asarray(p["kernel"]).astype(dtype),
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_PRECISION if jnp.dtype(dtype) == jnp.float32 else None,
        preferred_element_type=jnp.float32,
    )
    # jax.nn.relu's derivative is a select, so NaN/inf cotangents never leak through dead units.
    return jax.nn.relu(y + jnp.asarray(p["bias"], jnp.float32))


def _max_pool(x: jax.Array) -> jax.Array:  # torch MaxPool2d(2, 2): floor mode, no padding
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def vgg_taps(params: LPIPSParams, x: jax.Array, dtype: Any = jnp.float32) -> list[jax.Array]:
    """VGG16 features of scaled inputs (N, H, W, 3): the 5 float32 ReLU taps relu1_2..relu5_3."""
    taps = []
    for name, *_ in CONVS:
        if name in POOL_BEFORE:
            x = _max_pool(x)
        x = _conv_relu(params[name], x, dtype)
        if name in TAPS:
            taps.append(x)
    return taps


def _unit_normalize(f: jax.Array) -> jax.Array:
    """f / (sqrt(sum_c f^2) + 1e-10) over the channel axis, with a finite gradient where f = 0."""
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return f / (norm + NORM_EPS)


def scale_inputs(x: jax.Array) -> jax.Array:
    """lpips.ScalingLayer: (x - shift) / scale per RGB channel, for x in [-1, 1]."""
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    return (jnp.asarray(x, jnp.float32) - shift) / scale


def lpips_distance(
    params: LPIPSParams, x: jax.Array, y: jax.Array, dtype: Any = jnp.float32
) -> jax.Array:
    """LPIPS-VGG v0.1 distance, (N,) float32, between x and y (N, H, W, 3) in [-1, 1].

    Jit-able and differentiable in x and y (the params are constants to it: wrap them in
    `jax.lax.stop_gradient` or simply do not differentiate w.r.t. them). `dtype` is the conv
    operand dtype (e.g. jnp.bfloat16); accumulation, normalisation and the output are float32.
    Images need H, W >= 16 (four 2x2 pools); the lpips package's 64x64+ is the tested regime.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x and y must both be (N, H, W, 3); got {x.shape} and {y.shape}.")
    n = x.shape[0]
    both = scale_inputs(jnp.concatenate([x, y], axis=0))
    total = jnp.zeros((n,), jnp.float32)
    for k, tap in enumerate(vgg_taps(params, both, dtype)):
        f = _unit_normalize(tap)
        diff = jnp.square(f[:n] - f[n:])
        lin = jnp.asarray(params[f"lin{k}"]["kernel"], jnp.float32)
        per_pixel = jnp.einsum("nhwc,c->nhw", diff, lin, precision=_PRECISION)
        total = total + jnp.mean(per_pixel, axis=(1, 2))
    return total


# ----------------------------------------------------------------------------- conversion

_VGG_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_VGG_IGNORED = re.compile(r"^classifier\.")  # the ImageNet head, unused by LPIPS
# lin{k}.model.1.weight (use_dropout=True, the released file); model.0 without the dropout
_LIN_KEY = re.compile(r"^lin([0-4])\.model\.[01]\.weight$")


def convert_state_dicts(vgg_sd: Mapping[str, Any], lin_sd: Mapping[str, Any]) -> LPIPSParams:
    """torchvision VGG16 state dict (`features.N.weight|bias`; `classifier.*` ignored) + the lpips
    linear-layer state dict (`lin{k}.model.1.weight`, (1, C, 1, 1)) -> float32 numpy params
    (conv OIHW -> HWIO, lin -> (C,)). `features.N` past relu5_3 (N > 28) is ignored. ValueError
    names missing, unexpected or wrongly shaped keys."""
    expected = param_shapes()
    by_index = {idx: name for name, idx, _, _ in CONVS}
    flat: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    wrong: list[str] = []
    wrong_names: set[str] = set()
    for key, value in vgg_sd.items():
        match = _VGG_KEY.match(key)
        if _VGG_IGNORED.match(key) or (match and int(match.group(1)) > CONVS[-1][1]):
            continue
        if not match or int(match.group(1)) not in by_index:
            unexpected.append(key)
            continue
        value = np.asarray(value, np.float32)
        name = by_index[int(match.group(1))]
        flat_key = f"{name}/{'kernel' if match.group(2) == 'weight' else 'bias'}"
        if flat_key.endswith("/kernel") and value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if value.shape != expected[flat_key]:
            wrong.append(f"{key}: {value.shape} (converted) != {expected[flat_key]}")
            wrong_names.add(flat_key)
            continue
        flat[flat_key] = np.ascontiguousarray(value)
    for key, value in lin_sd.items():
        match = _LIN_KEY.match(key)
        if not match:
            unexpected.append(key)
            continue
        value = np.asarray(value, np.float32)
        flat_key = f"lin{match.group(1)}/kernel"
        if value.shape != (1, expected[flat_key][0], 1, 1):
            wrong.append(f"{key}: {value.shape} != (1, {expected[flat_key][0]}, 1, 1)")
            wrong_names.add(flat_key)
            continue
        flat[flat_key] = np.ascontiguousarray(value.reshape(-1))
    missing = [k for k in expected if k not in flat and k not in wrong_names]
    check_state_dict_match(
        "a torchvision VGG16 + lpips v0.1 vgg linear-layer pair", missing, unexpected, wrong
    )
    return unflatten_params({k: flat[k] for k in expected})


def convert_files(vgg_path: str, lin_path: str) -> LPIPSParams:
    """`convert_state_dicts` on two torch.save files (read without torch)."""
    return convert_state_dicts(read_torch_checkpoint(vgg_path), read_torch_checkpoint(lin_path))


# ----------------------------------------------------------------------------- npz, cache, download


def save_lpips_params(params: LPIPSParams, path: str) -> None:
    """Writes the params as .npz with flat 'conv1_1/kernel' keys, atomically."""
    check_lpips_params(params)
    savez_atomic(path, {k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()})


def load_lpips_params(path: str) -> LPIPSParams:
    """Reads an .npz written by `save_lpips_params`; ValueError if it is not LPIPS-VGG."""
    with np.load(os.fspath(path)) as data:
        params = unflatten_params({k: data[k].astype(np.float32) for k in data.files})
    check_lpips_params(params)
    return params


def _offline_message(url: str, reason: Any) -> str:
    return (
        f"Could not download the LPIPS-VGG weights from {url} ({reason}). This machine may be "
        f"offline: on a machine with internet access download {VGG16_URL} and {LPIPS_LIN_URL} "
        "(the latter is also lpips/weights/v0.1/vgg.pth in the `lpips` pip package), convert "
        f"them with `python {CONVERTER} --vgg=vgg16-397923af.pth --lin=vgg.pth "
        f"--out=lpips_vgg.npz`, copy the .npz here and pass {WEIGHTS_FLAG}=PATH/lpips_vgg.npz."
    )


def load_lpips(weights: str | None = None, cache_dir: str | None = None) -> LPIPSParams:
    """The LPIPS-VGG v0.1 params.

    - `weights` a path: an .npz from `launch/convert_lpips.py` / `save_lpips_params`.
    - `weights` None: `CACHE_NAME` in `cache_dir` (default `default_cache_dir()`); if absent,
      downloads `LPIPS_LIN_URL` and `VGG16_URL` (sha256 checked), converts them and caches the .npz
      atomically (the .pth files are deleted). Offline: WeightsUnavailableError naming
      `launch/convert_lpips.py` and --lpips_weights.
    """
    if weights:
        path = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LPIPS weights {path!r} not found.")
        if os.path.splitext(path)[1].lower() != ".npz":
            raise ValueError(
                f"LPIPS weights {path!r}: expected an .npz; convert the torchvision VGG16 and "
                f"lpips vgg.pth files with `python {CONVERTER} --vgg=... --lin=... --out=X.npz`."
            )
        return load_lpips_params(path)
    directory = os.path.expanduser(cache_dir or default_cache_dir())
    cached = os.path.join(directory, CACHE_NAME)
    if os.path.isfile(cached):
        return load_lpips_params(cached)
    os.makedirs(directory, exist_ok=True)
    logging.info(
        "Downloading the LPIPS-VGG weights %s + %s -> %s", LPIPS_LIN_URL, VGG16_URL, cached
    )
    kw = {"offline_message": _offline_message, "weights_flag": WEIGHTS_FLAG}
    lin = _download(LPIPS_LIN_URL, directory, sha256=LPIPS_LIN_SHA256, **kw)  # small: fails fast
    try:
        vgg = _download(VGG16_URL, directory, **kw)
        try:
            params = convert_files(vgg, lin)
        finally:
            os.remove(vgg)
    finally:
        os.remove(lin)
    save_lpips_params(params, cached)
    return params


__all__ = [
    "CACHE_NAME",
    "LPIPS_LIN_URL",
    "LPIPSParams",
    "VGG16_URL",
    "WeightsUnavailableError",
    "check_lpips_params",
    "convert_files",
    "convert_state_dicts",
    "load_lpips",
    "load_lpips_params",
    "lpips_distance",
    "param_shapes",
    "random_lpips_params",
    "save_lpips_params",
    "scale_inputs",
    "vgg_taps",
]

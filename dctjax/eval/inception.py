"""The FID InceptionV3 (pytorch-fid's `fid_inception_v3`, TF 2015-12-05 graph) in JAX, NHWC.

The network is a pure function over a nested dict of float32 parameters whose keys follow
torchvision's module names, so the converter is a rename plus an OIHW -> HWIO transpose:

    params["Mixed_5b"]["branch1x1"]["conv"]["kernel"]   (kh, kw, in, out)
    params["Mixed_5b"]["branch1x1"]["bn"]["scale" | "bias" | "mean" | "var"]   (out,)

Every conv is torchvision's BasicConv2d: conv (no bias) -> BatchNorm (inference, eps = 1e-3, kept
as scale/bias/mean/var, folded only at run time) -> ReLU. pytorch-fid's FID-specific blocks are
reproduced: the average pools of Mixed_5b-5d, 6b-6e and 7b exclude the zero padding
(`count_include_pad=False`), and Mixed_7c pools its last branch with a 3x3 *max* pool.

Outputs:
- 'pool3' (N, 2048): the global average pool after Mixed_7c (pytorch-fid's block 3).
- 'spatial' (N, 2023): sFID features, TF's `mixed_6/conv` = the post-ReLU 1x1 branch of Mixed_6d
  (TF mixed_3..mixed_7 are torchvision's Mixed_6a..6e), first 7 of its 192 channels, flattened in
  (H, W, C) order like the NHWC tensor `[..., :7]`: 17 x 17 x 7.

Preprocessing (`preprocess`): uint8 RGB (or float in [0, 255]) -> /255 -> bilinear resize to
299x299 exactly as torch `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing,
also when downsampling) -> 2x - 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Params = dict[str, Any]

INPUT_SIZE = 299
BN_EPS = 1e-3
SPATIAL_CHANNELS = 7
FEATURE_DIMS = {"pool3": 2048, "spatial": 17 * 17 * SPATIAL_CHANNELS}
_PRECISION = lax.Precision.HIGHEST  # full float32 convs on TPU/GPU too (FID parity)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One BasicConv2d: `in_ch` -> `out_ch` channels, kernel (kh, kw), stride, padding (ph, pw)."""

    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)


def _c(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, pad: Any = 0) -> ConvSpec:
    k = (k, k) if isinstance(k, int) else k
    pad = (pad, pad) if isinstance(pad, int) else pad
    return ConvSpec(cin, cout, tuple(k), stride, tuple(pad))


def _block_a(cin: int, pool_features: int) -> dict[str, ConvSpec]:
    return {
        "branch1x1": _c(cin, 64, 1),
        "branch5x5_1": _c(cin, 48, 1),
        "branch5x5_2": _c(48, 64, 5, pad=2),
        "branch3x3dbl_1": _c(cin, 64, 1),
        "branch3x3dbl_2": _c(64, 96, 3, pad=1),
        "branch3x3dbl_3": _c(96, 96, 3, pad=1),
        "branch_pool": _c(cin, pool_features, 1),
    }


def _block_b(cin: int) -> dict[str, ConvSpec]:
    return {
        "branch3x3": _c(cin, 384, 3, stride=2),
        "branch3x3dbl_1": _c(cin, 64, 1),
        "branch3x3dbl_2": _c(64, 96, 3, pad=1),
        "branch3x3dbl_3": _c(96, 96, 3, stride=2),
    }


def _block_c(cin: int, c7: int) -> dict[str, ConvSpec]:
    return {
        "branch1x1": _c(cin, 192, 1),
        "branch7x7_1": _c(cin, c7, 1),
        "branch7x7_2": _c(c7, c7, (1, 7), pad=(0, 3)),
        "branch7x7_3": _c(c7, 192, (7, 1), pad=(3, 0)),
        "branch7x7dbl_1": _c(cin, c7, 1),
        "branch7x7dbl_2": _c(c7, c7, (7, 1), pad=(3, 0)),
        "branch7x7dbl_3": _c(c7, c7, (1, 7), pad=(0, 3)),
        "branch7x7dbl_4": _c(c7, c7, (7, 1), pad=(3, 0)),
        "branch7x7dbl_5": _c(c7, 192, (1, 7), pad=(0, 3)),
        "branch_pool": _c(cin, 192, 1),
    }


def _block_d(cin: int) -> dict[str, ConvSpec]:
    return {
        "branch3x3_1": _c(cin, 192, 1),
        "branch3x3_2": _c(192, 320, 3, stride=2),
        "branch7x7x3_1": _c(cin, 192, 1),
        "branch7x7x3_2": _c(192, 192, (1, 7), pad=(0, 3)),
        "branch7x7x3_3": _c(192, 192, (7, 1), pad=(3, 0)),
        "branch7x7x3_4": _c(192, 192, 3, stride=2),
    }


def _block_e(cin: int) -> dict[str, ConvSpec]:
    return {
        "branch1x1": _c(cin, 320, 1),
        "branch3x3_1": _c(cin, 384, 1),
        "branch3x3_2a": _c(384, 384, (1, 3), pad=(0, 1)),
        "branch3x3_2b": _c(384, 384, (3, 1), pad=(1, 0)),
        "branch3x3dbl_1": _c(cin, 448, 1),
        "branch3x3dbl_2": _c(448, 384, 3, pad=1),
        "branch3x3dbl_3a": _c(384, 384, (1, 3), pad=(0, 1)),
        "branch3x3dbl_3b": _c(384, 384, (3, 1), pad=(1, 0)),
        "branch_pool": _c(cin, 192, 1),
    }


# torchvision's Inception3 layers up to Mixed_7c, in forward order (no AuxLogits, no fc).
ARCHITECTURE: dict[str, ConvSpec | dict[str, ConvSpec]] = {
    "Conv2d_1a_3x3": _c(3, 32, 3, stride=2),
    "Conv2d_2a_3x3": _c(32, 32, 3),
    "Conv2d_2b_3x3": _c(32, 64, 3, pad=1),
    "Conv2d_3b_1x1": _c(64, 80, 1),
    "Conv2d_4a_3x3": _c(80, 192, 3),
    "Mixed_5b": _block_a(192, 32),
    "Mixed_5c": _block_a(256, 64),
    "Mixed_5d": _block_a(288, 64),
    "Mixed_6a": _block_b(288),
    "Mixed_6b": _block_c(768, 128),
    "Mixed_6c": _block_c(768, 160),
    "Mixed_6d": _block_c(768, 160),
    "Mixed_6e": _block_c(768, 192),
    "Mixed_7a": _block_d(768),
    "Mixed_7b": _block_e(1280),
    "Mixed_7c": _block_e(2048),
}


def conv_specs() -> dict[str, ConvSpec]:
    """Every BasicConv2d by its '/'-joined module path, e.g. 'Mixed_5b/branch1x1'."""
    out: dict[str, ConvSpec] = {}
    for name, spec in ARCHITECTURE.items():
        if isinstance(spec, ConvSpec):
            out[name] = spec
        else:
            out.update({f"{name}/{sub}": s for sub, s in spec.items()})
    return out


def param_shapes() -> dict[str, tuple[int, ...]]:
    """Flat parameter shapes by '/'-joined path ('Mixed_5b/branch1x1/conv/kernel': HWIO)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path, s in conv_specs().items():
        shapes[f"{path}/conv/kernel"] = (*s.kernel, s.in_ch, s.out_ch)
        for leaf in ("scale", "bias", "mean", "var"):
            shapes[f"{path}/bn/{leaf}"] = (s.out_ch,)
    return shapes


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{k}": v for k, v in flatten_params(value).items()})
        else:
            flat[key] = value
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> Params:
    """{'a/b/c': leaf} -> nested dict."""
    params: Params = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = params
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return params


def check_params(params: Mapping[str, Any]) -> None:
    """ValueError naming missing, unexpected or wrongly shaped leaves."""
    flat = flatten_params(params)
    expected = param_shapes()
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    wrong = [
        f"{k}: {tuple(np.shape(flat[k]))} != {expected[k]}"
        for k in expected
        if k in flat and tuple(np.shape(flat[k])) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (
                f", ... ({len(items)} in all)" if len(items) > 8 else ""
            )
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError("Invalid Inception parameters; " + "; ".join(problems))


def random_params(seed: int = 0) -> Params:
    """Random float32 parameters of the right shapes (tests, benchmarks): He-normal kernels,
    BN statistics and affine near identity so activations keep an O(1) scale."""
    rng = np.random.default_rng(seed)
    flat: dict[str, np.ndarray] = {}
    for path, shape in param_shapes().items():
        leaf = path.rsplit("/", 1)[1]
        if leaf == "kernel":
            fan_in = math.prod(shape[:-1])
            value = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        elif leaf == "var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "scale":
            value = rng.uniform(0.8, 1.2, shape)
        else:  # bias, mean
            value = 0.1 * rng.standard_normal(shape)
        flat[path] = value.astype(np.float32)
    return unflatten_params(flat)


def num_parameters(params: Mapping[str, Any]) -> int:
    """Total number of scalars in the parameter tree (BN statistics included)."""
    return sum(int(np.prod(np.shape(v))) for v in flatten_params(params).values())


# ----------------------------------------------------------------------------- preprocessing


def resize_indices(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch bilinear (align_corners=False) source indices i0, i1 and weight of i1, in float32.

    src = max(0, (dst + 0.5) * in/out - 0.5); i0 = floor(src); i1 = min(i0 + 1, in - 1);
    out = (1 - w) * x[i0] + w * x[i1] with w = src - i0, as in ATen's upsample_bilinear2d.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, w1


def _resize_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    i0, i1, w1 = resize_indices(x.shape[axis], out_size)
    if x.shape[axis] == out_size and not w1.any():
        return x
    bshape = [1] * x.ndim
    bshape[axis] = out_size
    w1 = jnp.asarray(w1).reshape(bshape)
    a, b = jnp.take(x, i0, axis=axis), jnp.take(x, i1, axis=axis)
    return (1.0 - w1) * a + w1 * b


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """uint8 (or float in [0, 255]) RGB (N, H, W, 3) -> float32 (N, size, size, 3) in [-1, 1].

    /255, bilinear resize like torch `F.interpolate(..., mode='bilinear', align_corners=False)`
    (width first, then height, as ATen does), then 2x - 1.
    """
    x = images.astype(jnp.float32) / 255.0
    x = _resize_axis(x, 2, size)
    x = _resize_axis(x, 1, size)
    return 2.0 * x - 1.0


# ----------------------------------------------------------------------------- network


def _conv_bn_relu(p: Mapping[str, Any], spec: ConvSpec, x: jax.Array) -> jax.Array:
    ph, pw = spec.padding
    y = lax.conv_general_dilated(
        x,
        p["conv"]["kernel"],
        window_strides=(spec.stride, spec.stride),
        padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_PRECISION,
    )
    bn = p["bn"]
    scale = bn["scale"] * lax.rsqrt(bn["var"] + BN_EPS)
    return jax.nn.relu(y * scale + (bn["bias"] - bn["mean"] * scale))


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    """3x3 max pool; padding (if any) never wins, like torch's -inf padding."""
    pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool, padding 1, `count_include_pad=False`."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)

    def counts(n: int) -> np.ndarray:
        i = np.arange(n)
        return (np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1).astype(np.float32)

    h, w = x.shape[1], x.shape[2]
    return total / jnp.asarray(np.outer(counts(h), counts(w))[None, :, :, None])


class _Block:
    """Applies the named BasicConv2d layers of one Mixed block."""

    def __init__(self, params: Mapping[str, Any], name: str):
        self.params, self.specs = params[name], ARCHITECTURE[name]

    def __call__(self, x: jax.Array, *names: str) -> jax.Array:
        for n in names:
            x = _conv_bn_relu(self.params[n], self.specs[n], x)
        return x


def _mixed_a(params: Params, name: str, x: jax.Array) -> jax.Array:  # FIDInceptionA
    c = _Block(params, name)
    return jnp.concatenate(
        [
            c(x, "branch1x1"),
            c(x, "branch5x5_1", "branch5x5_2"),
            c(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
            c(_avg_pool_exclude_pad(x), "branch_pool"),
        ],
        axis=-1,
    )


def _mixed_b(params: Params, name: str, x: jax.Array) -> jax.Array:  # InceptionB
    c = _Block(params, name)
    return jnp.concatenate(
        [
            c(x, "branch3x3"),
            c(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
            _max_pool(x, 2),
        ],
        axis=-1,
    )


def _mixed_c(params: Params, name: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FIDInceptionC; also returns the 1x1 branch (TF `mixed_N/conv`)."""
    c = _Block(params, name)
    b1 = c(x, "branch1x1")
    out = jnp.concatenate(
        [
            b1,
            c(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
            c(x, *(f"branch7x7dbl_{i}" for i in range(1, 6))),
            c(_avg_pool_exclude_pad(x), "branch_pool"),
        ],
        axis=-1,
    )
    return out, b1


def _mixed_d(params: Params, name: str, x: jax.Array) -> jax.Array:  # InceptionD
    c = _Block(params, name)
    return jnp.concatenate(
        [
            c(x, "branch3x3_1", "branch3x3_2"),
            c(x, *(f"branch7x7x3_{i}" for i in range(1, 5))),
            _max_pool(x, 2),
        ],
        axis=-1,
    )


def _mixed_e(params: Params, name: str, x: jax.Array, max_pool: bool) -> jax.Array:
    """FIDInceptionE_1 (average pool excluding padding) or FIDInceptionE_2 (`max_pool`)."""
    c = _Block(params, name)
    b3 = c(x, "branch3x3_1")
    bd = c(x, "branch3x3dbl_1", "branch3x3dbl_2")
    pooled = _max_pool(x, 1, pad=1) if max_pool else _avg_pool_exclude_pad(x)
    return jnp.concatenate(
        [
            c(x, "branch1x1"),
            c(b3, "branch3x3_2a"),
            c(b3, "branch3x3_2b"),
            c(bd, "branch3x3dbl_3a"),
            c(bd, "branch3x3dbl_3b"),
            c(pooled, "branch_pool"),
        ],
        axis=-1,
    )


def inception_network(params: Params, x: jax.Array) -> dict[str, jax.Array]:
    """Preprocessed float32 (N, 299, 299, 3) in [-1, 1] -> {'pool3': (N, 2048),
    'spatial': (N, 2023)}, float32."""
    x = x.astype(jnp.float32)
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = _conv_bn_relu(params[name], ARCHITECTURE[name], x)
    x = _max_pool(x, 2)  # (N, 73, 73, 64)
    for name in ("Conv2d_3b_1x1", "Conv2d_4a_3x3"):
        x = _conv_bn_relu(params[name], ARCHITECTURE[name], x)
    x = _max_pool(x, 2)  # (N, 35, 35, 192)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _mixed_a(params, name, x)
    x = _mixed_b(params, "Mixed_6a", x)  # (N, 17, 17, 768)
    x, _ = _mixed_c(params, "Mixed_6b", x)
    x, _ = _mixed_c(params, "Mixed_6c", x)
    x, mixed_6_conv = _mixed_c(params, "Mixed_6d", x)  # TF mixed_6/conv: (N, 17, 17, 192)
    x, _ = _mixed_c(params, "Mixed_6e", x)
    x = _mixed_d(params, "Mixed_7a", x)  # (N, 8, 8, 1280)
    x = _mixed_e(params, "Mixed_7b", x, max_pool=False)
    x = _mixed_e(params, "Mixed_7c", x, max_pool=True)  # (N, 8, 8, 2048)
    n = x.shape[0]
    return {
        "pool3": jnp.mean(x, axis=(1, 2)),
        "spatial": mixed_6_conv[..., :SPATIAL_CHANNELS].reshape(n, -1),
    }


def inception_apply(params: Params, images: jax.Array) -> dict[str, jax.Array]:
    """uint8 (or float in [0, 255]) RGB (N, H, W, 3) -> {'pool3': (N, 2048), 'spatial': (N, 2023)}."""
    return inception_network(params, preprocess(images))


# ----------------------------------------------------------------------------- batched runner

# Module-level jits: every InceptionFeatures shares their compilation caches.
_preprocess_jit = jax.jit(preprocess)
_network_jit = jax.jit(inception_network)


def _to_numpy(x: jax.Array) -> np.ndarray:
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x, dtype=np.float32)


class InceptionFeatures:
    """Batched FID/sFID features of host images.

    `__call__(images)` takes uint8 RGB (or float in [0, 255]) of shape (N, H, W, 3) (a single
    channel (N, H, W, 1) is repeated to RGB) and returns float32 numpy {'pool3': (N, 2048),
    'spatial': (N, 2023)}. Images go through in batches of `batch_size`; the last batch is
    zero-padded, so the network compiles once per batch size (the cheap resize once per input
    size). With `mesh`, each batch is split over all of the mesh's axes (the project's
    `P(('data', 'fsdp'))` batch layout) and the parameters are replicated; every process must then
    pass the same images.
    """

    def __init__(self, params: Params, *, batch_size: int = 50, mesh: Mesh | None = None):
        check_params(params)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be positive.")
        self.batch_size = batch_size
        self.mesh = mesh
        params = jax.tree.map(lambda v: np.asarray(v, np.float32), params)
        if mesh is None:
            self._batch_sharding = None
            self.params = jax.device_put(params)
        else:
            if batch_size % mesh.size:
                raise ValueError(
                    f"batch_size={batch_size} must be divisible by the {mesh.size} devices of the "
                    f"mesh {dict(mesh.shape)} to shard each batch over it."
                )
            self._batch_sharding = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
            self.params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))

    @property
    def feature_dims(self) -> dict[str, int]:
        """{'pool3': 2048, 'spatial': 2023}."""
        return dict(FEATURE_DIMS)

    def _put(self, batch: np.ndarray) -> jax.Array:
        if self._batch_sharding is None:
            return jax.device_put(batch)
        return jax.make_array_from_callback(batch.shape, self._batch_sharding, lambda i: batch[i])

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"Expected images (N, H, W, 3) or (N, H, W, 1); got {images.shape}.")
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"Expected uint8 or float images in [0, 255]; got {images.dtype}.")
        if images.dtype != np.uint8:
            images = images.astype(np.float32, copy=False)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        n, bs = len(images), self.batch_size
        out: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_DIMS}
        pending: tuple[dict[str, jax.Array], int] | None = None

        def collect(feats: dict[str, jax.Array], m: int) -> None:
            for k in out:
                out[k].append(_to_numpy(feats[k])[:m])

        for start in range(0, n, bs):
            batch = images[start : start + bs]
            m = len(batch)
            if m < bs:
                pad = np.zeros((bs - m, *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            feats = _network_jit(self.params, _preprocess_jit(self._put(batch)))
            if pending is not None:  # fetch the previous batch while this one runs
                collect(*pending)
            pending = (feats, m)
        if pending is not None:
            collect(*pending)
        return {
            k: np.concatenate(v) if v else np.zeros((0, FEATURE_DIMS[k]), np.float32)
            for k, v in out.items()
        }


def load_inception(
    weights: str | None = None,
    *,
    cache_dir: str | None = None,
    batch_size: int = 50,
    mesh: Mesh | None = None,
) -> InceptionFeatures:
    """`InceptionFeatures` with the FID weights from `resolve_weights(weights, cache_dir)`: a
    pytorch-fid .pth, a converted .npz, or (None) the cached / downloaded release file."""
    from dctjax.eval.inception_weights import resolve_weights

    return InceptionFeatures(
        resolve_weights(weights, cache_dir=cache_dir), batch_size=batch_size, mesh=mesh
    )

"""Backbones chosen by name (`config.model`): `make_model(name, *, rngs, **kwargs)`.

| name            | class           | input x                     | sizes                     |
|-----------------|-----------------|-----------------------------|---------------------------|
| `uvit`          | `UViT`          | DCT tokens (N, T, F)        | T XS S M M18 M20 L H      |
| `uvit_pixel`    | `UViT`          | pixels (N, H, W, 3), p=4    | T XS S M M18 M20 L H      |
| `dit`           | `DiT`           | DCT tokens (N, T, F)        | T S B L XL                |
| `jit`           | `JiT`           | pixels (N, H, W, 3)         | T S B L H 700M            |
| `dctransformer` | `DCTransformer` | decoder slice + DCT image   | Table 3 columns, S, T     |
| `autoencoder`   | `Autoencoder`   | pixels (N, H, W, 3)         | ldm_f16d16 ldm_f8d4 T     |

Every model is called as `model(x, t, y=None)` with t in [0, 1] and returns float32 of x's shape
(U-ViT and DiT form tau = 999 t themselves; JiT embeds t itself, t = 1 data, predicts x and also
takes `dropout_key=`). `input_shape` is the representation's per-example shape
(`representation.shape`), e.g. `make_model('uvit', input_shape=rep.shape, size='S', rngs=...)`.
The DCTransformer is the exception: it takes a chunk's fields (`chunking.make_chunk`) and returns
channel, position and value logits; it is built from the codec's block size, grid and clip.
The Autoencoder (LDM AutoencoderKL + optional PatchGAN) is the other one: `encode(x)` -> (mean,
logvar), `decode(z)`, `model(x, key=None)` -> (reconstruction, mean, logvar, z); its sizes are
(ch, downsampling factor, latent channels).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from flax import nnx

from dctjax.models import autoencoder
from dctjax.models.autoencoder import Autoencoder
from dctjax.models.dctransformer import DCTransformer, registry_sizes
from dctjax.models.dit import DIT_SIZES, DiT
from dctjax.models.jit import JIT_SIZES, JiT
from dctjax.models.uvit import UVIT_SIZES, UViT
from dctjax.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: the class, the keyword defaults this name adds, and its named sizes."""

    cls: type[nnx.Module]
    defaults: Mapping[str, Any]
    sizes: Mapping[str, tuple[int, int, int]]


_REGISTRY: Registry[ModelSpec] = Registry("model")


def register(
    name: str, cls: type[nnx.Module], sizes: Mapping[str, tuple[int, int, int]], **defaults: Any
) -> None:
    """Adds `cls` under `name`; `defaults` are keyword arguments `make_model` fills in."""
    _REGISTRY.register(name, ModelSpec(cls, dict(defaults), dict(sizes)))


def unregister(name: str) -> None:
    """Removes an entry (for tests that register temporary models)."""
    _REGISTRY.unregister(name)


def registered_models() -> list[str]:
    return _REGISTRY.names()


def model_sizes(name: str) -> dict[str, tuple[int, int, int]]:
    """name -> {size: (embed_dim, depth, num_heads)}."""
    return dict(_spec(name).sizes)


def _spec(name: str) -> ModelSpec:
    return _REGISTRY.get(name)


def make_model(name: str, *, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
    """Builds the model `name`; its arguments are checked here, before any compilation."""
    spec = _spec(name)
    params = inspect.signature(spec.cls.__init__).parameters
    valid = sorted(p for p in params if p not in ("self", "rngs"))
    unknown = set(kwargs) - set(valid)
    if unknown:
        raise ValueError(
            f"model {name!r} takes no argument(s) {sorted(unknown)}; its arguments are {valid}."
        )
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.name not in ("self", "rngs")
        and p.name not in kwargs
        and p.name not in spec.defaults
    ]
    if missing:
        raise ValueError(f"model {name!r} needs {missing} (e.g. input_shape=representation.shape).")
    return spec.cls(**{**spec.defaults, **kwargs}, rngs=rngs)


register("uvit", UViT, UVIT_SIZES)
register("uvit_pixel", UViT, UVIT_SIZES, patch_size=4)
register("dit", DiT, DIT_SIZES)
register("jit", JiT, JIT_SIZES)
register("dctransformer", DCTransformer, registry_sizes())
register("autoencoder", Autoencoder, autoencoder.registry_sizes())

"""Model families, chosen by `config.family` (a config without the field is `diffusion`).

| family      | representation          | model          | objective                     | sampling           |
|-------------|-------------------------|----------------|-------------------------------|--------------------|
| `diffusion` | `dct_tokens`, `pixels`  | U-ViT, DiT     | VP-SDE eps/x0/v               | DPM-Solver, Euler  |
| `flow`      | `pixels`                | JiT (+ SF)     | rectified flow, x-pred v-loss | Heun/Euler + CFG   |
| `autoregressive` | `sparse_dct`       | DCTransformer  | chunked cross-entropy         | chunked, KV-cached |
| `autoencoder` | `pixels`              | SD-VAE-style AE | L1/LPIPS/GAN + KL, ESM, DSM  | reconstruct / prior|

A family adds a module here and registers it; the train loop (`dctjax/train/loop.py`) and the
sampler (`dctjax/sampling.py`) call it through `dctjax.families.base.Family` and never change.
"""

from __future__ import annotations

from typing import Any

from dctjax.families.autoencoder import Autoencoder
from dctjax.families.autoregressive import Autoregressive
from dctjax.families.base import DataAccess, Family, TrainedModel, Training
from dctjax.families.diffusion import Diffusion
from dctjax.families.flow import Flow
from dctjax.registry import Registry

FAMILIES: Registry[Family] = Registry("family")
FAMILIES.register(Diffusion.name, Diffusion())
FAMILIES.register(Flow.name, Flow())
FAMILIES.register(Autoregressive.name, Autoregressive())
FAMILIES.register(Autoencoder.name, Autoencoder())

DEFAULT_FAMILY = "diffusion"


def get_family(config: Any) -> Family:
    """The family of `config.family` (default 'diffusion', as configs written before families)."""
    return FAMILIES.get(config.get("family") or DEFAULT_FAMILY)


def build(config: Any) -> TrainedModel:
    """What a trained model of `config` is (no optimiser, no data): `get_family(config).build`."""
    return get_family(config).build(config)


__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "DataAccess",
    "Family",
    "TrainedModel",
    "Training",
    "build",
    "get_family",
]

"""Diffusion backbones: U-ViT (DCT tokens and pixels), DiT, JiT (pixels, Spectral Forcing), built by
name with `make_model`."""

from dctjax.models.dit import DIT_SIZES, DiT
from dctjax.models.jit import JIT_SIZES, JiT
from dctjax.models.registry import make_model, model_sizes, register, registered_models, unregister
from dctjax.models.uvit import UVIT_SIZES, UViT

__all__ = [
    "DIT_SIZES",
    "JIT_SIZES",
    "UVIT_SIZES",
    "DiT",
    "JiT",
    "UViT",
    "make_model",
    "model_sizes",
    "register",
    "registered_models",
    "unregister",
]

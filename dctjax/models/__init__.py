"""Diffusion backbones: U-ViT (DCT tokens and pixels) and DiT, built by name with `make_model`."""

from dctjax.models.dit import DIT_SIZES, DiT
from dctjax.models.registry import make_model, model_sizes, register, registered_models, unregister
from dctjax.models.uvit import UVIT_SIZES, UViT

__all__ = [
    "DIT_SIZES",
    "UVIT_SIZES",
    "DiT",
    "UViT",
    "make_model",
    "model_sizes",
    "register",
    "registered_models",
    "unregister",
]

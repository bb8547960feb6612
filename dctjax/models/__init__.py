"""Diffusion backbones: U-ViT (DCT tokens and pixels), DiT, JiT (pixels, Spectral Forcing), and the
LDM autoencoder (AutoencoderKL + PatchGAN), built by name with `make_model`."""

from dctjax.models.autoencoder import AUTOENCODER_SIZES, Autoencoder
from dctjax.models.dit import DIT_SIZES, DiT
from dctjax.models.jit import JIT_SIZES, JiT
from dctjax.models.registry import make_model, model_sizes, register, registered_models, unregister
from dctjax.models.uvit import UVIT_SIZES, UViT

__all__ = [
    "AUTOENCODER_SIZES",
    "DIT_SIZES",
    "JIT_SIZES",
    "UVIT_SIZES",
    "Autoencoder",
    "DiT",
    "JiT",
    "UViT",
    "make_model",
    "model_sizes",
    "register",
    "registered_models",
    "unregister",
]

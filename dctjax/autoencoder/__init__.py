"""Autoencoder (SD-VAE / Spectrum Matching, spec/spectral.md §4.2) building blocks.

Modules: `losses` (the taming/LDM `LPIPSWithDiscriminator` pieces as pure functions: hinge and
vanilla discriminator losses, generator loss, adaptive GAN weight, warm-up gating, the diagonal
Gaussian KL and L1). The ESM loss lives in `dctjax.codec.spectral`.
"""

from dctjax.autoencoder import losses

__all__ = ["losses"]

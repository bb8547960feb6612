"""Spectrum Matching autoencoders on ImageNet 256 (spec spectral.md §4.2): f16d16, batch 128, 600k steps.

    python launch/train.py --config=configs/sm_imagenet256.py:sdvae --workdir=runs/sdvae_in256
    python launch/train.py --config=configs/sm_imagenet256.py:esm --workdir=runs/esmae_in256
    python launch/train.py --config=configs/sm_imagenet256.py:dsm,total_steps=1000000 --workdir=runs/dsm_in256

As configs/sm_celeba256.py on ImageNet-1k (tfds imagenet2012, ADM centre crop); the DSM branch of
the reference trains for 1M steps.
"""

from configs import common


def get_config(arg=None):
    c = common.autoencoder_config(
        name="sm_imagenet256",
        dataset="imagenet2012",
        resolution=256,
        size="ldm_f16d16",
        batch_size=128,
        total_steps=600_000,
        recipe="sdvae",
    )
    c.eval.split = "validation"
    return common.apply_autoencoder_variant(c, arg)

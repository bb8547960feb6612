"""Spectrum Matching autoencoders on CelebA-HQ 256 (spec spectral.md §4.2): f16d16, batch 48, 500k steps.

    python launch/train.py --config=configs/sm_celeba256.py:sdvae --workdir=runs/sdvae_celeba256
    python launch/train.py --config=configs/sm_celeba256.py:esm --workdir=runs/esmae_celeba256
    python launch/train.py --config=configs/sm_celeba256.py:dsm --workdir=runs/dsm_celeba256

`ldm_f16d16` (channels 128, 128, 256, 256, 512; 16x16x16 latents), L1 + 0.5 LPIPS (VGG) + PatchGAN
hinge loss with the adaptive weight x 0.5 from step 50,001; `sdvae` adds KL 1e-6, `esm` the ESM loss
(0.01, delta 1) instead, `dsm` the shared spectral masking. AdamW 5e-5 (0.9, 0.999), weight decay
0.005, clip 1.0. LPIPS weights: downloaded and cached on first use, or
--config.autoencoder.lpips_weights=lpips_vgg.npz from launch/convert_lpips.py.
"""

from configs import common


def get_config(arg=None):
    c = common.autoencoder_config(
        name="sm_celeba256",
        dataset="celeb_a_hq/256",
        resolution=256,
        size="ldm_f16d16",
        batch_size=48,
        total_steps=500_000,
        recipe="sdvae",
        prepare_hint=(
            "CelebA-HQ 256: tfds builds celeb_a_hq/256 from the manually downloaded files (see "
            "the tfds catalog), or python launch/prepare_data.py --input=celebahq256/ "
            "--output=data/celebahq256 --resolution=256 and --config.dataset.name=data/celebahq256"
        ),
    )
    return common.apply_autoencoder_variant(c, arg)

"""Quickstart for the autoencoder family (Spectrum Matching) on a laptop CPU: the built-in shapes.

    python launch/train.py --config=configs/autoencoder_quickstart.py --workdir=runs/ae_quickstart
    python launch/train.py --config=configs/autoencoder_quickstart.py:esm --workdir=runs/ae_esm
    python launch/train.py --config=configs/autoencoder_quickstart.py:dsm --workdir=runs/ae_dsm
    python launch/sample.py --workdir=runs/ae_quickstart --reconstruct=some_images/ --out=rec.png

32x32 images to 8x8x4 latents (factor 4: ch 16, ch_mult (1, 2, 2), one residual block per level,
attention at the lowest level), trained offline with L1 + KL 1e-6 (`sdvae` without LPIPS and GAN:
their VGG weights cannot be downloaded offline; `:gan` turns the PatchGAN on from step 1,000),
AdamW lr 2e-4 (the reference's 5e-5 is for 500k steps), batch 16, 3,000 steps. Held-out
reconstruction PSNR and the latents' PSD slope are logged every 1,000 steps. Convolutions at full
resolution are what a CPU is slowest at: ch 32 at batch 32 runs ~1.1 steps/s on 2 cores.
"""

from configs import common


def get_config(arg=None):
    c = common.autoencoder_config(
        name="autoencoder_quickstart",
        dataset="synthetic",
        resolution=32,
        size="T",
        batch_size=16,
        total_steps=3000,
        recipe="sdvae",
    )
    c.dataset.num_examples = 50_000
    c.model_kwargs = dict(size="T", ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4)
    c.autoencoder.lpips_weight = 0.0
    c.autoencoder.gan.update(enabled=False, start=1000, ndf=32, n_layers=2)
    c.optim.lr = 2e-4
    c.log_every = 100
    c.checkpoint_every = 1000
    c.eval.update(every=1000, num_images=256, batch_size=64)
    return common.apply_autoencoder_variant(c, arg)

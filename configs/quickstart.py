"""Quickstart: a small DCTdiff on the built-in synthetic shapes, trained on a laptop CPU.

    python launch/train.py --config=configs/quickstart.py --workdir=runs/quickstart

32x32 images, B=4, low_freqs=8 (16 tokens of 48 features), a tiny DiT, eta, EBFR weights and the
SNR scale from configs/stats/synthetic32_b4.json, written by
    python launch/dct_stats.py --data=synthetic --resolution=32 --block_size=4 --low_freqs=16 \
        --num_images=5000 --choices --choices_num_images=5000 \
        --output=configs/stats/synthetic32_b4.json
snr_scale='rule': c = 5.40 at low_freqs 8, the variance-matching c of its --choices table (the
tokens get, averaged over dimensions, the SNR the pixel model has at c = 1; README "Choosing B,
low_freqs and c for your data"). On your data: run dct_stats with --choices and point `stats` at it.
Sample grids go to runs/quickstart/samples/ every 1000 steps: coloured blobs on gradient backgrounds
early, shapes by the end. Expected: about 5 minutes on 2 CPU cores (~10 steps/s).

Choices that differ from the paper's configs, for a model trained for minutes rather than days:
x0-prediction (a network that outputs x0 gives clean, smooth samples early in training; with
eps-prediction the near-zero-variance high frequencies stay noisy for thousands of steps), loss
weights 1/std of each token feature instead of EBFR (the high frequencies have ~1/500 of the DC
variance, so an x0 loss with EBFR weights leaves them untrained and the samples are smooth blobs;
1/variance sharpens edges but under-trains the DC, giving blocky backgrounds), the DiT backbone
(adaLN time conditioning learns the noise-level dependence faster than U-ViT's time token), Adam
beta1 0.9 and a short EMA. `:pixel` trains the pixel U-ViT instead, with patch 8 = 2B (16
tokens, the same number as the DCT model: equal compute) and the plain VP-SDE (c = 1).
"""

import os

from configs import common

STATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats", "synthetic32_b4.json")


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_quickstart",
        dataset="synthetic",
        resolution=32,
        block_size=4,
        low_freqs=8,
        stats=STATS,
        snr_scale="rule",
        size="T",
        batch_size=64,
        lr=1e-3,
        pixel_patch_size=8,
        total_steps=3000,
        seed=0,
    )
    c.dataset.num_examples = 50_000
    c.model = "dit"
    c.model_kwargs.update(embed_dim=128, depth=4, num_heads=4)
    c.diffusion.prediction = "x0"
    c.diffusion.loss_weighting = "inverse_std"
    c.optim.update(warmup_steps=100, b1=0.9, b2=0.999)
    c.ema_decay = 0.995
    c.input.worker_count = 2  # ~4,900 images/s from 2 workers vs ~640 consumed: 7.6x
    c.log_every = 50
    c.checkpoint_every = 1000
    c.sample_every = 1000
    c.sample.update(sampler="euler_ode", nfe=50, num=36)
    return common.apply_variant(c, arg)

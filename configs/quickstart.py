"""Quickstart: a small DCTdiff on the built-in synthetic shapes, trained on a laptop CPU.

    python launch/train.py --config=configs/quickstart.py --workdir=runs/quickstart

32x32 images, B=2, low_freqs=4 (64 tokens of 24 features), a small U-ViT, eta and EBFR weights
from configs/stats/synthetic32.json (written by
`python launch/dct_stats.py --data=synthetic --resolution=32 --block_size=2 --low_freqs=4
--num_images=5000 --output=configs/stats/synthetic32.json`). It writes sample grids to
runs/quickstart/samples/; the shapes (circles, squares, triangles, rings) become recognisable
within the run. Expected: a few minutes on 2 CPU cores. `:pixel` trains the pixel U-ViT instead.
"""

import os

from configs import common

STATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats", "synthetic32.json")


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_quickstart",
        dataset="synthetic",
        resolution=32,
        block_size=2,
        low_freqs=4,
        stats=STATS,
        snr_scale=2.0,
        size="XS",
        batch_size=64,
        lr=1e-3,
        pixel_patch_size=4,
        total_steps=1500,
        seed=0,
    )
    c.dataset.num_examples = 50_000
    c.model_kwargs.update(embed_dim=128, depth=6, num_heads=4)
    c.optim.warmup_steps = 100
    c.optim.b2 = 0.999
    c.ema_decay = 0.995
    c.input.worker_count = 0
    c.log_every = 50
    c.checkpoint_every = 500
    c.sample_every = 500
    c.sample.update(sampler="euler_ode", nfe=50, num=36)
    return common.apply_variant(c, arg)

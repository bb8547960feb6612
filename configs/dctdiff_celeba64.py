"""DCTdiff on celeb_a at 64x64: B=2, low_freqs=4 (24 features per token), U-ViT-S, SNR scale c=4.0.

Reproduces 3561c1e configs/celeba64_uvit_small_2by2.py.
Paper / reference FID: 1.85 (DPM-Solver, 50 NFE, FID-50k @225k). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_celeba64.py --workdir=runs/dctdiff_celeba64
    python launch/train.py --config=configs/dctdiff_celeba64.py:pixel --workdir=runs/uvit_pixel_celeba64
    python launch/train.py --config=configs/dctdiff_celeba64.py:runlocal --workdir=/tmp/dctdiff_celeba64_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('celeba64'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_celeba64",
        dataset="celeb_a",
        resolution=64,
        block_size=2,
        low_freqs=4,
        stats="celeba64",
        snr_scale=4.0,
        size="S",
        batch_size=256,
        lr=0.0002,
        pixel_patch_size=4,
        num_classes=0,
        seed=123456,
        prepare_hint="",
    )
    c.sample.nfe = 50
    return common.apply_variant(c, arg)

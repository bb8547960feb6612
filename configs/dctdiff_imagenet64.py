"""DCTdiff on imagenet_resized/64x64 at 64x64: B=2, low_freqs=4 (24 features per token), U-ViT-S, SNR scale c=4.0.

Reproduces 3561c1e configs/imgnet64_uvit_small_2by2.py.
Paper / reference FID: 9.93 (DPM-Solver, 50 NFE, FID-50k @475k). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_imagenet64.py --workdir=runs/dctdiff_imagenet64
    python launch/train.py --config=configs/dctdiff_imagenet64.py:pixel --workdir=runs/uvit_pixel_imagenet64
    python launch/train.py --config=configs/dctdiff_imagenet64.py:runlocal --workdir=/tmp/dctdiff_imagenet64_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('imagenet64'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_imagenet64",
        dataset="imagenet_resized/64x64",
        resolution=64,
        block_size=2,
        low_freqs=4,
        stats="imagenet64",
        snr_scale=4.0,
        size="S",
        batch_size=1024,
        lr=0.0003,
        pixel_patch_size=4,
        num_classes=1000,
        seed=123456,
        prepare_hint="",
    )
    c.sample.nfe = 50
    return common.apply_variant(c, arg)

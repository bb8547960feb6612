"""DCTdiff on cifar10 at 32x32: B=2, low_freqs=4 (24 features per token), U-ViT-M, SNR scale c=2.0.

Reproduces 3561c1e configs/cifar10_uvit_mid_2by2.py (c = 2; the later variants use c = 4).
Paper / reference FID: 5.54 (DPM-Solver, 50 NFE, FID-50k @175k). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_cifar10.py --workdir=runs/dctdiff_cifar10
    python launch/train.py --config=configs/dctdiff_cifar10.py:pixel --workdir=runs/uvit_pixel_cifar10
    python launch/train.py --config=configs/dctdiff_cifar10.py:runlocal --workdir=/tmp/dctdiff_cifar10_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('cifar10'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_cifar10",
        dataset="cifar10",
        resolution=32,
        block_size=2,
        low_freqs=4,
        stats="cifar10",
        snr_scale=2.0,
        size="M",
        batch_size=256,
        lr=0.0002,
        pixel_patch_size=4,
        num_classes=0,
        seed=1234,
        prepare_hint="",
    )
    c.sample.nfe = 50
    return common.apply_variant(c, arg)

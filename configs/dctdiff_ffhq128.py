"""DCTdiff on data/ffhq128 at 128x128: B=4, low_freqs=9 (54 features per token), U-ViT-S, SNR scale c=3.0.

Reproduces 3561c1e configs/ffhq128_uvit_small_4by4.py (c = 3; the later variants use c = 4).
Paper / reference FID: 6.46 (DPM-Solver, 50 NFE, FID-50k @300k). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_ffhq128.py --workdir=runs/dctdiff_ffhq128
    python launch/train.py --config=configs/dctdiff_ffhq128.py:pixel --workdir=runs/uvit_pixel_ffhq128
    python launch/train.py --config=configs/dctdiff_ffhq128.py:runlocal --workdir=/tmp/dctdiff_ffhq128_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('ffhq128'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_ffhq128",
        dataset="./data/ffhq128",
        resolution=128,
        block_size=4,
        low_freqs=9,
        stats="ffhq128",
        snr_scale=3.0,
        size="S",
        batch_size=256,
        lr=0.0002,
        pixel_patch_size=8,
        num_classes=0,
        seed=1234,
        prepare_hint="FFHQ: download the images (github.com/NVlabs/ffhq-dataset), then python launch/prepare_data.py --input=ffhq/images1024x1024 --output=data/ffhq128 --resolution=128",
    )
    c.sample.nfe = 50
    return common.apply_variant(c, arg)

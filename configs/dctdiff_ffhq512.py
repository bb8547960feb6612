"""DCTdiff on data/ffhq512 at 512x512: B=8, low_freqs=18 (108 features per token), U-ViT-M, SNR scale c=12.0.

Reproduces ebd58b4 configs/ffhq512_uvit_mid_8by8.py.
Paper / reference FID: 7.07 (poster, 100 NFE). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_ffhq512.py --workdir=runs/dctdiff_ffhq512
    python launch/train.py --config=configs/dctdiff_ffhq512.py:pixel --workdir=runs/uvit_pixel_ffhq512
    python launch/train.py --config=configs/dctdiff_ffhq512.py:runlocal --workdir=/tmp/dctdiff_ffhq512_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('ffhq512'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_ffhq512",
        dataset="./data/ffhq512",
        resolution=512,
        block_size=8,
        low_freqs=18,
        stats="ffhq512",
        snr_scale=12.0,
        size="M",
        batch_size=128,
        lr=0.0001,
        pixel_patch_size=16,
        num_classes=0,
        seed=1234,
        prepare_hint="FFHQ: download the images (github.com/NVlabs/ffhq-dataset), then python launch/prepare_data.py --input=ffhq/images1024x1024 --output=data/ffhq512 --resolution=512",
    )
    c.sample.nfe = 100
    return common.apply_variant(c, arg)

"""DCTdiff on data/afhq512 at 512x512: B=8, low_freqs=18 (108 features per token), U-ViT-M, SNR scale c=12.0.

Reproduces ebd58b4 configs/afhq512_uvit_mid_8by8.py.
Paper / reference FID: 8.76 (poster, 100 NFE). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_afhq512.py --workdir=runs/dctdiff_afhq512
    python launch/train.py --config=configs/dctdiff_afhq512.py:pixel --workdir=runs/uvit_pixel_afhq512
    python launch/train.py --config=configs/dctdiff_afhq512.py:runlocal --workdir=/tmp/dctdiff_afhq512_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('afhq512'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_afhq512",
        dataset="./data/afhq512",
        resolution=512,
        block_size=8,
        low_freqs=18,
        stats="afhq512",
        snr_scale=12.0,
        size="M",
        batch_size=128,
        lr=0.0001,
        pixel_patch_size=16,
        num_classes=0,
        seed=1234,
        prepare_hint="AFHQ: download AFHQ (github.com/clovaai/stargan-v2, afhq.zip), then python launch/prepare_data.py --input=afhq/train --output=data/afhq512 --resolution=512",
    )
    c.sample.nfe = 100
    return common.apply_variant(c, arg)

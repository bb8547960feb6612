"""DCTdiff on data/ffhq256 at 256x256: B=4, low_freqs=8 (48 features per token), U-ViT-M, SNR scale c=1.0.

Reproduces 3561c1e configs/ffhq256_uvit_mid_4by4.py.
Paper / reference FID: 5.62 (DPM-Solver, 50 NFE, FID-50k @200k). Pixel-space baseline: the `pixel` variant.

    python launch/train.py --config=configs/dctdiff_ffhq256.py --workdir=runs/dctdiff_ffhq256
    python launch/train.py --config=configs/dctdiff_ffhq256.py:pixel --workdir=runs/uvit_pixel_ffhq256
    python launch/train.py --config=configs/dctdiff_ffhq256.py:runlocal --workdir=/tmp/dctdiff_ffhq256_smoke

eta and the entropy (EBFR) vectors are the reference values shipped in
dctjax/data/reference_stats.py ('ffhq256'); recompute with launch/dct_stats.py for other data.
"""

from configs import common


def get_config(arg=None):
    c = common.dctdiff_config(
        name="dctdiff_ffhq256",
        dataset="./data/ffhq256",
        resolution=256,
        block_size=4,
        low_freqs=8,
        stats="ffhq256",
        snr_scale=1.0,
        size="M",
        batch_size=256,
        lr=0.0002,
        pixel_patch_size=8,
        num_classes=0,
        seed=1234,
        prepare_hint="FFHQ: download the images (github.com/NVlabs/ffhq-dataset), then python launch/prepare_data.py --input=ffhq/images1024x1024 --output=data/ffhq256 --resolution=256",
    )
    c.sample.nfe = 50
    return common.apply_variant(c, arg)

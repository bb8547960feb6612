"""DCTransformer on FFHQ, 1024 px: the "ffhq" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_ffhq.py --workdir=runs/dctransformer_ffhq
    python launch/train.py --config=configs/dctransformer_ffhq.py:runlocal --workdir=/tmp/dctransformer_ffhq_smoke
    python launch/train.py --config=configs/dctransformer_ffhq.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=./data/ffhq1024 --resolution=1024 --quality=35 \
        --sparse_block_size=16 --clip=3200 --output=stats.json  # L_max: sparse.max_length

Codec: 16x16 blocks (64x64 luma grid), quality 35, values clipped to +-3200. Model
'ffhq' (hidden 896, the PAR specs and DCT-image downsampling of Table 3), dropout 0.1,
batch 448, 2e+11 target tokens (>= 622,807 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Unconditional.

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_ffhq",
        dataset="./data/ffhq1024",
        column="ffhq",
        prepare_hint="FFHQ: download the 1024x1024 images (github.com/NVlabs/ffhq-dataset), then python launch/prepare_data.py --input=ffhq/images1024x1024 --output=data/ffhq1024 --resolution=1024",
    )
    return common.apply_dctransformer_variant(c, arg)

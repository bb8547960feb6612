"""DCTransformer on LSUN bedrooms (also towers, churches), 384 px: the "lsun" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_lsun.py --workdir=runs/dctransformer_lsun
    python launch/train.py --config=configs/dctransformer_lsun.py:runlocal --workdir=/tmp/dctransformer_lsun_smoke
    python launch/train.py --config=configs/dctransformer_lsun.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=lsun/bedroom --resolution=384 --quality=75 \
        --sparse_block_size=8 --clip=1200 --output=stats.json  # L_max: sparse.max_length

Codec: 8x8 blocks (48x48 luma grid), quality 75, values clipped to +-1200. Model
'lsun' (hidden 896, the PAR specs and DCT-image downsampling of Table 3), dropout 0.1,
batch 512, 3e+11 target tokens (>= 653,948 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Unconditional.

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_lsun",
        dataset="lsun/bedroom",
        column="lsun",
    )
    return common.apply_dctransformer_variant(c, arg)

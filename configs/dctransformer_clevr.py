"""DCTransformer on CLEVR, 480 px: the "clevr" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_clevr.py --workdir=runs/dctransformer_clevr
    python launch/train.py --config=configs/dctransformer_clevr.py:runlocal --workdir=/tmp/dctransformer_clevr_smoke
    python launch/train.py --config=configs/dctransformer_clevr.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=clevr --resolution=480 --quality=90 \
        --sparse_block_size=8 --clip=1200 --output=stats.json  # L_max: sparse.max_length

Codec: 8x8 blocks (60x60 luma grid), quality 90, values clipped to +-1200. Model
'clevr' (hidden 896, the PAR specs and DCT-image downsampling of Table 3), dropout 0.5,
batch 128, 5e+10 target tokens (>= 435,965 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Unconditional.

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_clevr",
        dataset="clevr",
        column="clevr",
    )
    return common.apply_dctransformer_variant(c, arg)

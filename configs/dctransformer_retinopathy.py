"""DCTransformer on Diabetic retinopathy, 1024 px: the "retinopathy" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_retinopathy.py --workdir=runs/dctransformer_retinopathy
    python launch/train.py --config=configs/dctransformer_retinopathy.py:runlocal --workdir=/tmp/dctransformer_retinopathy_smoke
    python launch/train.py --config=configs/dctransformer_retinopathy.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=diabetic_retinopathy_detection --resolution=1024 --quality=75 \
        --sparse_block_size=16 --clip=3200 --output=stats.json  # L_max: sparse.max_length

Codec: 16x16 blocks (64x64 luma grid), quality 75, values clipped to +-3200. Model
'retinopathy' (hidden 768, the PAR specs and DCT-image downsampling of Table 3), dropout 0.1,
batch 512, 2e+11 target tokens (>= 435,965 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Unconditional.

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_retinopathy",
        dataset="diabetic_retinopathy_detection",
        column="retinopathy",
    )
    return common.apply_dctransformer_variant(c, arg)

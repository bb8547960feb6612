"""DCTransformer on Plant leaves, 2048 px: the "plant_leaves" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_plant_leaves.py --workdir=runs/dctransformer_plant_leaves
    python launch/train.py --config=configs/dctransformer_plant_leaves.py:runlocal --workdir=/tmp/dctransformer_plant_leaves_smoke
    python launch/train.py --config=configs/dctransformer_plant_leaves.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=plant_leaves --resolution=2048 --quality=50 \
        --sparse_block_size=32 --clip=4000 --output=stats.json  # L_max: sparse.max_length

Codec: 32x32 blocks (64x64 luma grid), quality 50, values clipped to +-4000. Model
'plant_leaves' (hidden 768, the PAR specs and DCT-image downsampling of Table 3), dropout 0.4,
batch 256, 1e+11 target tokens (>= 435,965 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Unconditional.

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_plant_leaves",
        dataset="plant_leaves",
        column="plant_leaves",
    )
    return common.apply_dctransformer_variant(c, arg)

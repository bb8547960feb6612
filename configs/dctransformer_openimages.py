"""DCTransformer on OpenImages V4 (colorization), 640 px: the "openimages" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_openimages.py --workdir=runs/dctransformer_openimages
    python launch/train.py --config=configs/dctransformer_openimages.py:runlocal --workdir=/tmp/dctransformer_openimages_smoke
    python launch/train.py --config=configs/dctransformer_openimages.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=open_images_v4 --resolution=640 --quality=50 \
        --sparse_block_size=8 --clip=1200 --output=stats.json  # L_max: sparse.max_length

Codec: 8x8 blocks (80x80 luma grid), quality 50, values clipped to +-1200. Model
'openimages' (hidden 896, the PAR specs and DCT-image downsampling of Table 3), dropout 0.01,
batch 512, 1e+12 target tokens (>= 2,179,827 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay.

Colorization: sequences in order='luma_first'; training targets only the chunks of the chroma
part (the encoder sees all luma and the earlier chroma; no length filtering), so at test time the Y
elements of a greyscale image are the prefix and the chroma is sampled (spec §6.2).

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_openimages",
        dataset="open_images_v4",
        column="openimages",
        colorization=True,
    )
    return common.apply_dctransformer_variant(c, arg)

"""DCTransformer on ImageNet (class-conditional), 384 px: the "imagenet" column of [003] Table 3 (spec dctransformer.md §7).

    python launch/train.py --config=configs/dctransformer_imagenet.py --workdir=runs/dctransformer_imagenet
    python launch/train.py --config=configs/dctransformer_imagenet.py:runlocal --workdir=/tmp/dctransformer_imagenet_smoke
    python launch/train.py --config=configs/dctransformer_imagenet.py --workdir=/tmp/x --compile_only
    python launch/dct_stats.py --data=imagenet2012 --resolution=384 --quality=75 \
        --sparse_block_size=8 --clip=1200 --output=stats.json  # L_max: sparse.max_length

Codec: 8x8 blocks (48x48 luma grid), quality 75, values clipped to +-1200. Model
'imagenet' (hidden 1152, the PAR specs and DCT-image downsampling of Table 3), dropout 0.01,
batch 512, 1e+12 target tokens (>= 2,179,827 steps of 896 targets), Adam with a
1,000-step warm-up to 5e-4 then cosine decay. Class-conditional (a learned class embedding on every encoder token and on E_channel). The same
model does 8x upsampling without extra training: the first DCT channel of Y, Cb and Cr is the
context (spec §6.1).

Length filtering keeps an image with probability min(L'/L_max, 1); [003] does not give L_max. Set
it to the 95th percentile of the training lengths (`sparse.max_length` in dct_stats' JSON):
`--config.representation_kwargs.max_length=...` (None, the default here, trains without filtering).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_imagenet",
        dataset="imagenet2012",
        column="imagenet",
        num_classes=1000,
    )
    return common.apply_dctransformer_variant(c, arg)

"""Pure, jit- and vmap-able DCT codec ops (batch-first NHWC). No state, no I/O.

Modules: `color` (JFIF YCbCr, 4:2:0), `dct` (DCT-II matrices, blocks, zigzag), `quant` (IJG
tables), `tokens` (DCTdiff tokens), `sparse` (DCTransformer sequences), `spectral` (RAPSD,
Spectral Forcing, DSM masks, DCT upsampling).
"""

from dctjax.codec import color, dct, quant, sparse, spectral, tokens
from dctjax.codec.color import (
    chroma_downsample,
    chroma_upsample,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from dctjax.codec.dct import (
    block_dct,
    block_idct,
    blockify,
    dct_matrix,
    from_zigzag,
    inverse_zigzag_order,
    to_zigzag,
    unblockify,
    zigzag_order,
)
from dctjax.codec.quant import dequantize, quant_table, quantize, round_half_away
from dctjax.codec.sparse import (
    SparseSequence,
    dct_image_to_images,
    dct_image_to_sequence,
    images_to_dct_image,
    images_to_sequence,
    sequence_to_dct_image,
    sequence_to_images,
)
from dctjax.codec.spectral import (
    antidiagonal_mask,
    dct_upsample,
    dsm_lowpass,
    rapsd,
    sf_mask,
    spectral_forcing,
    windowed_dct,
    windowed_idct,
)
from dctjax.codec.tokens import (
    images_to_planes,
    images_to_tokens,
    planes_to_images,
    planes_to_tokens,
    token_dim,
    token_grid,
    tokens_to_images,
    tokens_to_planes,
)

__all__ = [
    "SparseSequence",
    "antidiagonal_mask",
    "block_dct",
    "block_idct",
    "blockify",
    "chroma_downsample",
    "chroma_upsample",
    "color",
    "dct",
    "dct_image_to_images",
    "dct_image_to_sequence",
    "dct_matrix",
    "dct_upsample",
    "dequantize",
    "dsm_lowpass",
    "from_zigzag",
    "images_to_dct_image",
    "images_to_planes",
    "images_to_sequence",
    "images_to_tokens",
    "inverse_zigzag_order",
    "planes_to_images",
    "planes_to_tokens",
    "quant",
    "quant_table",
    "quantize",
    "rapsd",
    "rgb_to_ycbcr",
    "round_half_away",
    "sequence_to_dct_image",
    "sequence_to_images",
    "sf_mask",
    "sparse",
    "spectral",
    "spectral_forcing",
    "to_zigzag",
    "token_dim",
    "token_grid",
    "tokens",
    "tokens_to_images",
    "tokens_to_planes",
    "unblockify",
    "windowed_dct",
    "windowed_idct",
    "ycbcr_to_rgb",
    "zigzag_order",
]

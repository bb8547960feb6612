"""Pure, jit- and vmap-able DCT codec ops (batch-first NHWC). No state, no I/O."""

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

__all__ = [
    "block_dct",
    "block_idct",
    "blockify",
    "chroma_downsample",
    "chroma_upsample",
    "dct_matrix",
    "dequantize",
    "from_zigzag",
    "inverse_zigzag_order",
    "quant_table",
    "quantize",
    "rgb_to_ycbcr",
    "round_half_away",
    "to_zigzag",
    "unblockify",
    "ycbcr_to_rgb",
    "zigzag_order",
]

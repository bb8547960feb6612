"""A codec demo: round-trip synthetic images through both DCT representations and write a PNG.

Rows of the output grid: originals, DCTdiff tokens (encode -> decode), DCTransformer sparse
sequences (encode -> decode). Used by `launch/codec_demo.py`.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from PIL import Image

from dctjax.codec import sparse, tokens
from dctjax.data.stats import exact_dct_stats
from dctjax.data.synthetic import SyntheticShapes
from dctjax.sampling import image_grid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def codec_demo(
    out_path: str,
    resolution: int = 128,
    num_images: int = 8,
    block_size: int = 4,
    low_freqs: int = 9,
    sparse_block_size: int = 8,
    quality: int = 75,
    clip: int = 1200,
    seed: int = 0,
) -> dict:
    """Round-trips `num_images` synthetic images and writes the comparison grid to `out_path`.

    eta is measured on the same images with the spec's definition. Returns the figures it prints.
    """
    src = SyntheticShapes(resolution, num_examples=num_images, seed=seed)
    images = np.stack([src[i]["image"] for i in range(num_images)])
    eta = exact_dct_stats(images, block_size).eta

    enc = jax.jit(
        functools.partial(
            tokens.images_to_tokens, block_size=block_size, low_freqs=low_freqs, eta=eta
        )
    )
    dec = jax.jit(
        functools.partial(
            tokens.tokens_to_images, block_size=block_size, low_freqs=low_freqs, eta=eta
        )
    )
    tok = enc(images)
    from_tokens = np.asarray(dec(tok))

    grid = (resolution // sparse_block_size,) * 2
    max_len = sparse.max_sequence_length(grid, sparse_block_size)
    seq = sparse.images_to_sequence(
        images, block_size=sparse_block_size, quality=quality, clip=clip, max_len=max_len
    )
    from_sparse = np.asarray(
        sparse.sequence_to_images(
            seq, block_size=sparse_block_size, quality=quality, grid_shape=grid
        )
    )
    rows = np.concatenate([images, from_tokens, from_sparse])
    Image.fromarray(image_grid(rows, cols=len(images))).save(out_path)
    figures = dict(
        eta=eta,
        tokens_shape=tuple(tok.shape),
        tokens_psnr_db=psnr(images, from_tokens),
        tokens_compression=2 * block_size**2 / low_freqs,
        sparse_mean_length=float(np.mean(np.asarray(seq.length))),
        sparse_psnr_db=psnr(images, from_sparse),
        out_path=out_path,
    )
    return figures

"""Dataset-level DCT statistics for configs: stream a source, reduce, write JSON.

What `launch/dct_stats.py` runs. Like the reference, it draws `num_images` random training images
(no flip) and pools their block-DCT coefficients: eta, the Y/Cb/Cr entropy vectors and the EBFR
weights for DCTdiff (`dctjax.data.stats`), and, when a JPEG quality is given, the distribution of
DCTransformer sparse sequence lengths L' (non-zeros + STOP), whose 95th percentile is the default
L_max for sequence-length filtering.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks, sparse
from dctjax.data import stats as dct_stats

LENGTH_PERCENTILES = (50, 90, 95, 99)


def random_subset(source, num_images: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of up to `num_images` images of `source` drawn without replacement."""
    if len(source) == 0:
        raise ValueError(f"the source {source!r} is empty; check the dataset and split.")
    n = min(num_images, len(source))
    return np.sort(np.random.default_rng(seed).permutation(len(source))[:n])


def image_batches(source, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 (n, H, W, 3) batches of the images of `source` at `indices`, in order."""
    for start in range(0, len(indices), batch_size):
        items = source.__getitems__([int(i) for i in indices[start : start + batch_size]])
        yield np.stack([item["image"] for item in items])


@functools.partial(jax.jit, static_argnames=("block_size", "quality", "clip"))
def _sparse_lengths(images: jax.Array, block_size: int, quality: int, clip: int) -> jax.Array:
    dense = sparse.images_to_dct_image(images, block_size, quality, clip)
    return jnp.count_nonzero(dense, axis=(1, 2, 3)) + 1


def dataset_statistics(
    source,
    block_size: int,
    low_freqs: int,
    *,
    num_images: int = 50_000,
    batch_size: int = 256,
    seed: int = 0,
    quality: int | None = None,
    sparse_block_size: int = 8,
    clip: int = 1200,
    name: str = "",
) -> dict[str, Any]:
    """Statistics of up to `num_images` random images of `source` (items {'image': uint8 HxWx3}).

    Returns a JSON-ready dict with the fields `dctjax.data.reference_stats.load_stats` reads
    (block_size, low_freqs, eta, entropy_y/cb/cr) plus ebfr_weights, counts and, with `quality`,
    a 'sparse' entry: length mean/min/max/percentiles, a histogram and max_length (P95).
    """
    b = _checks.check_block_size(block_size)
    _checks.check_int_range(low_freqs, "low_freqs", 1, b * b)
    _checks.check_int_range(num_images, "num_images", 1, 1 << 40)
    _checks.check_int_range(batch_size, "batch_size", 1, 1 << 20)
    if quality is not None:
        _checks.check_int_range(quality, "quality", 1, 100)
        _checks.check_block_size(sparse_block_size, "sparse_block_size")
        _checks.check_int_range(clip, "clip", 1, 1 << 20)
    indices = random_subset(source, num_images, seed)
    n = len(indices)

    lengths = []

    def images_with_lengths():
        for images in image_batches(source, indices, batch_size):
            if quality is not None:
                lengths.append(
                    np.asarray(_sparse_lengths(images, sparse_block_size, quality, clip))
                )
            yield images

    result = dct_stats.dct_stats_from_batches(images_with_lengths(), b)
    out: dict[str, Any] = dict(
        source=name,
        num_images=n,
        block_size=b,
        low_freqs=low_freqs,
        eta=result.eta,
        entropy_y=result.entropy_y.tolist(),
        entropy_cb=result.entropy_cb.tolist(),
        entropy_cr=result.entropy_cr.tolist(),
        ebfr_weights=np.round(result.ebfr_weights(low_freqs).astype(np.float64), 6).tolist(),
        num_blocks_y=result.num_blocks_y,
        num_blocks_chroma=result.num_blocks_chroma,
    )
    if quality is not None:
        out["sparse"] = length_summary(np.concatenate(lengths), sparse_block_size, quality, clip)
    return out


def length_summary(lengths: np.ndarray, block_size: int, quality: int, clip: int) -> dict:
    """Summary of sparse sequence lengths L' (non-zeros + STOP)."""
    lengths = np.asarray(lengths, np.int64)
    pct = {str(p): float(np.percentile(lengths, p)) for p in LENGTH_PERCENTILES}
    counts, edges = np.histogram(lengths, bins=min(50, max(1, len(np.unique(lengths)))))
    return dict(
        block_size=block_size,
        quality=quality,
        clip=clip,
        mean=float(lengths.mean()),
        min=int(lengths.min()),
        max=int(lengths.max()),
        percentiles=pct,
        max_length=int(np.ceil(pct["95"])),
        histogram=dict(edges=edges.tolist(), counts=counts.tolist()),
    )


def write_json(stats: dict, path: str | os.PathLike) -> None:
    """Writes atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=2)
    os.replace(tmp, path)

"""Input validation shared by the codec. Every check runs on static shapes and dtypes, so a bad input
raises a `ValueError` that names the parameter at trace time, before XLA sees anything."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_SIZES = (2, 4, 8, 16, 32)


def check_block_size(block_size: int, name: str = "block_size") -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise ValueError(f"{name} must be an int in {BLOCK_SIZES}, got {block_size!r}.")
    if int(block_size) not in BLOCK_SIZES:
        raise ValueError(f"{name}={block_size} is not supported; use one of {BLOCK_SIZES}.")
    return int(block_size)


def check_int_range(value: int, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}.")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name}={value} is out of range; valid values are {lo}..{hi}.")
    return int(value)


def check_positive(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return v


def check_rank(x, rank: int, name: str, layout: str) -> None:
    if np.ndim(x) != rank:
        raise ValueError(
            f"{name} must have rank {rank} ({layout}), got shape {tuple(np.shape(x))}."
        )


def check_dtype(x, allowed: Sequence[str], name: str) -> None:
    dtype = np.dtype(x.dtype)
    kinds = {"floating": np.floating, "integer": np.integer}
    ok = any(
        np.issubdtype(dtype, kinds[a]) if a in kinds else dtype == np.dtype(a) for a in allowed
    )
    # bfloat16 is not a NumPy floating subtype.
    if not ok and "floating" in allowed and dtype.name == "bfloat16":
        ok = True
    if not ok:
        raise ValueError(f"{name} must have dtype in {list(allowed)}, got {dtype}.")


def check_images(images, name: str = "images", channels: int | None = 3, dtypes=("uint8",)) -> None:
    """Batch-first NHWC images."""
    check_rank(images, 4, name, "batch, height, width, channels")
    check_dtype(images, dtypes, name)
    if channels is not None and images.shape[-1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels in the last axis (NHWC), "
            f"got shape {tuple(images.shape)}."
        )


def check_divisible(height: int, width: int, multiple: int, what: str) -> None:
    if height % multiple or width % multiple:
        raise ValueError(
            f"image size {height}x{width} is not divisible by {multiple} ({what}); "
            f"crop or resize to a multiple of {multiple}."
        )

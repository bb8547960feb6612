"""The DCT statistics shipped with the DCTdiff reference configs (spec: dctdiff.md section 5 and
Appendix A), for parity. Recompute them for a new dataset with `launch/dct_stats.py`.

Entropy vectors are in bits, natural row-major order (B*B values per plane); the reference calls
them `Y_std`, `Cb_std`, `Cr_std`. eta is the reference's `Y_bound`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dctjax.data.stats import ebfr_weights


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """DCT statistics of one dataset, as a DCTdiff config uses them."""

    block_size: int
    low_freqs: int
    eta: float
    entropy_y: tuple[float, ...]
    entropy_cb: tuple[float, ...]
    entropy_cr: tuple[float, ...]
    source: str = ""

    def loss_weights(self, low_freqs: int | None = None) -> np.ndarray:
        """The EBFR weight vector (6L,) float32 for `low_freqs` (default: the config's L)."""
        return ebfr_weights(
            self.entropy_y,
            self.entropy_cb,
            self.entropy_cr,
            self.block_size,
            self.low_freqs if low_freqs is None else low_freqs,
        )

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)


def load_stats(path: str | os.PathLike) -> ReferenceStats:
    """Reads a statistics JSON written by `launch/dct_stats.py` (or `ReferenceStats.to_json`)."""
    with open(path) as f:
        return stats_from_dict(json.load(f), str(path))


def stats_from_dict(d: Mapping[str, Any], where: str = "the statistics") -> ReferenceStats:
    """A `ReferenceStats` from the dict of a statistics JSON (extra keys are ignored)."""
    missing = {"block_size", "low_freqs", "eta", "entropy_y", "entropy_cb", "entropy_cr"} - set(d)
    if missing:
        raise ValueError(
            f"{where} is not a DCT statistics file: missing {sorted(missing)}; write it with "
            "`python launch/dct_stats.py --data=... --block_size=B --low_freqs=L --output=...`."
        )
    fields = {f.name for f in dataclasses.fields(ReferenceStats)}
    d = {k: (tuple(v) if isinstance(v, list | tuple) else v) for k, v in d.items() if k in fields}
    return ReferenceStats(**d)


# fmt: off
REFERENCE_STATS: dict[str, ReferenceStats] = {
    "cifar10": ReferenceStats(
        block_size=2,
        low_freqs=4,
        eta=242.382,
        entropy_y=(
            6.471, 3.588, 3.767, 2.411
        ),
        entropy_cb=(
            4.308, 1.315, 1.487, 1.0
        ),
        entropy_cr=(
            4.014, 1.284, 1.435, 1.0
        ),
        source="CIFAR-10 32px, DCTdiff 3561c1e configs/cifar10_uvit_mid_2by2.py",
    ),
    "celeba64": ReferenceStats(
        block_size=2,
        low_freqs=4,
        eta=244.925,
        entropy_y=(
            6.507, 3.297, 3.063, 1.844
        ),
        entropy_cb=(
            4.013, 1.287, 1.06, 1.0
        ),
        entropy_cr=(
            4.239, 1.422, 1.204, 1.0
        ),
        source="CelebA-64 64px, DCTdiff 3561c1e configs/celeba64_uvit_small_2by2.py",
    ),
    "imagenet64": ReferenceStats(
        block_size=2,
        low_freqs=4,
        eta=247.125,
        entropy_y=(
            6.522, 3.377, 3.386, 2.389
        ),
        entropy_cb=(
            4.27, 1.329, 1.351, 0.988
        ),
        entropy_cr=(
            4.078, 1.292, 1.303, 0.987
        ),
        source="ImageNet-64 64px, DCTdiff 3561c1e configs/imgnet64_uvit_small_2by2.py",
    ),
    "ffhq128": ReferenceStats(
        block_size=4,
        low_freqs=9,
        eta=480.25,
        entropy_y=(
            6.53, 3.478, 2.196, 1.405, 3.378, 2.381, 1.765, 1.185, 2.072, 1.697, 1.291, 0.999,
            1.291, 1.083, 0.999, 0.999
        ),
        entropy_cb=(
            4.138, 1.741, 0.999, 0.998, 1.589, 0.998, 0.998, 0.998, 0.998, 0.998, 0.997, 0.998,
            0.997, 0.998, 0.998, 0.998
        ),
        entropy_cr=(
            4.391, 1.904, 0.998, 0.998, 1.758, 1.082, 0.998, 0.998, 0.999, 0.998, 0.998, 0.998, 1.0,
            0.998, 0.998, 0.998
        ),
        source="FFHQ-128 128px, DCTdiff 3561c1e configs/ffhq128_uvit_small_4by4.py",
    ),
    "ffhq256": ReferenceStats(
        block_size=4,
        low_freqs=8,
        eta=485.0,
        entropy_y=(
            6.543, 2.894, 1.769, 1.197, 2.8, 1.916, 1.458, 1.029, 1.647, 1.386, 1.106, 0.994, 1.107,
            0.996, 0.994, 0.996
        ),
        entropy_cb=(
            4.173, 1.392, 0.992, 0.989, 1.338, 0.991, 0.99, 0.991, 0.992, 0.992, 0.989, 0.991, 0.99,
            0.991, 0.991, 0.991
        ),
        entropy_cr=(
            4.417, 1.52, 0.993, 0.99, 1.473, 0.991, 0.99, 0.991, 0.993, 0.991, 0.989, 0.99, 0.997,
            0.991, 0.989, 0.991
        ),
        source="FFHQ-256 256px, DCTdiff 3561c1e configs/ffhq256_uvit_mid_4by4.py",
    ),
    "ffhq512": ReferenceStats(
        block_size=8,
        low_freqs=18,
        eta=969.5,
        entropy_y=(
            6.53, 2.866, 1.871, 1.368, 1.186, 1.252, 1.0, 0.996, 2.766, 1.865, 1.569, 1.366, 1.07,
            1.048, 0.996, 0.993, 1.742, 1.506, 1.265, 1.172, 1.311, 0.994, 0.996, 0.994, 1.334,
            1.108, 1.185, 0.993, 1.094, 0.993, 0.996, 0.993, 0.995, 1.086, 0.995, 1.026, 0.995,
            0.993, 0.995, 0.993, 0.996, 0.993, 0.996, 0.993, 0.996, 0.993, 0.996, 0.993, 0.994,
            0.994, 0.996, 0.994, 0.995, 0.994, 0.996, 0.994, 0.996, 0.993, 0.996, 0.993, 0.996,
            0.993, 0.996, 0.993
        ),
        entropy_cb=(
            4.167, 1.364, 1.001, 0.99, 0.999, 0.989, 0.999, 0.99, 1.303, 1.025, 0.993, 0.992, 0.992,
            0.992, 0.992, 0.992, 0.993, 0.996, 0.994, 0.998, 0.993, 0.998, 0.994, 0.995, 0.991,
            0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.994, 0.997, 0.993, 1.0, 0.991, 1.0,
            0.993, 0.997, 0.991, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.998,
            0.994, 1.0, 0.993, 1.0, 0.994, 0.998, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992,
            0.992
        ),
        entropy_cr=(
            4.403, 1.482, 1.07, 0.991, 0.998, 0.99, 0.998, 0.991, 1.445, 1.105, 0.993, 0.992, 0.992,
            0.992, 0.993, 0.992, 1.041, 0.995, 0.993, 0.997, 0.993, 0.998, 0.993, 0.994, 0.995,
            0.992, 0.993, 0.992, 0.992, 0.992, 0.992, 0.992, 0.995, 0.997, 0.993, 0.999, 0.993, 1.0,
            0.993, 0.997, 0.996, 0.992, 0.993, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992, 0.998,
            0.994, 0.999, 0.994, 1.0, 0.994, 0.997, 0.994, 0.992, 0.992, 0.992, 0.992, 0.992, 0.992,
            0.992
        ),
        source="FFHQ-512 512px, DCTdiff ebd58b4 configs/ffhq512_uvit_mid_8by8.py",
    ),
    "afhq512": ReferenceStats(
        block_size=8,
        low_freqs=18,
        eta=928.0,
        entropy_y=(
            6.524, 3.25, 2.206, 1.607, 1.368, 1.495, 1.173, 0.999, 3.218, 2.332, 1.931, 1.682,
            1.288, 1.277, 1.088, 0.997, 2.266, 1.974, 1.649, 1.449, 1.621, 1.257, 0.999, 0.998,
            1.758, 1.493, 1.533, 1.225, 1.42, 0.997, 0.999, 0.997, 1.326, 1.446, 1.684, 1.4, 1.19,
            0.998, 0.999, 0.998, 1.25, 1.068, 1.331, 1.198, 0.999, 0.997, 0.999, 0.997, 1.255, 1.12,
            0.999, 0.998, 0.999, 0.998, 0.999, 0.998, 0.999, 0.997, 0.999, 0.997, 0.999, 0.997,
            0.999, 0.997
        ),
        entropy_cb=(
            4.153, 1.415, 1.0, 0.99, 1.0, 0.989, 0.999, 0.991, 1.372, 1.091, 0.995, 0.994, 0.994,
            0.994, 0.995, 0.994, 0.996, 0.997, 0.996, 0.999, 0.995, 0.999, 0.995, 0.996, 0.995,
            0.994, 0.995, 0.994, 0.994, 0.994, 0.995, 0.994, 0.997, 0.998, 0.995, 1.0, 0.993, 1.0,
            0.995, 0.998, 0.995, 0.994, 0.995, 0.994, 0.994, 0.994, 0.994, 0.994, 0.995, 0.999,
            0.996, 1.0, 0.995, 1.0, 0.996, 0.999, 0.995, 0.994, 0.994, 0.994, 0.994, 0.994, 0.994,
            0.994
        ),
        entropy_cr=(
            3.906, 1.291, 0.999, 0.989, 0.998, 0.988, 0.998, 0.991, 1.246, 0.994, 0.995, 0.994,
            0.994, 0.994, 0.994, 0.994, 0.996, 0.997, 0.995, 0.999, 0.995, 0.999, 0.995, 0.997,
            0.996, 0.994, 0.995, 0.994, 0.994, 0.994, 0.994, 0.994, 0.996, 0.999, 0.995, 1.0, 0.995,
            1.0, 0.994, 0.999, 0.996, 0.994, 0.995, 0.994, 0.994, 0.994, 0.994, 0.994, 0.994, 0.999,
            0.996, 1.0, 0.996, 1.0, 0.996, 0.999, 0.995, 0.994, 0.994, 0.994, 0.994, 0.994, 0.994,
            0.994
        ),
        source="AFHQ-512 512px, DCTdiff ebd58b4 configs/afhq512_uvit_mid_8by8.py",
    ),
}
# fmt: on


def reference_stats(name: str) -> ReferenceStats:
    """The shipped statistics of a reference dataset by name."""
    if name not in REFERENCE_STATS:
        raise ValueError(
            f"no reference DCT statistics for {name!r}; known: {sorted(REFERENCE_STATS)}. "
            "Compute them with `python launch/dct_stats.py`."
        )
    return REFERENCE_STATS[name]

"""FID evaluation for training loops and launch scripts.

    extractor = dctjax.eval.inception.load_inception()
    ref = reference_from_source(make_source('cifar10', 'train'), extractor, jpeg_quality=75,
                                metadata=dict(dataset='cifar10', split='train'))
    fid = FidEvaluator(extractor, ref, num_samples=10_000, batch_size=100, jpeg_quality=95)
    metrics = fid.evaluate(lambda key, n: sample(params, key, n), jax.random.key(0))
    # {'fid': ..., 'sfid': ..., 'precision': ..., 'recall': ..., 'num_samples': 10000}

A feature function is any callable uint8 (N, H, W, 3) -> {'pool3': (N, d), ['spatial': (N, d')]};
tests pass small fakes.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from dctjax.eval import metrics
from dctjax.eval.metrics import FeatureFn, FIDReference

SampleFn = Callable[[jax.Array, int], Any]  # (key, num) -> uint8 (num, H, W, 3)


def check_resolution(reference: FIDReference, images: np.ndarray, what: str = "Samples") -> None:
    """ValueError unless the (N, H, W, 3) images have the reference's recorded resolution."""
    res = reference.resolution
    if res is None:
        return
    expected = (res, res) if isinstance(res, int) else tuple(res)
    got = tuple(images.shape[1:3])
    if got != expected:
        raise ValueError(
            f"{what} are {got[0]}x{got[1]} but the reference statistics "
            f"({reference.metadata.get('dataset', reference.metadata.get('source', '?'))}) were "
            f"computed at {expected[0]}x{expected[1]}; recompute them with --resolution="
            f"{got[0]} or evaluate samples at the reference resolution."
        )


def _resolution(shape: tuple[int, ...]) -> int | list[int]:
    return int(shape[0]) if shape[0] == shape[1] else [int(shape[0]), int(shape[1])]


def source_batches(source: Any, num: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 (n, H, W, 3) image batches of source[0:num] in index order; the next batch is read
    in a background thread while the caller computes on the current one."""

    def load(start: int) -> np.ndarray:
        indices = list(range(start, min(start + batch_size, num)))
        if hasattr(source, "__getitems__"):
            items = source.__getitems__(indices)
        else:
            items = [source[i] for i in indices]
        images = [np.asarray(item["image"]) for item in items]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(
                f"Images {start}..{start + len(images) - 1} have different shapes {sorted(shapes)}"
                "; set a resolution so the source resizes them."
            )
        return np.stack(images)

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        future = ex.submit(load, 0) if num > 0 else None
        for start in range(0, num, batch_size):
            batch = future.result()
            if start + batch_size < num:
                future = ex.submit(load, start + batch_size)
            yield batch


def reference_from_source(
    source: Any,
    feature_fn: FeatureFn,
    *,
    num: int | None = None,
    batch_size: int = 100,
    jpeg_quality: int | None = None,
    max_keep: int = 50_000,
    metadata: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> FIDReference:
    """Reference statistics of the first `num` images (None: all) of a random-access source of
    {'image': uint8 (H, W, 3), ...} examples, read in index order.

    jpeg_quality mimics data stored as JPEG (e.g. 75 for the reference's CIFAR-10); max_keep pool3
    rows (a uniform random subset) are kept for precision/recall. The metadata records the given
    fields (dataset, split, ...) plus source, num, resolution and jpeg_quality.
    """
    total = len(source)
    num = total if num is None else int(num)
    if not 0 < num <= total:
        raise ValueError(f"num must be in [1, {total}] for this source, got {num}.")
    shapes: list[tuple[int, ...]] = []

    def batches() -> Iterator[np.ndarray]:
        for batch in source_batches(source, num, batch_size):
            if shapes and batch.shape[1:] != shapes[0]:
                raise ValueError(
                    f"Image shape {batch.shape[1:]} differs from the first {shapes[0]}; set a "
                    "resolution so the source resizes them."
                )
            shapes.append(batch.shape[1:])
            yield batch

    stats = metrics.compute_feature_stats(
        batches(), feature_fn, jpeg_quality=jpeg_quality, max_keep=max_keep, seed=seed
    )
    meta: dict[str, Any] = {"source": repr(source), **(metadata or {})}
    meta.update(
        num=next(iter(stats.values())).count,
        resolution=_resolution(shapes[0]),
        jpeg_quality=jpeg_quality,
        feature_dims={name: s.dim for name, s in stats.items()},
    )
    return FIDReference.from_feature_stats(stats, meta)


class FidEvaluator:
    """FID / sFID / precision / recall of a sampler against fixed reference statistics.

    Args:
      feature_fn: uint8 (N, H, W, 3) -> {'pool3': (N, d), ['spatial': (N, d')]}.
      reference: FIDReference or the path of a reference .npz.
      num_samples: images drawn per evaluation (10k during training, 50k for reported numbers).
      batch_size: images per sample_fn call. A num_samples multiple avoids a second compile of a
        jitted sampler for the last, smaller batch.
      jpeg_quality: JPEG round trip applied to samples (95 mimics the reference; None: lossless).
      k: the k of precision/recall (computed when the reference kept pool3 features).
    """

    def __init__(
        self,
        feature_fn: FeatureFn,
        reference: FIDReference | str | os.PathLike,
        num_samples: int,
        batch_size: int,
        jpeg_quality: int | None = None,
        *,
        k: int = 3,
        seed: int = 0,
    ):
        if num_samples < 2 or batch_size < 1:
            raise ValueError(
                f"Need num_samples >= 2 and batch_size >= 1, got {num_samples}, {batch_size}."
            )
        if not isinstance(reference, FIDReference):
            reference = metrics.load_reference(reference)
        self.feature_fn = feature_fn
        self.reference = reference
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.jpeg_quality = jpeg_quality
        self.k = k
        self.seed = seed

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def settings(self) -> dict[str, Any]:
        """What to record with every reported number (spec: dctdiff.md section 11)."""
        return {
            "num_samples": self.num_samples,
            "jpeg_quality": self.jpeg_quality,
            "reference": self.reference.metadata,
        }

    def sample_batches(self, sample_fn: SampleFn, key: jax.Array) -> Iterator[np.ndarray]:
        """Batch i is sample_fn(fold_in(key, i), n_i): uint8 (n_i, H, W, 3) numpy."""
        for i in range(self.num_batches):
            n = min(self.batch_size, self.num_samples - i * self.batch_size)
            images = np.asarray(jax.device_get(sample_fn(jax.random.fold_in(key, i), n)))
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(
                    f"sample_fn must return uint8 (n, H, W, 3) images, got {images.dtype} "
                    f"{images.shape}."
                )
            if len(images) != n:
                raise ValueError(f"sample_fn returned {len(images)} images, {n} were asked for.")
            check_resolution(self.reference, images)
            yield images

    def evaluate(self, sample_fn: SampleFn, key: jax.Array) -> dict[str, float]:
        """{'fid', ['sfid'], ['precision', 'recall'], 'num_samples'} of sample_fn's images."""
        return metrics.evaluate_samples(
            self.sample_batches(sample_fn, key),
            self.feature_fn,
            self.reference,
            jpeg_quality=self.jpeg_quality,
            k=self.k,
            seed=self.seed,
        )

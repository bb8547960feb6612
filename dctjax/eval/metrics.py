"""Sample-quality metrics on image features: FID, sFID, precision/recall and their statistics.

No model code: a feature function is any callable mapping a uint8 (N, H, W, 3) batch to a dict of
float (N, d) arrays, e.g. {'pool3': (N, 2048), 'spatial': (N, 2023)} from
`dctjax.eval.inception.load_inception()` (spec: dctdiff.md section 11, dctransformer.md 8.1).
  - `FeatureStats`: streaming float64 mean/covariance (+ a uniform random subset of rows for P&R).
  - `frechet_distance`: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.
  - `precision_recall`: Kynkaanniemi et al. 2019, k-NN balls, batched jitted distances.
  - `jpeg_roundtrip`: Pillow JPEG encode/decode (4:2:0), bit-identical to OpenCV's writes.
  - `FIDReference` / `save_reference` / `load_reference`: the .npz reference statistics.
  - `compute_feature_stats`, `fid_from_stats`, `evaluate_samples`: the glue.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from PIL import Image

from dctjax._io import savez_atomic

FeatureFn = Callable[[np.ndarray], Mapping[str, Any]]

POOL3 = "pool3"
SPATIAL = "spatial"
FORMAT = "dctjax-fid-reference-v1"
COMPUTE_HINT = (
    "compute them with: python launch/evaluate.py --compute_ref --dataset=NAME "
    "--resolution=R --out=PATH.npz"
)


# ------------------------------------------------------------------------------------------------
# Streaming statistics
# ------------------------------------------------------------------------------------------------


class FeatureStats:
    """Streaming mean and covariance of (n, d) feature rows, accumulated in float64.

    Batches are combined with Chan et al.'s pairwise update (mean and centred sum of outer
    products), so the result equals np.mean / np.cov(rowvar=False) of all rows up to rounding.
    With max_keep > 0 it also keeps a uniform random subset of up to max_keep rows (float32,
    reservoir sampling seeded by `seed`) for precision/recall; `merge` keeps that subset uniform.
    """

    def __init__(self, dim: int | None = None, *, max_keep: int = 0, seed: int = 0):
        if max_keep < 0:
            raise ValueError(f"max_keep must be >= 0, got {max_keep}.")
        self.dim = None if dim is None else int(dim)
        self.max_keep = int(max_keep)
        self.count = 0
        self._mean: np.ndarray | None = None  # (d,) float64
        self._m2: np.ndarray | None = None  # (d, d) float64: sum of (x - mean)(x - mean)^T
        self._kept: np.ndarray | None = None  # (max_keep, d) float32 buffer
        self._num_kept = 0  # rows [0, _num_kept) of _kept are valid
        self._rng = np.random.default_rng(seed)

    def _check_dim(self, d: int) -> None:
        if self.dim is None:
            self.dim = d
        elif d != self.dim:
            raise ValueError(f"Feature dimension {d} does not match the accumulated {self.dim}.")

    def update(self, feats: Any) -> FeatureStats:
        """Adds feature rows (n, d); returns self."""
        x = np.asarray(feats)
        if x.ndim != 2:
            raise ValueError(f"Expected features of shape (n, d), got {x.shape}.")
        self._check_dim(x.shape[1])
        if len(x) == 0:
            return self
        x64 = x.astype(np.float64)
        if not np.isfinite(x64).all():
            raise ValueError("Features contain NaN or Inf.")
        mean = x64.mean(axis=0)
        xc = x64 - mean
        self._keep(x.astype(np.float32))
        self._combine(len(x), mean, xc.T @ xc)
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Adds the rows accumulated by `other` (same dim); returns self."""
        if other.count == 0:
            return self
        self._check_dim(other.dim)
        if self.max_keep:
            self._merge_kept(other)
        self._combine(other.count, other._mean, other._m2)
        return self

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if self.count == 0:
            self._mean, self._m2 = mean.copy(), m2.copy()
        else:
            total = self.count + n
            delta = mean - self._mean
            self._mean += delta * (n / total)
            self._m2 += m2
            self._m2 += np.outer(delta, delta * (self.count * n / total))
        self.count += n

    def _keep(self, x: np.ndarray) -> None:
        """Reservoir sampling (Algorithm R) of the rows of x, whose indices follow self.count."""
        if not self.max_keep:
            return
        if self._kept is None:
            self._kept = np.empty((self.max_keep, x.shape[1]), np.float32)
        fill = min(self.max_keep - self._num_kept, len(x))
        self._kept[self._num_kept : self._num_kept + fill] = x[:fill]
        self._num_kept += fill
        if fill == len(x):
            return
        t = self.count + np.arange(fill, len(x))  # global row indices
        slot = self._rng.integers(0, t + 1)
        hit = slot < self.max_keep
        slots, rows = slot[hit], x[fill:][hit]
        if len(slots):
            # Sequential semantics: a later row replacing the same slot wins.
            uniq, first_rev = np.unique(slots[::-1], return_index=True)
            self._kept[uniq] = rows[len(slots) - 1 - first_rev]

    def _merge_kept(self, other: FeatureStats) -> None:
        """The union's reservoir: a hypergeometric split of max_keep between the two subsets."""
        mine = self.kept if self.kept is not None else np.empty((0, other.dim), np.float32)
        theirs = other.kept if other.kept is not None else np.empty((0, other.dim), np.float32)
        size = min(self.max_keep, len(mine) + len(theirs))
        from_mine = len(mine)
        if len(mine) + len(theirs) > size:
            from_mine = int(self._rng.hypergeometric(self.count, other.count, size))
        # Clamp when `other` kept fewer rows than needed (a smaller max_keep): then not uniform.
        from_mine = int(np.clip(from_mine, size - len(theirs), len(mine)))
        a = mine[self._rng.choice(len(mine), from_mine, replace=False)]
        b = theirs[self._rng.choice(len(theirs), size - from_mine, replace=False)]
        self._kept = np.empty((self.max_keep, other.dim), np.float32)
        self._kept[:size] = np.concatenate([a, b])
        self._num_kept = size

    @property
    def mean(self) -> np.ndarray:
        """(d,) float64."""
        if self.count == 0:
            raise ValueError("No features accumulated.")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """(d, d) float64, unbiased (divides by count - 1) like np.cov(rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature rows, got {self.count}.")
        return self._m2 / (self.count - 1)

    @property
    def kept(self) -> np.ndarray | None:
        """(min(count, max_keep), d) float32 kept rows (None when max_keep == 0 or no rows yet)."""
        if self._kept is None:
            return None
        return self._kept[: self._num_kept]

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, count={self.count}, max_keep={self.max_keep})"


# ------------------------------------------------------------------------------------------------
# Frechet distance
# ------------------------------------------------------------------------------------------------


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, float]:
    """scipy's matrix square root and its relative residual ||X X - A||_F / ||A||_F."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        x = scipy.linalg.sqrtm(a)
    if not np.isfinite(x).all():
        return x, np.inf
    norm = np.linalg.norm(a)
    return x, float(np.linalg.norm(x @ x - a) / norm) if norm > 0 else 0.0


def frechet_distance(
    mu1: Any,
    sigma1: Any,
    mu2: Any,
    sigma2: Any,
    eps: float = 1e-6,
    *,
    imag_tol: float = 1e-3,
    residual_tol: float = 1e-5,
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), with scipy.linalg.sqrtm. As in
    pytorch-fid, when the square root of the product is not finite (or, here, inaccurate: relative
    residual above residual_tol) it is retried with eps * I added to both covariances. Imaginary
    parts (rounding, for covariances that are PSD) are dropped when those on the diagonal are at
    most imag_tol; larger ones raise ValueError.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"Means must be vectors of equal length, got {mu1.shape} and {mu2.shape}.")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means, got {s.shape}.")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or Inf.")

    diff = mu1 - mu2
    covmean, residual = _sqrtm(sigma1 @ sigma2)
    if not residual <= residual_tol:
        logging.warning(
            "Frechet distance: sqrtm(sigma1 sigma2) is %s (relative residual %.3g); adding "
            "%g to the covariance diagonals.",
            "not finite" if not np.isfinite(residual) else "inaccurate",
            residual,
            eps,
        )
        offset = np.eye(d) * eps
        covmean, residual = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(
                f"sqrtm(sigma1 sigma2) is not finite even with eps={eps} added to the diagonals."
            )
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > imag_tol:
            raise ValueError(
                f"sqrtm(sigma1 sigma2) has a diagonal imaginary component of {imag:.3g} "
                f"(tolerance {imag_tol}); are both covariances positive semi-definite?"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# ------------------------------------------------------------------------------------------------
# Precision and recall (Kynkaanniemi et al. 2019)
# ------------------------------------------------------------------------------------------------


# Squared distances below this fraction of ||a||^2 + ||b||^2 are float32 cancellation noise of the
# expansion below and are set to exactly 0, so duplicate points tie exactly (e.g. a radius of 0
# when a point has k duplicates, and a copy of that point still inside its ball).
_SQDIST_RTOL = 1e-5


def _sqdist(a: jax.Array, b: jax.Array) -> jax.Array:
    """(n, d), (m, d) float32 -> (n, m) squared distances ||a||^2 + ||b||^2 - 2ab; values within
    the rounding noise of 0 (negative ones included) are exactly 0."""
    hi = jax.lax.Precision.HIGHEST
    a2 = jnp.einsum("nd,nd->n", a, a, precision=hi)[:, None]
    b2 = jnp.einsum("md,md->m", b, b, precision=hi)[None, :]
    d = a2 + b2 - 2.0 * jnp.einsum("nd,md->nm", a, b, precision=hi)
    return jnp.where(d <= _SQDIST_RTOL * (a2 + b2), 0.0, d)


@functools.partial(jax.jit, static_argnames="k")
def _kth_other_sqdist(rows: jax.Array, row_ids: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """Squared distance from each row (points[row_ids]) to its k-th nearest OTHER point."""
    d = _sqdist(rows, points)
    is_self = row_ids[:, None] == jnp.arange(points.shape[0])[None, :]
    d = jnp.where(is_self, jnp.inf, d)  # exclusion by index: duplicates still count as others
    return -jax.lax.top_k(-d, k)[0][:, k - 1]


@jax.jit
def _inside_any_ball(rows: jax.Array, centres: jax.Array, sq_radii: jax.Array) -> jax.Array:
    """Whether each row lies in at least one closed ball (centre, radius); boundary counts."""
    return jnp.any(_sqdist(rows, centres) <= sq_radii[None, :], axis=1)


def _row_ranges(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad(x: np.ndarray, size: int, value: float) -> np.ndarray:
    if len(x) == size:
        return x
    pad = np.full((size - len(x), *x.shape[1:]), value, x.dtype)
    return np.concatenate([x, pad])


def knn_sq_radii(points: Any, k: int = 3, batch_size: int = 1024) -> np.ndarray:
    """(N,) float32 squared distance of each of the (N, d) points to its k-th nearest other one."""
    points = np.asarray(points, np.float32)
    n = len(points)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}.")
    bs = min(batch_size, n)
    all_points = jnp.asarray(points)
    out = np.empty(n, np.float32)
    for start, stop in _row_ranges(n, bs):
        ids = _pad(np.arange(start, stop, dtype=np.int32), bs, -1)
        rows = _pad(points[start:stop], bs, 0.0)
        out[start:stop] = np.asarray(_kth_other_sqdist(rows, ids, all_points, k))[: stop - start]
    return out


def _coverage(rows: np.ndarray, centres: np.ndarray, sq_radii: np.ndarray, bs: int) -> float:
    """Fraction of rows inside at least one of the balls."""
    bs = min(bs, len(rows))
    centres_j, radii_j = jnp.asarray(centres), jnp.asarray(sq_radii)
    inside = 0
    for start, stop in _row_ranges(len(rows), bs):
        hit = _inside_any_ball(_pad(rows[start:stop], bs, 0.0), centres_j, radii_j)
        inside += int(np.asarray(hit)[: stop - start].sum())
    return inside / len(rows)


def precision_recall(real: Any, fake: Any, k: int = 3, batch_size: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake (M, d) against real (N, d).

    Each point's ball has as radius the distance to its k-th nearest other point of its own set.
    precision: fraction of fake points inside at least one real ball; recall: fraction of real
    points inside at least one fake ball. Distances are float32 (after centring both sets on the
    real mean, which reduces cancellation), computed by jitted jnp in row batches of batch_size,
    so memory is O(batch_size * max(N, M)). Ties: balls are closed (distance <= radius), a point
    is excluded from its own k-NN by index (duplicates count as other points), and distances
    within float32 rounding of 0 are exactly 0, so duplicates tie exactly.
    """
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"Expected (N, d) and (M, d) features, got {real.shape} and {fake.shape}.")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("Features contain NaN or Inf.")
    centre = real.mean(axis=0)
    real32 = (real - centre).astype(np.float32)
    fake32 = (fake - centre).astype(np.float32)
    real_r = knn_sq_radii(real32, k, batch_size)
    fake_r = knn_sq_radii(fake32, k, batch_size)
    return {
        "precision": _coverage(fake32, real32, real_r, batch_size),
        "recall": _coverage(real32, fake32, fake_r, batch_size),
    }


# ------------------------------------------------------------------------------------------------
# JPEG round trip
# ------------------------------------------------------------------------------------------------


def _check_images(images: Any) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}.")
    return images


def _jpeg_one(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=2)  # 4:2:0
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def jpeg_roundtrip(images: Any, quality: int | None) -> np.ndarray:
    """uint8 (N, H, W, 3) -> the same images JPEG-encoded at `quality` (4:2:0) and decoded.

    Matches OpenCV's `imwrite(..., [IMWRITE_JPEG_QUALITY, q])` + `imread` bit for bit (both use
    libjpeg-turbo's defaults), which is how the DCTdiff reference stores samples (quality 95).
    quality None returns the images unchanged.
    """
    images = _check_images(images)
    if quality is None:
        return images
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}.")
    if len(images) < 8:
        return np.stack([_jpeg_one(im, quality) for im in images]) if len(images) else images
    # PIL releases the GIL while encoding and decoding.
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as ex:
        return np.stack(list(ex.map(functools.partial(_jpeg_one, quality=quality), images)))


# ------------------------------------------------------------------------------------------------
# Reference statistics
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FIDReference:
    """Feature statistics of a reference set (usually the training set).

    mu / sigma: feature name ('pool3', 'spatial') -> (d,) / (d, d) float64; count: images.
    features: (K, d_pool3) float32 rows kept for precision/recall, or None.
    metadata: JSON-able description, recorded with every FID: dataset, split, resolution,
      jpeg_quality (applied to the reference images), source, num.
    """

    mu: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    count: int
    features: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.mu) != set(self.sigma):
            raise ValueError(f"mu has {sorted(self.mu)} but sigma has {sorted(self.sigma)}.")
        for name in self.mu:
            mu, sigma = np.asarray(self.mu[name]), np.asarray(self.sigma[name])
            if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
                raise ValueError(
                    f"Feature {name!r}: mu {mu.shape} and sigma {sigma.shape} do not match."
                )

    @property
    def names(self) -> list[str]:
        return sorted(self.mu)

    @property
    def resolution(self) -> int | list[int] | None:
        """Recorded image size: R for R x R, [H, W] otherwise, None when unknown."""
        return self.metadata.get("resolution")

    @classmethod
    def from_feature_stats(
        cls,
        stats: Mapping[str, FeatureStats],
        metadata: Mapping[str, Any] | None = None,
        kept_name: str = POOL3,
    ) -> FIDReference:
        counts = {s.count for s in stats.values()}
        if len(counts) != 1:
            raise ValueError(f"Feature statistics have different counts: {counts}.")
        kept = stats[kept_name].kept if kept_name in stats else None
        return cls(
            mu={n: s.mean for n, s in stats.items()},
            sigma={n: s.cov for n, s in stats.items()},
            count=counts.pop(),
            features=None if kept is None else kept.copy(),
            metadata=dict(metadata or {}),
        )

    def summary(self) -> str:
        dims = ", ".join(f"{n}={len(self.mu[n])}" for n in self.names)
        kept = 0 if self.features is None else len(self.features)
        meta = " ".join(f"{k}={v}" for k, v in self.metadata.items() if k != "feature_dims")
        return f"{self.count} images; features {dims}; {kept} kept for P&R; {meta}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def save_reference(stats: FIDReference, path: str | os.PathLike) -> None:
    """Writes `stats` to the .npz `path` atomically (a temporary file, then os.replace).

    Entries: mu_<name>, sigma_<name> (float64), count, features (optional, float32) and metadata
    (a JSON string that also holds the format tag).
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {"count": np.int64(stats.count)}
    for name in stats.names:
        arrays[f"mu_{name}"] = np.asarray(stats.mu[name], np.float64)
        arrays[f"sigma_{name}"] = np.asarray(stats.sigma[name], np.float64)
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    meta = {"format": FORMAT, **stats.metadata}
    arrays["metadata"] = np.array(json.dumps(meta, default=_json_default))
    savez_atomic(path, arrays)


def load_reference(path: str | os.PathLike) -> FIDReference:
    """Reads a reference .npz written by `save_reference`.

    Also reads pytorch-fid / guided-diffusion statistics (entries mu, sigma [, mu_s, sigma_s]) as
    'pool3' [and 'spatial'], with count 0 (unknown) and no kept features.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No reference statistics at {path!r}; {COMPUTE_HINT}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "metadata" not in keys and {"mu", "sigma"} <= keys:
            mu, sigma = {POOL3: z["mu"]}, {POOL3: z["sigma"]}
            if {"mu_s", "sigma_s"} <= keys:
                mu[SPATIAL], sigma[SPATIAL] = z["mu_s"], z["sigma_s"]
            return FIDReference(mu, sigma, 0, None, {"source": path, "format": "mu/sigma"})
        missing = {"count", "metadata"} - keys
        names = sorted(k[len("mu_") :] for k in keys if k.startswith("mu_"))
        if not names:
            missing.add("mu_<name>")
        missing |= {f"sigma_{n}" for n in names} - keys
        if missing:
            raise ValueError(
                f"{path!r} is not a reference statistics file: missing {sorted(missing)} "
                f"(has {sorted(keys)}); {COMPUTE_HINT}"
            )
        metadata = json.loads(str(z["metadata"]))
        return FIDReference(
            mu={n: z[f"mu_{n}"] for n in names},
            sigma={n: z[f"sigma_{n}"] for n in names},
            count=int(z["count"]),
            features=z["features"] if "features" in keys else None,
            metadata=metadata,
        )


# ------------------------------------------------------------------------------------------------
# Glue
# ------------------------------------------------------------------------------------------------


def compute_feature_stats(
    images_iter: Iterable[Any],
    feature_fn: FeatureFn,
    *,
    jpeg_quality: int | None = None,
    max_keep: int = 0,
    kept_name: str = POOL3,
    seed: int = 0,
) -> dict[str, FeatureStats]:
    """Feature statistics of batches of uint8 (n, H, W, 3) images (numpy or jax), each first passed
    through `jpeg_roundtrip(., jpeg_quality)`; rows of `kept_name` are kept up to max_keep."""
    stats: dict[str, FeatureStats] = {}

    def update(feats: dict[str, np.ndarray]) -> None:
        for name, f in feats.items():
            if name not in stats:
                keep = max_keep if name == kept_name else 0
                stats[name] = FeatureStats(max_keep=keep, seed=seed)
            stats[name].update(f)

    # The float64 updates (a d x d GEMM per batch) run in a thread, overlapping the next batch's
    # features; at most one update is pending, applied in order.
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        pending: concurrent.futures.Future | None = None
        for batch in images_iter:
            batch = jpeg_roundtrip(np.asarray(batch), jpeg_quality)
            if len(batch) == 0:
                continue
            feats = {name: np.array(f) for name, f in feature_fn(batch).items()}  # owned copies
            for name, f in feats.items():
                if f.ndim != 2 or len(f) != len(batch):
                    raise ValueError(
                        f"Feature {name!r} has shape {f.shape} for {len(batch)} images; "
                        f"expected ({len(batch)}, d)."
                    )
            if pending is not None:
                pending.result()
            pending = ex.submit(update, feats)
        if pending is not None:
            pending.result()
    if not stats:
        raise ValueError("No images to compute feature statistics on.")
    return stats


StatsLike = FIDReference | Mapping[str, FeatureStats]


def _moments(stats: StatsLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(stats, FIDReference):
        if name not in stats.mu:
            raise ValueError(f"Reference statistics have no {name!r} features ({stats.names}).")
        return stats.mu[name], stats.sigma[name]
    if name not in stats:
        raise ValueError(f"Feature statistics have no {name!r} features ({sorted(stats)}).")
    return stats[name].mean, stats[name].cov


def _has(stats: StatsLike, name: str) -> bool:
    return name in (stats.mu if isinstance(stats, FIDReference) else stats)


def fid_from_stats(stats_a: StatsLike, stats_b: StatsLike, name: str = POOL3) -> float:
    """Frechet distance between the `name` features of two sets of statistics."""
    mu1, sigma1 = _moments(stats_a, name)
    mu2, sigma2 = _moments(stats_b, name)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


def evaluate_samples(
    images_iter: Iterable[Any],
    feature_fn: FeatureFn,
    reference: FIDReference | str | os.PathLike,
    *,
    jpeg_quality: int | None = None,
    k: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics of generated images (batches of uint8 (n, H, W, 3)) against `reference`.

    Returns {'fid', 'sfid' (when both have 'spatial' features), 'precision', 'recall' (when the
    reference kept pool3 features), 'num_samples'}. Precision/recall use equally many real and
    fake rows: up to len(reference.features) sample rows are kept, and the larger set is
    subsampled uniformly (seed) to the smaller's size.
    """
    if not isinstance(reference, FIDReference):
        reference = load_reference(reference)
    max_keep = 0 if reference.features is None else len(reference.features)
    stats = compute_feature_stats(
        images_iter, feature_fn, jpeg_quality=jpeg_quality, max_keep=max_keep, seed=seed
    )
    if POOL3 not in stats:
        raise ValueError(f"The feature function returned {sorted(stats)}, without {POOL3!r}.")
    out: dict[str, float] = {"num_samples": stats[POOL3].count}
    out["fid"] = fid_from_stats(stats, reference, POOL3)
    if _has(stats, SPATIAL) and _has(reference, SPATIAL):
        out["sfid"] = fid_from_stats(stats, reference, SPATIAL)
    if max_keep:
        real, fake = reference.features, stats[POOL3].kept
        n = min(len(real), len(fake))
        if n > k:
            rng = np.random.default_rng(seed)
            out.update(precision_recall(_subsample(real, n, rng), _subsample(fake, n, rng), k=k))
        else:
            logging.warning("Precision/recall skipped: %d feature rows for k=%d.", n, k)
    return out

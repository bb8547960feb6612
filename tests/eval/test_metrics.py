"""dctjax.eval.metrics and dctjax.eval.evaluators against closed forms and brute-force numpy."""

import io
import os

import jax
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from dctjax.data.synthetic import SyntheticShapes
from dctjax.eval import evaluators, metrics

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def eigh_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_eigh(mu1, s1, mu2, s2):
    """Independent form: Tr((S1^1/2 S2 S1^1/2)^1/2) from symmetric eigendecompositions."""
    r = eigh_sqrt(s1)
    m = r @ s2 @ r
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def fake_feature_fn(pool3_dim=16, spatial_dim=8, seed=0):
    """A fixed random projection of the pixels: the InceptionFeatures contract with small dims."""
    rng = np.random.default_rng(seed)
    cache = {}

    def fn(images):
        images = np.asarray(images)
        assert images.dtype == np.uint8 and images.ndim == 4
        x = images.reshape(len(images), -1).astype(np.float64) / 255.0
        if x.shape[1] not in cache:
            cache[x.shape[1]] = (
                rng.normal(size=(x.shape[1], pool3_dim)) / np.sqrt(x.shape[1]),
                rng.normal(size=(x.shape[1], spatial_dim)) / np.sqrt(x.shape[1]),
            )
        p, s = cache[x.shape[1]]
        return {"pool3": (x @ p).astype(np.float32), "spatial": np.tanh(x @ s).astype(np.float32)}

    fn.feature_dims = {"pool3": pool3_dim, "spatial": spatial_dim}
    return fn


def brute_force_pr(real, fake, k):
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    def cover(rows, centres, r):
        d = np.sqrt(((rows[:, None] - centres[None]) ** 2).sum(-1))
        return (d <= r[None]).any(1).mean()

    return cover(fake, real, radii(real)), cover(real, fake, radii(fake))


# ------------------------------------------------------------------------------------------------
# Frechet distance
# ------------------------------------------------------------------------------------------------


def test_frechet_equal_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=12), random_cov(rng, 12)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-9


def test_frechet_mean_shift_only():
    rng = np.random.default_rng(1)
    mu1, mu2, s = rng.normal(size=10), rng.normal(size=10), random_cov(rng, 10)
    expected = float(((mu1 - mu2) ** 2).sum())
    np.testing.assert_allclose(metrics.frechet_distance(mu1, s, mu2, s), expected, rtol=1e-9)


def test_frechet_diagonal_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_scalar_case():
    assert metrics.frechet_distance(1.0, 4.0, 3.0, 1.0) == pytest.approx(4 + 1)


def test_frechet_random_nondiagonal_against_eigh():
    rng = np.random.default_rng(3)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    np.testing.assert_allclose(
        metrics.frechet_distance(mu1, s1, mu2, s2), frechet_eigh(mu1, s1, mu2, s2), rtol=1e-9
    )


def test_frechet_singular_covariances():
    rng = np.random.default_rng(4)
    d = 40
    x, y = rng.normal(size=(10, d)), rng.normal(size=(15, d)) + 0.5  # rank 9 and 14
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    mu1, mu2 = x.mean(0), y.mean(0)
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, frechet_eigh(mu1, s1, mu2, s2), rtol=1e-6)
    # Exactly shared null space (features that are constant in both sets).
    s1[:, :5] = s1[:5, :] = 0
    s2[:, :5] = s2[:5, :] = 0
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, frechet_eigh(mu1, s1, mu2, s2), rtol=1e-6)
    # sqrt of the null space's rounding-level eigenvalues: ~sqrt(1e-16) each, not 1e-16.
    assert abs(metrics.frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * np.trace(s1)


def test_frechet_retries_with_eps_when_sqrtm_is_not_finite(monkeypatch):
    rng = np.random.default_rng(5)
    mu, s1, s2 = rng.normal(size=8), random_cov(rng, 8), random_cov(rng, 8)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    got = metrics.frechet_distance(mu, s1, mu, s2, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(8)) @ (s2 + 1e-6 * np.eye(8)))
    np.testing.assert_allclose(got, frechet_eigh(mu, s1, mu, s2), rtol=1e-4)

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: np.full_like(a, np.inf))
    with pytest.raises(ValueError, match="not finite even with eps"):
        metrics.frechet_distance(mu, s1, mu, s2)


def test_frechet_imaginary_component_error():
    # Not PSD: sqrt(-1) on the diagonal.
    with pytest.raises(ValueError, match="imaginary component of 1"):
        metrics.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))
    # Tiny imaginary parts are dropped (and a large tolerance accepts anything).
    got = metrics.frechet_distance(
        np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2), imag_tol=2.0
    )
    assert np.isfinite(got)


def test_frechet_shape_errors():
    with pytest.raises(ValueError, match="equal length"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be \(3, 3\)"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------------
# FeatureStats
# ------------------------------------------------------------------------------------------------


def test_feature_stats_streaming_and_merge_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(257, 12)) * rng.uniform(0.5, 3, 12) + 100.0
    a, b = metrics.FeatureStats(), metrics.FeatureStats(12)
    cuts = [0, 1, 51, 54, 154, 200, 257]
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        (a if i < 3 else b).update(x[lo:hi].astype(np.float32) if i == 4 else x[lo:hi])
    x[154:200] = x[154:200].astype(np.float32)  # that batch went in as float32
    a.update(np.empty((0, 12)))
    a.merge(b).merge(metrics.FeatureStats())
    assert a.count == 257
    np.testing.assert_allclose(a.mean, x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.cov, np.cov(x, rowvar=False), rtol=0, atol=1e-10)
    assert a.kept is None


def test_feature_stats_errors():
    s = metrics.FeatureStats(4)
    with pytest.raises(ValueError, match="dimension 3"):
        s.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        s.update(np.zeros(4))
    with pytest.raises(ValueError, match="No features"):
        s.mean  # noqa: B018
    s.update(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        s.cov  # noqa: B018
    with pytest.raises(ValueError, match="NaN"):
        s.update(np.full((1, 4), np.nan))


def test_feature_stats_keeps_all_rows_in_order_below_max_keep():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    s = metrics.FeatureStats(max_keep=16)
    s.update(x[:4]).update(x[4:])
    np.testing.assert_array_equal(s.kept, x)
    s.update(x)
    assert s.kept.shape == (16, 3) and s.count == 20
    assert {tuple(r) for r in s.kept} <= {tuple(r) for r in x}


@pytest.mark.parametrize("use_merge", [False, True])
def test_feature_stats_kept_subset_is_uniform(use_merge):
    n, keep, trials = 20, 5, 1500
    x = np.arange(n, dtype=np.float32)[:, None]
    hits = np.zeros(n)
    for seed in range(trials):
        if use_merge:
            a = metrics.FeatureStats(max_keep=keep, seed=seed).update(x[:7])
            b = metrics.FeatureStats(max_keep=keep, seed=seed + trials).update(x[7:])
            s = a.merge(b)
        else:
            s = metrics.FeatureStats(max_keep=keep, seed=seed)
            s.update(x[:3]).update(x[3:11]).update(x[11:])
        kept = s.kept[:, 0].astype(int)
        assert len(kept) == keep and len(set(kept)) == keep
        hits[kept] += 1
    expected = trials * keep / n  # 375, std ~17
    assert np.abs(hits - expected).max() < 80, hits


# ------------------------------------------------------------------------------------------------
# Precision and recall
# ------------------------------------------------------------------------------------------------


def clusters(rng, centres, per, scale=0.1):
    return np.concatenate([c + scale * rng.normal(size=(per, len(c))) for c in centres])


def test_pr_identical_sets():
    x = np.random.default_rng(0).normal(size=(50, 8))
    assert metrics.precision_recall(x, x, k=3) == {"precision": 1.0, "recall": 1.0}


def test_pr_disjoint_far_clusters():
    rng = np.random.default_rng(1)
    real = clusters(rng, [np.zeros(4)], 30)
    fake = clusters(rng, [np.full(4, 100.0)], 30)
    assert metrics.precision_recall(real, fake, k=3) == {"precision": 0.0, "recall": 0.0}


def test_pr_fake_covers_half_the_real_modes():
    rng = np.random.default_rng(2)
    centres = [np.array(c, float) * 50 for c in ([0, 0], [1, 0], [0, 1], [1, 1])]
    real = clusters(rng, centres, 25)
    fake = real[:50]  # copies of the points of the first two modes
    pr = metrics.precision_recall(real, fake, k=3)
    assert pr == {"precision": 1.0, "recall": 0.5}
    fake = clusters(rng, centres[:2], 40)  # fresh draws from the same two modes
    pr = metrics.precision_recall(real, fake, k=3)
    assert pr["precision"] > 0.8 and abs(pr["recall"] - 0.5) <= 0.1


def test_pr_duplicate_points_tie_exactly():
    # With k copies of each point, every ball has radius 0; a copy is still inside (<=).
    base = np.random.default_rng(3).normal(size=(10, 16)) * 30 + 7
    real = np.repeat(base, 4, axis=0)
    assert metrics.precision_recall(real, real[::-1], k=3) == {"precision": 1.0, "recall": 1.0}
    pr = metrics.precision_recall(real, base[:5], k=3)  # fake: one copy of half the points
    assert pr["precision"] == 1.0


@pytest.mark.parametrize("batch_size,k", [(7, 1), (13, 3), (1000, 5)])
def test_pr_matches_brute_force(batch_size, k):
    rng = np.random.default_rng(4)
    real = rng.normal(size=(90, 6))
    fake = 0.8 * rng.normal(size=(71, 6)) + 0.3
    p, r = brute_force_pr(real, fake, k)
    assert 0.2 < min(p, r) < 1  # not a trivial case
    got = metrics.precision_recall(real, fake, k=k, batch_size=batch_size)
    assert got == {"precision": p, "recall": r}
    radii = metrics.knn_sq_radii(real, k, batch_size)
    d = ((real[:, None] - real[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(radii, np.sort(d, 1)[:, k - 1], rtol=1e-4)


def test_pr_errors():
    with pytest.raises(ValueError, match="k must be"):
        metrics.precision_recall(np.zeros((3, 2)), np.ones((5, 2)), k=3)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        metrics.precision_recall(np.zeros((5, 2)), np.ones((5, 3)))


# ------------------------------------------------------------------------------------------------
# JPEG round trip
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_images():
    src = SyntheticShapes(32, num_examples=6)
    return np.stack([src[i]["image"] for i in range(6)])


def pil_roundtrip(image, quality):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_jpeg_none_is_identity(shapes_images):
    out = metrics.jpeg_roundtrip(shapes_images, None)
    np.testing.assert_array_equal(out, shapes_images)


def test_jpeg_quality_100_close_to_identity():
    y, x = np.mgrid[0:24, 0:32]
    smooth = np.stack([4 * x + 40, 5 * y + 30, 2 * (x + y) + 60], -1).astype(np.uint8)
    out = metrics.jpeg_roundtrip(smooth[None], 100)
    assert out.shape == (1, 24, 32, 3) and out.dtype == np.uint8
    err = np.abs(out.astype(int) - smooth)
    assert err.max() <= 4 and err.mean() < 1.5


def test_jpeg_matches_direct_pillow_q95(shapes_images):
    images = np.concatenate([shapes_images, shapes_images[:, ::-1]])  # 12: the threaded path
    out = metrics.jpeg_roundtrip(images, 95)
    expected = np.stack([pil_roundtrip(im, 95) for im in images])
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, images)
    np.testing.assert_array_equal(metrics.jpeg_roundtrip(images[:3], 95), expected[:3])


def test_jpeg_matches_opencv_q95(shapes_images):
    cv2 = pytest.importorskip("cv2")
    expected = []
    for im in shapes_images:
        ok, buf = cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        expected.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    np.testing.assert_array_equal(metrics.jpeg_roundtrip(shapes_images, 95), np.stack(expected))


def test_jpeg_errors(shapes_images):
    with pytest.raises(ValueError, match="uint8"):
        metrics.jpeg_roundtrip(shapes_images.astype(np.float32), 95)
    with pytest.raises(ValueError, match="quality"):
        metrics.jpeg_roundtrip(shapes_images, 0)


# ------------------------------------------------------------------------------------------------
# FIDReference files
# ------------------------------------------------------------------------------------------------


def make_reference(rng, with_features=True):
    return metrics.FIDReference(
        mu={"pool3": rng.normal(size=6), "spatial": rng.normal(size=3)},
        sigma={"pool3": random_cov(rng, 6), "spatial": random_cov(rng, 3)},
        count=123,
        features=rng.normal(size=(20, 6)).astype(np.float32) if with_features else None,
        metadata={"dataset": "synthetic", "split": "train", "resolution": 16, "num": 123,
                  "jpeg_quality": None, "source": "SyntheticShapes(...)"},
    )  # fmt: skip


def test_reference_round_trip_is_atomic(tmp_path):
    rng = np.random.default_rng(0)
    ref = make_reference(rng)
    path = tmp_path / "sub" / "ref.npz"
    metrics.save_reference(ref, path)
    assert sorted(os.listdir(path.parent)) == ["ref.npz"]
    back = metrics.load_reference(path)
    assert back.count == 123 and back.names == ["pool3", "spatial"]
    assert back.metadata == {"format": metrics.FORMAT, **ref.metadata}
    assert back.resolution == 16
    for n in ref.names:
        np.testing.assert_array_equal(back.mu[n], ref.mu[n])
        np.testing.assert_array_equal(back.sigma[n], ref.sigma[n])
    np.testing.assert_array_equal(back.features, ref.features)
    metrics.save_reference(make_reference(rng, with_features=False), path)  # overwrite
    assert metrics.load_reference(path).features is None
    assert sorted(os.listdir(path.parent)) == ["ref.npz"]


def test_reference_failed_save_keeps_old_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    path = tmp_path / "ref.npz"
    metrics.save_reference(make_reference(rng), path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        metrics.save_reference(make_reference(rng), path)
    assert os.listdir(tmp_path) == ["ref.npz"] and path.read_bytes() == before


def test_reference_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--compute_ref"):
        metrics.load_reference(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu_pool3=np.zeros(2), count=np.int64(1), metadata=np.array("{}"))
    with pytest.raises(ValueError, match="missing.*sigma_pool3"):
        metrics.load_reference(bad)
    np.savez(bad, something=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing \['count', 'metadata', 'mu_<name>'\]"):
        metrics.load_reference(bad)


def test_reference_loads_pytorch_fid_stats(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "fid_stats.npz"
    mu, sigma = rng.normal(size=4), random_cov(rng, 4)
    np.savez(path, mu=mu, sigma=sigma)
    ref = metrics.load_reference(path)
    assert ref.names == ["pool3"] and ref.count == 0 and ref.features is None
    assert ref.resolution is None
    np.testing.assert_array_equal(ref.sigma["pool3"], sigma)


# ------------------------------------------------------------------------------------------------
# compute_feature_stats / evaluate_samples / FidEvaluator
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset():
    src = SyntheticShapes(16, num_examples=64)
    return src, np.stack([src[i]["image"] for i in range(64)])


def test_compute_feature_stats_matches_numpy(dataset):
    _, images = dataset
    fn = fake_feature_fn()
    batches = [images[:10], images[10:11], images[11:64]]
    stats = metrics.compute_feature_stats(batches, fn, max_keep=100)
    feats = fn(images)
    for name in ("pool3", "spatial"):
        f = feats[name].astype(np.float64)
        np.testing.assert_allclose(stats[name].mean, f.mean(0), atol=1e-10)
        np.testing.assert_allclose(stats[name].cov, np.cov(f, rowvar=False), atol=1e-10)
    np.testing.assert_array_equal(stats["pool3"].kept, feats["pool3"])
    assert stats["spatial"].kept is None
    with pytest.raises(ValueError, match="No images"):
        metrics.compute_feature_stats([], fn)


def test_reference_from_source_and_evaluator_fid_zero(dataset):
    src, images = dataset
    fn = fake_feature_fn()
    ref = evaluators.reference_from_source(
        src, fn, batch_size=10, max_keep=64, metadata={"dataset": "synthetic", "split": "train"}
    )
    assert ref.count == 64 and ref.features.shape == (64, 16)
    assert ref.metadata["resolution"] == 16 and ref.metadata["num"] == 64
    assert ref.metadata["dataset"] == "synthetic" and ref.metadata["jpeg_quality"] is None
    assert ref.metadata["feature_dims"] == {"pool3": 16, "spatial": 8}

    served, keys = [0], []

    def sample_fn(key, num):  # returns the dataset images in order
        keys.append(jax.random.key_data(key).tolist())
        out = images[served[0] : served[0] + num]
        served[0] += num
        return out

    ev = evaluators.FidEvaluator(fn, ref, num_samples=64, batch_size=24)
    out = ev.evaluate(sample_fn, jax.random.key(0))
    assert ev.num_batches == 3 and len(keys) == 3 and len({str(k) for k in keys}) == 3
    assert out["num_samples"] == 64
    assert abs(out["fid"]) < 1e-6 and abs(out["sfid"]) < 1e-6
    assert out["precision"] == 1.0 and out["recall"] == 1.0

    half = evaluators.reference_from_source(src, fn, num=32, batch_size=32, max_keep=0)
    assert half.count == 32 and half.features is None
    served[0] = 32
    out = evaluators.FidEvaluator(fn, half, 32, 32, jpeg_quality=90).evaluate(
        sample_fn, jax.random.key(1)
    )
    assert out["fid"] > 1e-4 and "precision" not in out  # other images, JPEG'd


def test_evaluator_checks_samples(dataset, tmp_path):
    src, images = dataset
    fn = fake_feature_fn()
    ref = evaluators.reference_from_source(src, fn, num=20, batch_size=20, max_keep=0)
    metrics.save_reference(ref, tmp_path / "ref.npz")
    ev = evaluators.FidEvaluator(fn, tmp_path / "ref.npz", num_samples=8, batch_size=8)
    small = np.zeros((8, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="8x8 but the reference .* 16x16"):
        ev.evaluate(lambda key, n: small[:n], jax.random.key(0))
    with pytest.raises(ValueError, match="uint8"):
        ev.evaluate(lambda key, n: images[:n] / 255.0, jax.random.key(0))
    with pytest.raises(ValueError, match="returned 2 images, 8"):
        ev.evaluate(lambda key, n: images[:2], jax.random.key(0))
    with pytest.raises(ValueError, match="num must be"):
        evaluators.reference_from_source(src, fn, num=65)


def test_evaluate_samples_equalizes_pr_set_sizes(dataset):
    src, images = dataset
    fn = fake_feature_fn()
    ref = evaluators.reference_from_source(src, fn, batch_size=64, max_keep=64)
    out = metrics.evaluate_samples([images[:40]], fn, ref, k=3)
    # 40 samples against a uniform 40-row subset of the 64 kept reference rows.
    assert out["num_samples"] == 40
    assert 0.0 < out["precision"] <= 1.0 and 0.0 < out["recall"] <= 1.0
    assert set(out) == {"num_samples", "fid", "sfid", "precision", "recall"}

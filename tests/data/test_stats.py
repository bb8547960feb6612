"""Tests for dctjax.data.stats: EBFR weights against the spec's Appendix A, the streaming histogram
statistics against the exact NumPy definition, merging, and input validation."""

import jax
import numpy as np
import pytest

from dctjax.data import stats
from dctjax.data.reference_stats import reference_stats

# Spec Appendix A entropy vectors, as shipped in dctjax.data.reference_stats: name -> (B, Y, Cb, Cr).
ENTROPIES = {
    name: (s.block_size, s.entropy_y, s.entropy_cb, s.entropy_cr)
    for name, s in {
        "CIFAR-10": reference_stats("cifar10"),
        "CelebA-64": reference_stats("celeba64"),
        "ImageNet-64": reference_stats("imagenet64"),
        "FFHQ-128": reference_stats("ffhq128"),
        "FFHQ-256": reference_stats("ffhq256"),
        "FFHQ-512": reference_stats("ffhq512"),
        "AFHQ-512": reference_stats("afhq512"),
    }.items()
}

# fmt: off
# Spec Appendix A derived EBFR weights (3 decimals): name -> (low_freqs, w_Y, w_Cb, w_Cr).
EXPECTED_WEIGHTS = {
    "CIFAR-10": (
        4,
        [1.594, 0.884, 0.928, 0.594],
        [2.125, 0.649, 0.733, 0.493],
        [2.076, 0.664, 0.742, 0.517],
    ),
    "CelebA-64": (
        4,
        [1.769, 0.896, 0.833, 0.501],
        [2.181, 0.699, 0.576, 0.543],
        [2.156, 0.723, 0.612, 0.509],
    ),
    "ImageNet-64": (
        4,
        [1.664, 0.862, 0.864, 0.61],
        [2.152, 0.67, 0.681, 0.498],
        [2.13, 0.675, 0.68, 0.515],
    ),
    "FFHQ-128": (
        9,
        [2.36, 1.257, 1.221, 0.749, 0.861, 0.794, 0.508, 0.638, 0.613],
        [2.767, 1.164, 1.063, 0.667, 0.667, 0.668, 0.667, 0.667, 0.667],
        [2.798, 1.213, 1.12, 0.636, 0.689, 0.636, 0.636, 0.636, 0.636],
    ),
    "FFHQ-256": (
        8,
        [2.588, 1.145, 1.108, 0.652, 0.758, 0.7, 0.473, 0.577],
        [2.816, 0.939, 0.903, 0.669, 0.669, 0.669, 0.667, 0.668],
        [2.857, 0.983, 0.953, 0.642, 0.641, 0.642, 0.64, 0.64],
    ),
    "FFHQ-512": (
        18,
        [
            3.58, 1.571, 1.516, 0.955, 1.023, 1.026, 0.75, 0.86, 0.826, 0.731, 0.546, 0.607, 0.694,
            0.749, 0.65, 0.686, 0.587, 0.643,
        ],
        [
            3.445, 1.128, 1.077, 0.821, 0.847, 0.828, 0.818, 0.821, 0.823, 0.819, 0.822, 0.82,
            0.822, 0.82, 0.826, 0.818, 0.82, 0.825,
        ],
        [
            3.527, 1.187, 1.158, 0.834, 0.885, 0.857, 0.794, 0.795, 0.797, 0.797, 0.797, 0.795,
            0.795, 0.795, 0.8, 0.793, 0.795, 0.799,
        ],
    ),
    "AFHQ-512": (
        18,
        [
            3.025, 1.507, 1.492, 1.051, 1.081, 1.023, 0.745, 0.895, 0.915, 0.815, 0.615, 0.692,
            0.765, 0.78, 0.634, 0.693, 0.597, 0.672,
        ],
        [
            3.403, 1.159, 1.124, 0.816, 0.894, 0.819, 0.811, 0.815, 0.817, 0.815, 0.817, 0.814,
            0.816, 0.814, 0.819, 0.81, 0.814, 0.819,
        ],
        [
            3.29, 1.088, 1.05, 0.839, 0.837, 0.842, 0.833, 0.838, 0.84, 0.839, 0.839, 0.837, 0.838,
            0.837, 0.841, 0.832, 0.837, 0.842,
        ],
    ),
}
# fmt: on


@pytest.mark.parametrize("name", sorted(EXPECTED_WEIGHTS))
def test_ebfr_weights_match_appendix_a(name):
    block_size, e_y, e_cb, e_cr = ENTROPIES[name]
    low_freqs, w_y, w_cb, w_cr = EXPECTED_WEIGHTS[name]
    w = stats.ebfr_weights(e_y, e_cb, e_cr, block_size, low_freqs)
    assert w.dtype == np.float32 and w.shape == (6 * low_freqs,)
    expected = np.array(4 * w_y + w_cb + w_cr)
    np.testing.assert_array_equal(np.round(w.astype(np.float64), 3), expected)
    # Each plane's weights have mean 1 before rounding.
    np.testing.assert_allclose(w.reshape(6, low_freqs).mean(axis=1), 1.0, rtol=1e-6)


def test_ebfr_weights_full_length_is_zigzag_permutation():
    e = np.arange(1.0, 17.0)
    w = stats.ebfr_weights(e, e, e, 4, 16)
    expected = np.array([0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]) + 1.0
    np.testing.assert_allclose(w[:16], expected / expected.mean(), rtol=1e-6)
    np.testing.assert_array_equal(w.reshape(6, 16), np.tile(w[:16], (6, 1)))


def make_images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, size, size, 3) natural-like images: a smooth random gradient plus sinusoids, a
    smooth per-channel tint (so chroma is non-trivial) and pixel noise; about 1 % saturated."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = np.empty((n, size, size, 3))
    for i in range(n):
        base = rng.uniform(60, 195) + rng.uniform(-60, 60) * xx + rng.uniform(-60, 60) * yy
        for _ in range(3):
            f = rng.uniform(1, size / 4, 2)
            phase = rng.uniform(0, 2 * np.pi)
            base = base + rng.uniform(5, 25) * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + phase)
        for ch in range(3):
            freq, phase = rng.uniform(0.5, 3), rng.uniform(0, 2 * np.pi)
            tint = rng.uniform(-25, 25) + rng.uniform(-20, 20) * np.sin(
                2 * np.pi * freq * xx + phase
            )
            out[i, ..., ch] = base + tint + rng.normal(0, 6, (size, size))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images():
    return make_images(32, 64, seed=0)


@pytest.fixture(scope="module")
def update():
    return jax.jit(stats.update_dct_stats)


def stream(update, batches, block_size):
    state = stats.init_dct_stats(block_size)
    for batch in batches:
        state = update(state, batch)
    return state


def order_statistic_gap(values: np.ndarray, q: float) -> float:
    """a_(r+1) - a_(r) around numpy's fractional rank (n - 1) q / 100."""
    a = np.sort(values)
    r = int(np.floor((a.size - 1) * q / 100))
    return float(a[min(r + 1, a.size - 1)] - a[r])


# Entropy tolerance (bits). The histogram path differs from the exact one only by the values near a
# cut point (101 coarse edges, lo, hi): values in a fine bin that a cut splits are shared in
# proportion to overlap, and lo/hi/eta are off by about the gap between neighbouring order
# statistics. Both move O(1) values between coarse bins; one moved value out of n shifts H by
# roughly |log2(p_i / p_j)| / n, i.e. ~0.001-0.005 bit for 8192-2048 values and ~0.01-0.02 bit for
# the 512 chroma blocks at B = 8 (measured here: 0.003, 0.002, 0.009 bit at B = 2, 4, 8; at most
# 0.011 over other seeds).
ENTROPY_TOL = {2: 0.01, 4: 0.01, 8: 0.02}


@pytest.mark.parametrize("block_size", [2, 4, 8])
def test_streaming_matches_exact(images, update, block_size):
    state = stream(update, np.split(images, 4), block_size)
    approx = stats.finalize_dct_stats(state)
    exact = stats.exact_dct_stats(images, block_size)

    blocks_y = images.shape[0] * (64 // block_size) ** 2
    assert (approx.num_blocks_y, approx.num_blocks_chroma) == (blocks_y, blocks_y // 4)
    assert (exact.num_blocks_y, exact.num_blocks_chroma) == (blocks_y, blocks_y // 4)
    assert approx.block_size == exact.block_size == block_size

    # Module docstring bound: |error| <= 2w + (a_(r+1) - a_(r)), plus 0.0005 rounding per side.
    y_dc = stats._exact_plane_coefficients(images, block_size)[0][:, 0]
    gap = max(order_statistic_gap(y_dc, q) for q in stats.PERCENTILES)
    w = 256 * block_size / stats.DEFAULT_NUM_BINS
    assert abs(approx.eta - exact.eta) <= 2 * w + gap + 1e-3
    if block_size < 8:  # with >= 8192 Y blocks the order-statistic gap is already < w here
        assert abs(approx.eta - exact.eta) <= w

    tol = ENTROPY_TOL[block_size]
    for plane in ("entropy_y", "entropy_cb", "entropy_cr"):
        np.testing.assert_allclose(getattr(approx, plane), getattr(exact, plane), atol=tol, rtol=0)
    # With the same eta, only the fine-histogram approximation remains.
    fixed = stats.finalize_dct_stats(state, eta=exact.eta)
    assert fixed.eta == exact.eta
    for plane in ("entropy_y", "entropy_cb", "entropy_cr"):
        np.testing.assert_allclose(getattr(fixed, plane), getattr(exact, plane), atol=tol, rtol=0)


def test_stats_sanity_b2(images):
    approx = stats.dct_stats_from_batches(np.split(images, 2), 2)
    exact = stats.exact_dct_stats(images, 2)
    for s in (approx, exact):
        assert 0 <= s.eta <= 128 * 2
        for e in (s.entropy_y, s.entropy_cb, s.entropy_cr):
            assert e.shape == (4,) and e.dtype == np.float64
            assert np.all((e >= 0) & (e <= np.log2(100)))
            np.testing.assert_array_equal(e, np.round(e, 3))
        # The Y DC coefficient carries the most information (spec: ~6.5 bits on real data).
        assert s.entropy_y[0] == max(s.entropy_y) and s.entropy_y[0] > s.entropy_cb[0]
    np.testing.assert_array_equal(
        approx.ebfr_weights(3),
        stats.ebfr_weights(approx.entropy_y, approx.entropy_cb, approx.entropy_cr, 2, 3),
    )


def test_merge_of_half_streams_equals_one_stream(images, update):
    batches = np.split(images, 4)
    full = stream(update, batches, 4)
    first, second = stream(update, batches[:2], 4), stream(update, batches[2:], 4)
    merged = stats.merge_dct_stats(first, second)
    np.testing.assert_array_equal(np.asarray(merged.counts), np.asarray(full.counts))
    a, b = stats.finalize_dct_stats(merged), stats.finalize_dct_stats(full)
    assert a.eta == b.eta
    np.testing.assert_array_equal(a.entropy_cr, b.entropy_cr)
    # Host-side int64 accumulation (past int32 range) keeps the wide dtype.
    host = stats.DCTStatsState(np.asarray(first.counts, np.int64))
    merged_host = stats.merge_dct_stats(host, second)
    assert merged_host.counts.dtype == np.int64
    np.testing.assert_array_equal(merged_host.counts, np.asarray(full.counts))


def test_exact_stats_hand_checked():
    # Grey 4x4 image whose 2x2 Y blocks are constant 0, 64, 192, 255: Y DC = 2 * (v - 128)
    # = [-256, -128, 128, 254]. numpy's P1.75 at rank 3 * 0.0175 = 0.0525 is
    # -256 + 0.0525 * 128 = -249.28; P98.25 at rank 2.9475 is 128 + 0.9475 * 126 = 247.385.
    img = np.kron(np.array([[0, 64], [192, 255]]), np.ones((2, 2)))
    img = np.repeat(img[None, :, :, None], 3, axis=-1).astype(np.uint8)
    s = stats.exact_dct_stats(img, 2)
    assert s.eta == 249.28
    assert (s.num_blocks_y, s.num_blocks_chroma) == (4, 1)
    # Strictly inside (lo, hi): -128 and 128, i.e. +-0.513 -> two coarse bins, 1 bit.
    assert s.entropy_y[0] == 1.0
    # With eta = 100 both kept values fall outside [-1, 1]: empty histogram -> 0 bits (Choice).
    assert stats.exact_dct_stats(img, 2, eta=100.0).entropy_y[0] == 0.0


def test_streaming_binning_hand_checked(update):
    # A mid-grey image has every level-shifted coefficient exactly 0: all counts land in the bin
    # just right of the 0 edge. A black image has Y DC = -128B: the first bin.
    grey = np.full((1, 8, 8, 3), 128, np.uint8)
    black = np.zeros((1, 8, 8, 3), np.uint8)
    state = update(stats.init_dct_stats(2, num_bins=1024), grey)
    counts = np.asarray(state.counts)
    assert counts.shape == (3, 4, 1024) and counts.dtype == np.int32
    np.testing.assert_array_equal(counts[0, :, 512], 16)
    np.testing.assert_array_equal(counts[1:, :, 512], 4)
    assert counts.sum() == 3 * 4 * 16 - 2 * 4 * 12
    state = update(state, black)
    assert np.asarray(state.counts)[0, 0, 0] == 16


@pytest.mark.parametrize("block_size", [3, 64, 0, True, "8"])
def test_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size"):
        stats.init_dct_stats(block_size)
    with pytest.raises(ValueError, match="block_size"):
        stats.exact_dct_stats(np.zeros((1, 8, 8, 3), np.uint8), block_size)
    with pytest.raises(ValueError, match="block_size"):
        stats.ebfr_weights([1.0] * 4, [1.0] * 4, [1.0] * 4, block_size, 1)


@pytest.mark.parametrize("num_bins", [1000, 1, 0, 2**21, 8192.0])
def test_bad_num_bins(num_bins):
    with pytest.raises(ValueError, match="num_bins"):
        stats.init_dct_stats(2, num_bins)


@pytest.mark.parametrize("low_freqs", [0, 17, -1, 2.0])
def test_bad_low_freqs(low_freqs):
    e = np.ones(16)
    with pytest.raises(ValueError, match=r"low_freqs.*(1\.\.16|\[1, 16\])"):
        stats.ebfr_weights(e, e, e, 4, low_freqs)


def test_bad_entropy_vectors():
    e = np.ones(16)
    with pytest.raises(ValueError, match=r"entropy_cb must have shape \(16,\)"):
        stats.ebfr_weights(e, np.ones(9), e, 4, 8)
    with pytest.raises(ValueError, match="entropy_y"):
        stats.ebfr_weights(np.ones((4, 4)), e, e, 4, 8)
    with pytest.raises(ValueError, match="entropy_cr"):
        stats.ebfr_weights(e, e, np.full(16, np.nan), 4, 8)
    with pytest.raises(ValueError, match="zero mean"):
        stats.ebfr_weights(np.zeros(16), e, e, 4, 8)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8, 3), np.uint8), "rank 4"),
        (np.zeros((1, 8, 8, 3), np.float32), "dtype"),
        (np.zeros((1, 8, 8, 1), np.uint8), "3 channels"),
        (np.zeros((1, 12, 8, 3), np.uint8), "not divisible by 8"),
    ],
)
def test_bad_images(update, bad, match):
    # Checked on static shapes and dtypes, so the error comes at trace time, before XLA compiles.
    state = stats.init_dct_stats(4)
    with pytest.raises(ValueError, match=match):
        stats.update_dct_stats(state, bad)
    with pytest.raises(ValueError, match=match):
        update(state, bad)
    with pytest.raises(ValueError, match=match):
        stats.exact_dct_stats(bad, 4)


def test_bad_states():
    with pytest.raises(ValueError, match="no blocks"):
        stats.finalize_dct_stats(stats.init_dct_stats(2))
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge_dct_stats(stats.init_dct_stats(2), stats.init_dct_stats(4))
    with pytest.raises(ValueError, match="B\\*B"):
        stats.finalize_dct_stats(stats.DCTStatsState(np.zeros((3, 5, 8192), np.int32)))
    with pytest.raises(ValueError, match="eta"):
        stats.exact_dct_stats(np.zeros((1, 4, 4, 3), np.uint8), 2, eta=-1.0)
    with pytest.raises(ValueError, match="eta came out 0"):
        stats.exact_dct_stats(np.full((1, 4, 4, 3), 128, np.uint8), 2)
    with pytest.raises(ValueError, match="num_bins=1048576 is too large for block_size=32"):
        stats.init_dct_stats(32, 2**20)

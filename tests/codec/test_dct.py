"""Block DCT against scipy.fft, zigzag against the JPEG standard and the spec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from dctjax.codec import (
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

# ITU-T T.81 Figure A.6: zigzag rank -> natural position (row-major).
JPEG_ZIGZAG_8 = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]  # fmt: skip
SPEC_ZIGZAG_4 = [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]
SPEC_UNZIGZAG_4 = [0, 1, 5, 6, 2, 4, 7, 12, 3, 8, 11, 13, 9, 10, 14, 15]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_dct_matrix_is_scipy_dct_and_orthonormal(n):
    m = dct_matrix(n, np.float64)
    np.testing.assert_allclose(m, scipy.fft.dct(np.eye(n), axis=0, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(m @ m.T, np.eye(n), atol=1e-12)


@pytest.mark.parametrize("b", [2, 4, 8, 16, 32])
def test_block_dct_matches_scipy_per_block(b):
    x = np.random.default_rng(b).uniform(-128, 128, (2, 2 * b, 4 * b, 3)).astype(np.float32)
    blocks = blockify(x, b)
    assert blocks.shape == (2, 2, 4, 3, b, b)
    # Block (p, q) covers rows pB.., cols qB.. of each channel.
    np.testing.assert_array_equal(np.asarray(blocks)[1, 1, 2, 0], x[1, b : 2 * b, 2 * b : 3 * b, 0])
    coeffs = np.asarray(block_dct(blocks))
    ref = scipy.fft.dctn(np.asarray(blocks, np.float64), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(coeffs, ref, atol=2e-3 * b)
    back = np.asarray(unblockify(block_idct(jnp.asarray(ref, jnp.float32))))
    np.testing.assert_allclose(back, x, atol=1e-3)
    ref_inv = scipy.fft.idctn(ref, axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(np.asarray(block_idct(jnp.asarray(ref))), ref_inv, atol=1e-3)


def test_block_dct_grad_jit_vmap():
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(4, 2, 2, 1, 4, 4)).astype(np.float32)

    def f(a):
        return jnp.sum(block_dct(blockify(a, 4)) * w)

    g = jax.jit(jax.grad(f))(x)
    # The DCT is linear and orthonormal: the gradient of <DCT(x), w> is IDCT(w).
    np.testing.assert_allclose(np.asarray(g), np.asarray(unblockify(block_idct(w))), atol=1e-5)
    v = jax.vmap(lambda a: block_dct(blockify(a[None], 4))[0])(x)
    np.testing.assert_allclose(np.asarray(v), np.asarray(block_dct(blockify(x, 4))), atol=1e-5)


def test_zigzag_orders():
    assert zigzag_order(8).tolist() == JPEG_ZIGZAG_8
    assert zigzag_order(4).tolist() == SPEC_ZIGZAG_4
    assert inverse_zigzag_order(4).tolist() == SPEC_UNZIGZAG_4
    assert zigzag_order(2).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("b", [2, 4, 8, 16, 32])
def test_zigzag_walks_antidiagonals(b):
    z = zigzag_order(b)
    assert sorted(z.tolist()) == list(range(b * b))
    u, v = z // b, z % b
    s = u + v
    assert np.all(np.diff(s) >= 0)  # anti-diagonals in order
    for d in range(2 * b - 1):
        us = u[s == d]
        expected = np.sort(us)[::-1] if d % 2 == 0 else np.sort(us)
        np.testing.assert_array_equal(us, expected)
    np.testing.assert_array_equal(inverse_zigzag_order(b)[z], np.arange(b * b))


def test_to_from_zigzag_truncation():
    c = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    z = np.asarray(to_zigzag(c))
    np.testing.assert_array_equal(z[0], np.arange(16)[SPEC_ZIGZAG_4])
    np.testing.assert_array_equal(np.asarray(from_zigzag(z, 4)), c)
    t = np.asarray(from_zigzag(z[:, :6], 4)).reshape(2, 16)
    kept = np.zeros(16, bool)
    kept[SPEC_ZIGZAG_4[:6]] = True
    np.testing.assert_array_equal(t[:, kept], c.reshape(2, 16)[:, kept])
    assert np.all(t[:, ~kept] == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="block_size=3 is not supported"):
        blockify(np.zeros((1, 6, 6, 1), np.float32), 3)
    with pytest.raises(ValueError, match="not divisible by 8"):
        blockify(np.zeros((1, 12, 16, 1), np.float32), 8)
    with pytest.raises(ValueError, match="rank 4"):
        blockify(np.zeros((12, 16), np.float32), 4)
    with pytest.raises(ValueError, match="two equal block axes"):
        block_dct(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="valid is 1..16"):
        from_zigzag(np.zeros((2, 17), np.float32), 4)
    with pytest.raises(ValueError, match="dtype"):
        block_dct(np.zeros((2, 4, 4), np.int32))

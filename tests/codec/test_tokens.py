"""DCTdiff tokens against a per-block NumPy/scipy/OpenCV transcription of the reference encoder."""

import jax
import numpy as np
import pytest
import scipy.fft

from dctjax.codec.tokens import (
    images_to_planes,
    images_to_tokens,
    planes_to_tokens,
    token_grid,
    tokens_to_images,
    tokens_to_planes,
)


def _zigzag(b):
    # Spec 2.1, written out independently of the codec: walk anti-diagonals, even ones bottom-up.
    cells = sorted(
        ((u, v) for u in range(b) for v in range(b)),
        key=lambda c: (c[0] + c[1], -c[0] if (c[0] + c[1]) % 2 == 0 else c[0]),
    )
    return [u * b + v for u, v in cells]


def reference_tokens(img, b, low_freqs, eta):
    """One uint8 HxWx3 image -> (N, 6L), following dctdiff.md section 2 literally, per block."""
    x = img.astype(np.float64)
    r, g, bl = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    h, w = y.shape
    cb = cb.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    cr = cr.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    zz = _zigzag(b)

    def coeffs(plane, p, q):
        blk = plane[p * b : (p + 1) * b, q * b : (q + 1) * b] - 128
        return scipy.fft.dctn(blk, norm="ortho").reshape(-1)[zz][:low_freqs]

    tokens = []
    for i in range(h // (2 * b)):
        for j in range(w // (2 * b)):
            blocks = [coeffs(y, 2 * i + rr, 2 * j + qq) for rr in (0, 1) for qq in (0, 1)]
            blocks += [coeffs(cb, i, j), coeffs(cr, i, j)]
            tokens.append(np.concatenate(blocks) / eta)
    return np.stack(tokens)


def _images(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 128 + 90 * np.sin(
        6 * yy[..., None] + 4 * xx[..., None] + rng.uniform(0, 6, (n, 1, 1, 3))
    )
    return np.clip(base + rng.normal(0, 20, (n, h, w, 3)), 0, 255).astype(np.uint8)


SETTINGS = [(2, 4, 242.382), (4, 9, 480.25), (4, 8, 485.0), (8, 18, 969.5), (16, 40, 1900.0)]


@pytest.mark.parametrize("b,low_freqs,eta", SETTINGS)
def test_tokens_match_reference_encoder(b, low_freqs, eta):
    imgs = _images(2, 4 * b, 6 * b, seed=b)
    tok = np.asarray(images_to_tokens(imgs, b, low_freqs, eta))
    assert tok.shape == (2, 2 * 3, 6 * low_freqs) and tok.dtype == np.float32
    for n in range(2):
        np.testing.assert_allclose(tok[n], reference_tokens(imgs[n], b, low_freqs, eta), atol=2e-5)


@pytest.mark.parametrize("b", [2, 4, 8, 16, 32])
def test_full_round_trip_reproduces_420_planes(b):
    imgs = _images(1, 2 * b, 4 * b, seed=3)
    y, c = images_to_planes(imgs)
    eta = 128.0 * b
    y2, c2 = tokens_to_planes(
        images_to_tokens(imgs, b, b * b, eta), b, b * b, eta, (2 * b, 4 * b), clip=None
    )
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y), atol=2e-3)
    np.testing.assert_allclose(np.asarray(c2), np.asarray(c), atol=2e-3)
    # Independent check of the planes themselves.
    ycc = (
        np.asarray(imgs, np.float64)
        @ np.array(
            [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
        ).T
    )
    np.testing.assert_allclose(np.asarray(y)[0, ..., 0], ycc[0, ..., 0] - 128, atol=1e-3)
    chroma = ycc[0, ..., 1:].reshape(b, 2, 2 * b, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.asarray(c)[0], chroma, atol=1e-3)


@pytest.mark.parametrize("b", [2, 4, 8])
def test_grayscale_round_trip_is_exact(b):
    g = np.random.default_rng(b).integers(0, 256, (3, 4 * b, 2 * b, 1), dtype=np.uint8)
    imgs = np.repeat(g, 3, axis=-1)
    eta = 0.93 * 128 * b
    tok = images_to_tokens(imgs, b, b * b, eta)
    # Pure noise exceeds the +-2 clip at extreme DC only if eta is tiny; here |tok| <= 128B/eta.
    out = np.asarray(tokens_to_images(tok, b, b * b, eta, image_size=(4 * b, 2 * b)))
    np.testing.assert_array_equal(out, imgs)


def test_chroma_linear_ramp_is_exact_away_from_border():
    from dctjax.codec import chroma_downsample, chroma_upsample

    h = w = 32
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chroma_full = np.stack([2.0 * (xx - 15.5), 1.5 * (yy - 15.5)], -1)[None]  # level-shifted Cb, Cr
    y = np.zeros((1, h, w, 1), np.float32)
    tok = planes_to_tokens(y, chroma_downsample(chroma_full), 4, 16, 512.0)
    _, c = tokens_to_planes(tok, 4, 16, 512.0, clip=None)
    up = np.asarray(chroma_upsample(c))
    np.testing.assert_allclose(up[0, 1:-1, 1:-1], chroma_full[0, 1:-1, 1:-1], atol=1e-3)
    assert np.abs(up[0, 0, :, 1] - chroma_full[0, 0, :, 1]).max() > 0.1  # the border is not


def test_truncation_layout_and_rounding_modes():
    imgs = _images(2, 16, 16, seed=9)
    eta = 480.25
    t_full = np.asarray(images_to_tokens(imgs, 4, 16, eta)).reshape(2, 4, 6, 16)
    t8 = np.asarray(images_to_tokens(imgs, 4, 8, eta)).reshape(2, 4, 6, 8)
    np.testing.assert_allclose(t8, t_full[..., :8], atol=1e-6)  # block-major, zigzag prefix
    near = np.asarray(tokens_to_images(t8.reshape(2, 4, 48), 4, 8, eta)).astype(int)
    trunc = np.asarray(tokens_to_images(t8.reshape(2, 4, 48), 4, 8, eta, rounding="truncate"))
    diff = near - trunc.astype(int)
    assert set(np.unique(diff)) <= {0, 1}
    assert 0.3 < diff.mean() < 0.7  # truncation lowers pixels by about 0.5 on average


def test_decode_clips_to_two():
    tok = np.zeros((1, 4, 24), np.float32)
    tok[:, :, 0] = 50.0  # far outside the data range
    a = tokens_to_planes(tok, 2, 4, 242.0)[0]
    tok[:, :, 0] = 2.0
    b = tokens_to_planes(tok, 2, 4, 242.0)[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b))


def test_jit_vmap_grad():
    imgs = _images(3, 16, 16, seed=1)
    enc = jax.jit(lambda x: images_to_tokens(x, 4, 9, 480.25))
    t = enc(imgs)
    tv = jax.vmap(lambda x: images_to_tokens(x[None], 4, 9, 480.25)[0])(imgs)
    np.testing.assert_allclose(np.asarray(tv), np.asarray(t), atol=1e-5)
    dec = jax.jit(lambda x: tokens_to_planes(x, 4, 9, 480.25)[0].sum())
    g = jax.grad(dec)(t)
    assert g.shape == t.shape and np.all(np.isfinite(np.asarray(g)))
    y, c = images_to_planes(imgs)
    np.testing.assert_allclose(
        np.asarray(planes_to_tokens(y, c, 4, 9, 480.25)), np.asarray(t), atol=1e-6
    )


def test_bad_input_is_rejected_before_tracing():
    imgs = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"low_freqs=17 is out of range; valid values are 1..16"):
        images_to_tokens(imgs, 4, 17, 480.0)
    with pytest.raises(ValueError, match="low_freqs=0"):
        images_to_tokens(imgs, 4, 0, 480.0)
    with pytest.raises(ValueError, match="not divisible by 16"):
        images_to_tokens(np.zeros((1, 24, 32, 3), np.uint8), 8, 4, 900.0)
    with pytest.raises(ValueError, match="dtype"):
        images_to_tokens(imgs.astype(np.float32), 4, 4, 480.0)
    with pytest.raises(ValueError, match="rank 4"):
        images_to_tokens(imgs[0], 4, 4, 480.0)
    with pytest.raises(ValueError, match="eta must be a positive"):
        images_to_tokens(imgs, 4, 4, 0.0)
    with pytest.raises(ValueError, match="block_size=5"):
        images_to_tokens(imgs, 5, 4, 480.0)
    with pytest.raises(ValueError, match="needs 6\\*low_freqs=24"):
        tokens_to_images(np.zeros((1, 16, 30), np.float32), 4, 4, 480.0)
    with pytest.raises(ValueError, match="do not form a square grid"):
        tokens_to_images(np.zeros((1, 8, 24), np.float32), 4, 4, 480.0)
    with pytest.raises(ValueError, match="rounding='floor'"):
        tokens_to_images(np.zeros((1, 4, 24), np.float32), 4, 4, 480.0, rounding="floor")
    assert token_grid(64, 32, 4) == (8, 4)

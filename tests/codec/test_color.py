"""JFIF colour conversion and 4:2:0 chroma resampling against OpenCV, Pillow and closed-form math."""

import jax
import numpy as np
import pytest
from PIL import Image

from dctjax.codec import chroma_downsample, chroma_upsample, rgb_to_ycbcr, ycbcr_to_rgb

cv2 = pytest.importorskip("cv2")


def _rgb(seed=0, shape=(2, 16, 24, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_rgb_to_ycbcr_matches_opencv_float():
    rgb = _rgb()
    ours = np.asarray(rgb_to_ycbcr(rgb)) / 255.0
    # OpenCV's float conversion uses BT.601 with delta 0.5 on [0, 1] data; channel order Y, Cr, Cb.
    ref = np.stack([cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2YCrCb) for im in rgb])
    np.testing.assert_allclose(ours[..., 0], ref[..., 0], atol=1e-5)
    # On [0, 1] data OpenCV's chroma offset is 0.5 where JFIF's is 128/255; its chroma gains
    # (0.564, 0.713) are the JFIF ones rounded to 3 digits.
    shift = 0.5 - 128.0 / 255.0
    np.testing.assert_allclose(ours[..., 1] + shift, ref[..., 2], atol=5e-4)
    np.testing.assert_allclose(ours[..., 2] + shift, ref[..., 1], atol=5e-4)


def test_rgb_to_ycbcr_matches_pillow_to_rounding():
    rgb = _rgb(1)[0]
    ref = np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float64)
    ours = np.asarray(rgb_to_ycbcr(rgb[None]))[0]
    assert np.abs(ours - ref).max() <= 1.0  # Pillow converts in fixed point and rounds


def test_closed_form_constants_and_level_shift():
    rgb = _rgb(2).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ref = np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
            0.5 * r - 0.418688 * g - 0.081312 * b + 128,
        ],
        -1,
    )
    np.testing.assert_allclose(np.asarray(rgb_to_ycbcr(rgb.astype(np.float32))), ref, atol=1e-3)
    shifted = np.asarray(rgb_to_ycbcr(rgb.astype(np.float32), level_shift=True))
    np.testing.assert_allclose(shifted, ref - 128, atol=1e-3)


def test_ycbcr_to_rgb_inverts_to_float_precision():
    rgb = _rgb(3).astype(np.float32)
    back = np.asarray(ycbcr_to_rgb(rgb_to_ycbcr(rgb)))
    # The JFIF inverse constants are given to 6 digits, so the round trip is exact to ~1e-3.
    np.testing.assert_allclose(back, rgb, atol=5e-3)
    back2 = np.asarray(ycbcr_to_rgb(rgb_to_ycbcr(rgb, level_shift=True), level_shift=True))
    np.testing.assert_allclose(back2, rgb, atol=5e-3)


def test_chroma_downsample_equals_opencv_half_linear():
    x = np.random.default_rng(4).uniform(-128, 128, (2, 16, 12, 2)).astype(np.float32)
    ours = np.asarray(chroma_downsample(x))
    ref = np.stack([cv2.resize(im, (6, 8), interpolation=cv2.INTER_LINEAR) for im in x])
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 8, 8, 2), (2, 5, 7, 2), (1, 1, 3, 2)])
def test_chroma_upsample_equals_opencv_double_linear(shape):
    x = np.random.default_rng(5).uniform(-128, 128, shape).astype(np.float32)
    ours = np.asarray(chroma_upsample(x))
    h, w = shape[1:3]
    ref = np.stack([cv2.resize(im, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR) for im in x])
    np.testing.assert_allclose(ours, ref.reshape(ours.shape), atol=1e-3)


def test_chroma_upsample_equals_jax_image_resize_linear():
    x = np.random.default_rng(6).uniform(-1, 1, (2, 6, 10, 2)).astype(np.float32)
    ref = jax.image.resize(x, (2, 12, 20, 2), method="linear")
    np.testing.assert_allclose(np.asarray(chroma_upsample(x)), np.asarray(ref), atol=1e-5)


def test_jit_vmap_and_grad():
    x = np.random.default_rng(7).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    f = jax.jit(lambda a: chroma_upsample(chroma_downsample(rgb_to_ycbcr(a)[..., 1:])))
    np.testing.assert_allclose(
        np.asarray(jax.vmap(lambda a: f(a[None])[0])(x)), np.asarray(f(x)), atol=1e-4
    )
    g = jax.grad(lambda a: f(a).sum())(x)
    assert np.all(np.isfinite(np.asarray(g)))


def test_bad_input():
    with pytest.raises(ValueError, match="rgb must have 3 channels"):
        rgb_to_ycbcr(np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="not divisible by 2"):
        chroma_downsample(np.zeros((1, 5, 4, 2), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        chroma_upsample(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        chroma_upsample(np.zeros((1, 4, 4, 2), np.int32))

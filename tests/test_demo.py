"""The codec demo behind the README's first command."""

import numpy as np
from PIL import Image

from dctjax.demo import codec_demo, psnr


def test_psnr_closed_form():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 5, np.uint8)
    assert abs(psnr(a, b) - 10 * np.log10(255.0**2 / 25.0)) < 1e-9
    assert psnr(a, a) == float("inf")


def test_codec_demo_writes_a_faithful_grid(tmp_path):
    out = tmp_path / "demo.png"
    figs = codec_demo(str(out), resolution=64, num_images=3)
    grid = np.asarray(Image.open(out))
    assert grid.shape == (3 * 64, 3 * 64, 3)
    originals, from_tokens = grid[:64], grid[64:128]
    assert abs(psnr(originals, from_tokens) - figs["tokens_psnr_db"]) < 1e-6
    assert figs["tokens_psnr_db"] > 28 and figs["sparse_psnr_db"] > 28
    assert 0 < figs["eta"] <= 128 * 4

"""IJG quantization tables against Pillow/libjpeg and the spec's formulas."""

import io

import numpy as np
import pytest
from PIL import Image

from dctjax.codec import dequantize, quant_table, quantize, round_half_away
from dctjax.codec.quant import BASE_CHROMA, BASE_LUMA


def _pillow_tables(quality: int):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=2)
    q = Image.open(io.BytesIO(buf.getvalue())).quantization
    return np.array(q[0]).reshape(8, 8), np.array(q[1]).reshape(8, 8)


@pytest.mark.parametrize("quality", [1, 10, 23, 24, 35, 50, 75, 90, 95, 100])
def test_tables_equal_pillow(quality):
    luma, chroma = _pillow_tables(quality)
    np.testing.assert_array_equal(quant_table(quality, 8, "luma"), luma)
    np.testing.assert_array_equal(quant_table(quality, 8, "chroma"), chroma)


def test_quality_50_is_the_base_table_and_100_clamps_to_one():
    np.testing.assert_array_equal(quant_table(50, 8, "luma"), BASE_LUMA)
    np.testing.assert_array_equal(quant_table(50, 8, "chroma"), BASE_CHROMA)
    assert np.all(quant_table(100, 8, "luma") == 1)


@pytest.mark.parametrize("b", [2, 4, 16, 32])
def test_nearest_resize_for_other_block_sizes(b):
    for kind, base in (("luma", BASE_LUMA), ("chroma", BASE_CHROMA)):
        t = quant_table(75, b, kind)
        assert t.shape == (b, b)
        for r in range(b):
            for c in range(b):
                # s(75) = 50: Q = floor((50 T + 50) / 100).
                assert t[r, c] == max(1, (base[8 * r // b, 8 * c // b] * 50 + 50) // 100)


def test_quantize_rounds_half_away_from_zero():
    np.testing.assert_array_equal(
        np.asarray(round_half_away(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49]))),
        [-3, -2, -1, 1, 2, 3, 0],
    )
    table = np.full((2, 2), 4, np.int32)
    c = np.array([[[10.0, -10.0], [2.0, -1.9]]], np.float32)
    v = np.asarray(quantize(c, table))
    np.testing.assert_array_equal(v, [[[3, -3], [1, 0]]])
    np.testing.assert_array_equal(np.asarray(dequantize(v, table)), [[[12, -12], [4, 0]]])


def test_bad_input():
    with pytest.raises(ValueError, match=r"quality=0 is out of range; valid values are 1..100"):
        quant_table(0)
    with pytest.raises(ValueError, match="quality=101"):
        quant_table(101)
    with pytest.raises(ValueError, match="kind='cb'"):
        quant_table(50, 8, "cb")
    with pytest.raises(ValueError, match="block_size=6"):
        quant_table(50, 6)
    with pytest.raises(ValueError, match="same block size"):
        quantize(np.zeros((2, 4, 4), np.float32), quant_table(50, 8))

"""Synthetic shapes dataset: determinism, format, structure, speed."""

import time

import numpy as np
import pytest
from PIL import Image

from dctjax.data import synthetic


def test_format_and_determinism():
    src = synthetic.SyntheticShapes(24, num_examples=10, num_classes=3, seed=5)
    assert len(src) == 10
    ex = src[7]
    assert ex["image"].shape == (24, 24, 3) and ex["image"].dtype == np.uint8
    assert ex["label"].dtype == np.int32 and ex["label"].shape == ()
    again = synthetic.SyntheticShapes(24, num_examples=10, num_classes=3, seed=5)[7]
    np.testing.assert_array_equal(ex["image"], again["image"])
    assert ex["label"] == again["label"]
    other_seed = synthetic.SyntheticShapes(24, num_classes=3, seed=6)[7]
    other_split = synthetic.SyntheticShapes(24, num_classes=3, seed=5, split="test")[7]
    assert not np.array_equal(ex["image"], other_seed["image"])
    assert not np.array_equal(ex["image"], other_split["image"])
    batch = src.__getitems__([7, 1])
    np.testing.assert_array_equal(batch[0]["image"], ex["image"])


def test_labels_cover_classes():
    src = synthetic.SyntheticShapes(8, num_classes=6)
    labels = np.array([src[i]["label"] for i in range(300)])
    assert set(labels.tolist()) == set(range(6))
    assert np.bincount(labels).min() > 20  # roughly balanced


def test_same_scene_at_any_resolution():
    hi = synthetic.SyntheticShapes(128)[3]["image"]
    lo = synthetic.SyntheticShapes(32)[3]["image"]
    down = np.asarray(Image.fromarray(hi).resize((32, 32), Image.Resampling.BOX))
    assert np.abs(down.astype(int) - lo).mean() < 4


def test_images_have_shapes_on_smooth_backgrounds():
    src = synthetic.SyntheticShapes(64)
    for i in range(20):
        img = src[i]["image"].astype(np.float64)
        # A shape edge gives large local jumps; the background alone would not.
        jumps = np.abs(np.diff(img, axis=1)).max(axis=-1)
        assert jumps.max() > 40
        assert (jumps > 40).mean() < 0.1
        assert img.std() > 10


def test_speed_64():
    src = synthetic.SyntheticShapes(64)
    src[0]
    t = time.perf_counter()
    for i in range(200):
        src[i]
    assert 200 / (time.perf_counter() - t) > 100  # ~1,400/s on one free core


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.SyntheticShapes(32, num_classes=99)
    with pytest.raises(ValueError, match="available splits"):
        synthetic.SyntheticShapes(32, split="validation")
    with pytest.raises(IndexError):
        synthetic.SyntheticShapes(32, num_examples=3)[3]

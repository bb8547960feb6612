"""make_source: tfds datasets (through tfds.testing.mock_data), synthetic, and errors."""

import io
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from dctjax.data import pipeline, sources


@pytest.mark.parametrize(
    "name, resolution, num_classes",
    [("cifar10", 32, 10), ("celeb_a", 64, None), ("imagenet_resized/64x64", 64, 1000)],
)
def test_tfds_datasets_through_pipeline(name, resolution, num_classes):
    with tfds.testing.mock_data(num_examples=12):
        src = sources.make_source(name, "train")
        assert len(src) == 12 and src.num_classes == num_classes
        ds = pipeline.make_dataset(src, global_batch_size=4, seed=0, num_epochs=1)
        batches = list(ds)
    assert len(batches) == 3
    for b in batches:
        assert b["image"].shape == (4, resolution, resolution, 3)
        assert b["image"].dtype == np.uint8
        assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    labels = np.concatenate([b["label"] for b in batches])
    if num_classes is None:
        np.testing.assert_array_equal(labels, 0)
    else:
        assert labels.min() >= 0 and labels.max() < num_classes and len(set(labels)) > 1


def _pil_crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Independent oracle: PIL crop (left, upper, right, lower), then PIL's bicubic resize."""
    img = Image.fromarray(image).crop(box)
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def test_celeb_a_reference_crop():
    with tfds.testing.mock_data(num_examples=3):
        raw = tfds.data_source("celeb_a", split="train", download=False)[2]["image"]
        ex = sources.make_source("celeb_a", "train")[2]
    assert raw.shape == (218, 178, 3)
    # U-ViT/DCTdiff: Crop(x1=121-64, x2=121+64, y1=89-64, y2=89+64) -> img.crop((y1, x1, y2, x2)).
    expected = _pil_crop_resize(raw, (89 - 64, 121 - 64, 89 + 64, 121 + 64), 64)
    np.testing.assert_array_equal(ex["image"], expected)


def test_tfds_resize_and_grayscale():
    with tfds.testing.mock_data(num_examples=3):
        raw = tfds.data_source("cifar10", split="test", download=False)[1]
        ex = sources.make_source("cifar10", "test", resolution=16)[1]
        gray = sources.make_source("mnist", "train")[0]["image"]
    np.testing.assert_array_equal(ex["image"], _pil_crop_resize(raw["image"], (0, 0, 32, 32), 16))
    assert ex["label"] == raw["label"]
    assert gray.shape == (28, 28, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_real_array_record_tfds_dir(tmp_path):
    """A genuine (not mocked) cifar10 array_record directory, written here without download."""
    features = tfds.builder("cifar10").info.features
    version_dir = tmp_path / "cifar10" / "3.0.2"
    version_dir.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    writer = ArrayRecordWriter(str(version_dir / "cifar10-train.array_record-00000-of-00001"), "")
    for i, image in enumerate(images):
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        ex = {"id": f"train_{i}", "image": png.getvalue(), "label": 7 - i}
        writer.write(features.serialize_example(ex))
    writer.close()
    split = tfds.core.SplitInfo(
        name="train", shard_lengths=[3], num_bytes=0, filename_template=None
    )
    tfds.folder_dataset.write_metadata(
        data_dir=version_dir, features=features, split_infos=[split], check_data=False
    )
    src = sources.make_source("cifar10", "train", data_dir=str(tmp_path))
    assert len(src) == 3 and src.num_classes == 10
    for i in range(3):
        np.testing.assert_array_equal(src[i]["image"], images[i])
        assert src[i]["label"] == 7 - i
    assert sources.make_source("cifar10", "train[1:]", data_dir=str(tmp_path))[0]["label"] == 6
    with pytest.raises(sources.UnknownSplitError, match=r"no split 'test'.*\['train'\]"):
        sources.make_source("cifar10", "test", data_dir=str(tmp_path))


def test_synthetic_through_make_source():
    src = sources.make_source("synthetic", "test", resolution=16, num_examples=5, num_classes=2)
    assert len(src) == 5 and src.num_classes == 2
    assert src[4]["image"].shape == (16, 16, 3)


def test_errors(tmp_path):
    with pytest.raises(sources.UnknownDatasetError, match="no_such_dataset"):
        sources.make_source("no_such_dataset", "train")
    with pytest.raises(sources.UnknownSplitError, match=r"\['test', 'train'\]"):
        sources.make_source("synthetic", "validation")
    with pytest.raises(sources.DatasetNotPreparedError, match="download=True") as e:
        sources.make_source("cifar10", "train", data_dir=str(tmp_path / "tfds"))
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(sources.DatasetNotPreparedError, match="prepare_data.py --input="):
        sources.make_source(str(tmp_path / "missing"), "train")
    with pytest.raises(ValueError, match="data_dir"):
        sources.make_source("folder", "train")


def _write_idx(path, array):
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_idx_source_reads_mnist_format(tmp_path):
    """Files in the MNIST idx format (header per LeCun's spec), written here; the reader is checked
    against the arrays and, where Debian's Fashion-MNIST is installed, against its known sizes."""
    import pickle

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    src = sources.make_source("idx", "test", data_dir=str(tmp_path))
    assert len(src) == 7
    ex = src[3]
    assert ex["image"].shape == (28, 28, 3) and ex["label"] == labels[3]
    np.testing.assert_array_equal(ex["image"][..., 1], images[3])
    src32 = pickle.loads(
        pickle.dumps(sources.make_source("idx", "test", data_dir=str(tmp_path), resolution=32))
    )
    assert src32[0]["image"].shape == (32, 32, 3)
    with pytest.raises(sources.DatasetNotPreparedError, match="dataset-fashion-mnist"):
        sources.make_source("idx", "train", data_dir=str(tmp_path))
    with pytest.raises(sources.UnknownSplitError):
        sources.make_source("idx", "validation", data_dir=str(tmp_path))
    (tmp_path / "bad").mkdir()
    with open(tmp_path / "bad" / "x", "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        sources.read_idx(tmp_path / "bad" / "x")
    if os.path.isdir(sources.FASHION_MNIST_DIR):
        fm = sources.make_source("idx", "test")
        assert len(fm) == 10_000 and fm[0]["image"].shape == (28, 28, 3)


def test_photo_crops_are_deterministic_labelled_crops(monkeypatch):
    """'photo_crops' on photos generated here (scikit-image's are monkeypatched out): photo p is
    a horizontal ramp in channel 0 and the constant 40 p in channel 1, so every crop of item i must
    carry label i % 3, channel 1 == 40 * label, and a channel-0 ramp inside the photo's range whose
    span (crop side) stays within [min_side, max_fraction * min(H, W)]."""
    import pickle

    ramp = np.tile(np.arange(200, dtype=np.uint8)[None, :], (150, 1))
    photos = [np.stack([ramp, np.full_like(ramp, 40 * p), ramp[:, ::-1]], -1) for p in range(3)]
    monkeypatch.setattr(sources, "_skimage_photos", lambda names: photos[: len(names)])
    src = sources.make_source("photo_crops", "train", resolution=16, num_examples=30,
                              photos=("a", "b", "c"), min_side=8, max_fraction=0.5)  # fmt: skip
    assert len(src) == 30 and src.num_classes == 3
    sides = []
    for i in range(30):
        ex = src[i]
        assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.uint8
        assert int(ex["label"]) == i % 3
        np.testing.assert_array_equal(ex["image"][..., 1], 40 * (i % 3))
        row = ex["image"][8, :, 0].astype(int)
        assert np.all(np.diff(row) >= 0)  # a left-to-right ramp survives resizing
        sides.append(row[-1] - row[0])
    # the resized ramp spans ~ (side - 1) * 15 / 16 grey levels: side in [8, 75]
    assert 4 <= min(sides) and max(sides) <= 75 and len(set(sides)) > 5
    again = pickle.loads(pickle.dumps(src))  # grain workers get a pickled copy
    np.testing.assert_array_equal(again[7]["image"], src[7]["image"])
    test = sources.make_source("photo_crops", "test", resolution=16, num_examples=30,
                               photos=("a", "b", "c"), min_side=8)  # fmt: skip
    assert not np.array_equal(test[7]["image"], src[7]["image"])  # another seed per split
    with pytest.raises(IndexError):
        src[30]
    with pytest.raises(sources.UnknownSplitError, match="photo_crops"):
        sources.make_source("photo_crops", "validation")


def test_photo_crops_without_scikit_image_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        sources.make_source("photo_crops", "train")[0]

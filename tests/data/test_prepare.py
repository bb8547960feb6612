"""prepare_folder: conversion checked pixel for pixel against PIL, labels, errors, resume."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dctjax.data import prepare, sources

RES = 24
REPO = Path(__file__).resolve().parents[2]


def _rng_image(rng, h, w, c=3):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Two classes; RGB PNG, grayscale, palette, RGBA, JPEGs (one nested), a small and a corrupt
    file. Sorted order: cats/a b c | cats/d dogs/e dogs/g (corrupt) | dogs/h dogs/nested/f."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "cats").mkdir()
    (root / "dogs" / "nested").mkdir(parents=True)
    Image.fromarray(_rng_image(rng, 40, 52)).save(root / "cats/a_rgb.png")
    Image.fromarray(_rng_image(rng, 30, 30, 1)[..., 0], "L").save(root / "cats/b_gray.png")
    pal = Image.fromarray(rng.integers(0, 16, (36, 28), dtype=np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
    pal.save(root / "cats/c_palette.png")
    rgba = _rng_image(rng, 33, 33, 4)
    rgba[..., 3] = np.where(rgba[..., 3] > 127, 255, 0)  # binary alpha: exact expected pixels
    Image.fromarray(rgba, "RGBA").save(root / "cats/d_rgba.png")
    smooth = np.asarray(Image.fromarray(_rng_image(rng, 6, 5)).resize((40, 48), Image.BILINEAR))
    Image.fromarray(smooth).save(root / "dogs/e.jpg", quality=90)
    Image.fromarray(_rng_image(rng, 26, 44)).save(root / "dogs/nested/f.jpeg", quality=80)
    good = (root / "dogs/e.jpg").read_bytes()
    (root / "dogs/g_corrupt.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(_rng_image(rng, 16, 20)).save(root / "dogs/h_small.png")
    (root / "dogs/notes.txt").write_text("not an image")
    return root


def _expected(path: Path) -> np.ndarray:
    """Independent oracle: decode with PIL, RGB by hand, centre crop, PIL bicubic resize."""
    img = Image.open(path)
    a = np.asarray(img)
    if img.mode == "L":
        a = np.repeat(a[..., None], 3, axis=-1)
    elif img.mode == "P":
        a = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[a]
    elif img.mode == "RGBA":
        a = np.where(a[..., 3:] > 0, a[..., :3], 255).astype(np.uint8)
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(a[top : top + s, left : left + s])
    return np.asarray(crop.resize((RES, RES), Image.Resampling.BICUBIC))


def _dataset_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def clean(image_folder, tmp_path_factory) -> tuple[Path, prepare.PrepareSummary]:
    out = tmp_path_factory.mktemp("clean") / "ds"
    summary = prepare.prepare_folder(
        image_folder, out, RES, labels="folders", skip_corrupt=True, shard_size=3, workers=2,
        progress=False,
    )  # fmt: skip
    return out, summary


def test_pixels_and_labels(image_folder, clean):
    out, summary = clean
    assert summary.complete and summary.num_files == 8 and summary.num_examples == 7
    assert summary.skipped_corrupt == ["dogs/g_corrupt.jpg"]
    assert summary.upscaled == 1 and summary.num_classes == 2
    assert summary.converted_modes == {"L": 1, "P": 1, "RGBA": 1}
    src = sources.make_source(str(out), "train")
    assert len(src) == 7 and src.num_classes == 2
    names = ["a_rgb.png", "b_gray.png", "c_palette.png", "d_rgba.png", "e.jpg", "h_small.png"]
    files = (
        [f"cats/{n}" for n in names[:4]] + [f"dogs/{n}" for n in names[4:]] + ["dogs/nested/f.jpeg"]
    )
    for i, f in enumerate(files):
        ex = src[i]
        assert ex["image"].shape == (RES, RES, 3) and ex["image"].dtype == np.uint8
        np.testing.assert_array_equal(ex["image"], _expected(image_folder / f), err_msg=f)
        assert ex["label"] == (0 if f.startswith("cats") else 1)
    # It is a plain tfds dataset directory.
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["label"].names == ["cats", "dogs"]
    assert builder.info.metadata["resolution"] == RES
    # Reading at another resolution resizes.
    assert sources.make_source("folder", "train", data_dir=str(out), resolution=8)[0][
        "image"
    ].shape == (8, 8, 3)


def test_corrupt_file_error_then_resume(image_folder, clean, tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(prepare.CorruptImageError, match="dogs/g_corrupt.jpg"):
        prepare.prepare_folder(
            image_folder, out, RES, labels="folders", shard_size=3, progress=False
        )
    with pytest.raises(sources.DatasetNotPreparedError, match="incomplete"):
        sources.make_source(str(out), "train")
    summary = prepare.prepare_folder(
        image_folder, out, RES, labels="folders", skip_corrupt=True, shard_size=3, progress=False
    )
    assert summary.shards_reused == 1 and summary.shards_written == 2
    assert _dataset_files(out) == _dataset_files(clean[0])


def test_resume_after_partial_run_and_lost_shard(image_folder, clean, tmp_path):
    out = tmp_path / "ds"
    kwargs = dict(labels="folders", skip_corrupt=True, shard_size=3, progress=False)
    partial = prepare.prepare_folder(image_folder, out, RES, max_shards=1, **kwargs)
    assert not partial.complete and not (out / "dataset_info.json").exists()
    prepare.prepare_folder(image_folder, out, RES, **kwargs)
    assert _dataset_files(out) == _dataset_files(clean[0])
    next(out.glob("*.array_record-00001-of-00003")).unlink()
    again = prepare.prepare_folder(image_folder, out, RES, **kwargs)
    assert again.shards_written == 1 and again.shards_reused == 2
    assert _dataset_files(out) == _dataset_files(clean[0])


def test_small_images_skip_and_unlabelled(image_folder, tmp_path):
    summary = prepare.prepare_folder(
        image_folder, tmp_path / "ds", RES, skip_corrupt=True, small_images="skip", progress=False
    )
    assert summary.skipped_small == ["dogs/h_small.png"] and summary.num_examples == 6
    src = sources.make_source(str(tmp_path / "ds"), "train")
    assert src.num_classes is None and src[0]["label"] == 0


def test_bad_inputs(image_folder, clean, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="No image files"):
        prepare.prepare_folder(tmp_path / "empty", tmp_path / "o1", RES)
    with pytest.raises(FileNotFoundError):
        prepare.prepare_folder(tmp_path / "nowhere", tmp_path / "o2", RES)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (30, 30)).save(loose / "x.png")
    with pytest.raises(ValueError, match="class sub-folder"):
        prepare.prepare_folder(loose, tmp_path / "o3", RES, labels="folders")
    with pytest.raises(ValueError, match="different|other settings"):
        prepare.prepare_folder(image_folder, clean[0], RES + 1, labels="folders", shard_size=3)
    with pytest.raises(ValueError, match="not empty"):
        prepare.prepare_folder(loose, image_folder / "cats", RES)
    with pytest.raises(sources.UnknownSplitError, match=r"\['train'\]"):
        sources.make_source(str(clean[0]), "test")


def test_cli(image_folder, tmp_path):
    out = tmp_path / "ds"
    cmd = [
        sys.executable, str(REPO / "launch/prepare_data.py"), f"--input={image_folder / 'cats'}",
        f"--output={out}", "--resolution=16", "--small_images=skip",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, timeout=120)
    src = sources.make_source(str(out), "train")
    assert len(src) == 4 and src[0]["image"].shape == (16, 16, 3)

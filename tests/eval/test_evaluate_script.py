"""dctjax.eval.evaluate and launch/evaluate.py with a fake feature extractor (the Inception network
is never loaded)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import app
from PIL import Image

from dctjax.data.synthetic import SyntheticShapes
from dctjax.eval import evaluate as lib
from dctjax.eval import metrics
from tests.eval.test_metrics import fake_feature_fn

ROOT = Path(__file__).resolve().parents[2]
MODULE = "dctjax_launch_evaluate"


@pytest.fixture(scope="module")
def ev():
    if MODULE not in sys.modules:  # absl flags can be defined once per process
        spec = importlib.util.spec_from_file_location(MODULE, ROOT / "launch" / "evaluate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[MODULE]


@pytest.fixture(scope="module")
def images():
    src = SyntheticShapes(16, num_examples=24)
    return np.stack([src[i]["image"] for i in range(24)])


@pytest.fixture(scope="module")
def feature_fn():
    return fake_feature_fn(pool3_dim=12, spatial_dim=6)


@pytest.fixture(scope="module")
def ref_path(ev, feature_fn, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    lib.compute_reference(
        feature_fn, dataset="synthetic", resolution=16, num=24, out=str(path), batch_size=10,
        max_keep=24,
    )  # fmt: skip
    return path


def test_compute_reference(ref_path, images, feature_fn):
    ref = metrics.load_reference(ref_path)
    assert ref.count == 24 and ref.features.shape == (24, 12)
    meta = ref.metadata
    assert meta["dataset"] == "synthetic" and meta["split"] == "train"
    assert meta["resolution"] == 16 and meta["num"] == 24 and meta["jpeg_quality"] is None
    assert "SyntheticShapes" in meta["source"]
    feats = feature_fn(images)["pool3"].astype(np.float64)
    np.testing.assert_allclose(ref.mu["pool3"], feats.mean(0), atol=1e-10)
    np.testing.assert_allclose(ref.sigma["pool3"], np.cov(feats, rowvar=False), atol=1e-10)


def test_evaluate_images_from_array_npz_npy_and_folder(ev, ref_path, images, feature_fn, tmp_path):
    out = lib.evaluate_images(images, feature_fn, str(ref_path), batch_size=7)
    assert out["num_samples"] == 24 and abs(out["fid"]) < 1e-6 and abs(out["sfid"]) < 1e-6
    assert out["precision"] == 1.0 and out["recall"] == 1.0

    np.savez(tmp_path / "s.npz", images=images)
    np.savez(tmp_path / "g.npz", arr_0=images)  # guided-diffusion's sample files
    np.save(tmp_path / "s.npy", images)
    png = tmp_path / "png"
    png.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(png / f"{i:03d}.png")
    for path in ("s.npz", "g.npz", "s.npy", "png"):
        got = lib.evaluate_images(tmp_path / path, feature_fn, str(ref_path), batch_size=5)
        assert got == pytest.approx(out, abs=1e-9), path
    n, batches = lib.read_image_batches(str(png), 10, num=15)
    assert n == 15 and [len(b) for b in batches] == [10, 5]


def test_jpeg_folder_equals_in_memory_roundtrip(ev, ref_path, images, feature_fn, tmp_path):
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i:03d}.jpg", quality=95, subsampling="4:2:0")
    from_files = lib.evaluate_images(str(tmp_path), feature_fn, str(ref_path))
    in_memory = lib.evaluate_images(images, feature_fn, str(ref_path), jpeg_quality=95)
    assert from_files == in_memory and from_files["fid"] > 0


def test_evaluate_images_errors(ev, ref_path, images, feature_fn, tmp_path):
    with pytest.raises(ValueError, match="8x8 but the reference"):
        lib.evaluate_images(images[:, ::2, ::2], feature_fn, str(ref_path))
    np.savez(tmp_path / "bad.npz", pictures=images)
    with pytest.raises(ValueError, match="no images or arr_0 entry"):
        lib.read_image_batches(str(tmp_path / "bad.npz"), 8)
    np.savez(tmp_path / "float.npz", images=images / 255.0)
    with pytest.raises(ValueError, match="uint8"):
        lib.read_image_batches(str(tmp_path / "float.npz"), 8)
    with pytest.raises(FileNotFoundError):
        lib.read_image_batches(str(tmp_path / "nothing.npz"), 8)
    with pytest.raises(FileNotFoundError, match="--compute_ref"):
        lib.evaluate_images(images, feature_fn, str(tmp_path / "missing.npz"))


def test_data_settings_from_config(ev):
    from configs import quickstart

    c = quickstart.get_config()
    s = lib.data_settings(c)
    assert s == {
        "dataset": "synthetic", "split": "train", "data_dir": None, "resolution": 32,
        "kwargs": {"num_examples": 50_000},
    }  # fmt: skip
    s = lib.data_settings(c, resolution=16, split="test", dataset=None)
    assert s["resolution"] == 16 and s["split"] == "test" and s["dataset"] == "synthetic"
    assert lib.data_settings(c, dataset="cifar10")["kwargs"] == {}
    assert lib.data_settings(None, dataset="cifar10")["split"] == "train"
    with pytest.raises(ValueError, match="--dataset"):
        lib.data_settings(None)


@pytest.fixture
def run_main(ev, feature_fn, monkeypatch):
    monkeypatch.setattr(ev, "_feature_fn", lambda: feature_fn)

    def run(*args):
        ev.FLAGS.unparse_flags()
        ev.FLAGS(["evaluate.py", *args])
        try:
            ev.main([])
        finally:
            ev.FLAGS.unparse_flags()

    return run


def test_main_compute_ref_then_samples(run_main, images, tmp_path, capsys):
    ref = tmp_path / "ref.npz"
    config = ROOT / "configs" / "quickstart.py"
    run_main("--compute_ref", f"--config={config}", "--resolution=16", "--num=24",
             f"--out={ref}", "--batch_size=8", "--max_keep=24")  # fmt: skip
    assert "24 images" in capsys.readouterr().out
    meta = metrics.load_reference(ref).metadata
    assert meta["dataset"] == "synthetic" and meta["resolution"] == 16

    np.savez(tmp_path / "s.npz", images=images)
    out_json = tmp_path / "fid.json"
    run_main(f"--samples={tmp_path / 's.npz'}", f"--ref={ref}", "--jpeg_quality=95",
             f"--out_json={out_json}")  # fmt: skip
    printed = capsys.readouterr().out
    assert "fid" in printed and "sfid" in printed and "jpeg_quality=95" in printed
    assert "dataset=synthetic" in printed
    result = json.loads(out_json.read_text())
    assert result["jpeg_quality"] == 95 and result["reference"]["path"] == str(ref)
    assert result["metrics"]["num_samples"] == 24 and result["metrics"]["fid"] > 0
    assert set(result["metrics"]) == {"fid", "sfid", "precision", "recall", "num_samples"}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_main_usage_errors(run_main, tmp_path):
    with pytest.raises(app.UsageError, match="exactly one"):
        run_main()
    with pytest.raises(app.UsageError, match="exactly one"):
        run_main("--compute_ref", "--samples=x.npz")
    with pytest.raises(app.UsageError, match="--out"):
        run_main("--compute_ref", "--dataset=synthetic")
    with pytest.raises(app.UsageError, match="--ref"):
        run_main("--samples=x.npz")


def test_help_subprocess():
    r = subprocess.run(
        [sys.executable, "launch/evaluate.py", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr  # absl exits 1
    for flag in ("--compute_ref", "--samples", "--ref", "--workdir", "--jpeg_quality"):
        assert flag in r.stdout


def test_evaluate_workdir_samples_a_checkpoint(ev, trained_workdir, tmp_path):
    """The --workdir path: samples from the checkpoint's EMA weights against a 32px reference."""
    feature_fn = fake_feature_fn(pool3_dim=8, spatial_dim=4)
    ref = tmp_path / "ref32.npz"
    lib.compute_reference(
        feature_fn, dataset="synthetic", resolution=32, num=16, out=str(ref), batch_size=8,
        max_keep=16,
    )  # fmt: skip
    reference = metrics.load_reference(ref)
    out = lib.evaluate_workdir(
        str(trained_workdir), feature_fn, reference, num=10, batch_size=8, sampler="ddim", nfe=3
    )
    assert out["num_samples"] == 10 and np.isfinite(out["fid"]) and out["fid"] > 0
    assert 0.0 <= out["precision"] <= 1.0 and 0.0 <= out["recall"] <= 1.0
    again = lib.evaluate_workdir(
        str(trained_workdir), feature_fn, reference, num=10, batch_size=8, sampler="ddim", nfe=3
    )
    assert again["fid"] == pytest.approx(out["fid"], rel=1e-6)
    wrong = tmp_path / "ref16.npz"
    lib.compute_reference(
        feature_fn, dataset="synthetic", resolution=16, num=8, out=str(wrong), batch_size=8
    )
    with pytest.raises(ValueError, match="32x32"):
        lib.evaluate_workdir(
            str(trained_workdir), feature_fn, metrics.load_reference(wrong), num=4, batch_size=8
        )

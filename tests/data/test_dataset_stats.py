"""launch/dct_stats.py and its library function against direct computations."""

import json
import subprocess
import sys

import numpy as np
import pytest

from dctjax.codec import sparse
from dctjax.data import sources
from dctjax.data.dataset_stats import dataset_statistics, length_summary
from dctjax.data.reference_stats import load_stats
from dctjax.data.stats import dct_stats_from_batches, exact_dct_stats
from dctjax.representations import make_representation


@pytest.fixture(scope="module")
def source():
    return sources.make_source("synthetic", "train", resolution=32, num_examples=24)


def test_statistics_match_exact_definitions(source, tmp_path):
    out = dataset_statistics(
        source, 2, 4, num_images=20, batch_size=8, seed=1, quality=75, sparse_block_size=8
    )
    idx = np.sort(np.random.default_rng(1).permutation(24)[:20])
    images = np.stack([source[int(i)]["image"] for i in idx])
    # The driver pools exactly the drawn images (test_stats.py bounds streaming vs exact).
    streamed = dct_stats_from_batches([images[:8], images[8:]], 2)
    assert out["num_images"] == 20 and out["eta"] == streamed.eta
    np.testing.assert_array_equal(out["entropy_cr"], streamed.entropy_cr)
    exact = exact_dct_stats(images, 2)
    assert abs(out["eta"] - exact.eta) < 0.01 * exact.eta
    np.testing.assert_allclose(out["entropy_y"], exact.entropy_y, atol=0.05)
    np.testing.assert_allclose(out["ebfr_weights"][:4], np.asarray(out["ebfr_weights"][4:8]))
    lengths = [
        int(np.count_nonzero(sparse.np_images_to_dct_image(im, 8, 75, 1200))) + 1 for im in images
    ]
    assert out["sparse"]["mean"] == pytest.approx(np.mean(lengths))
    assert out["sparse"]["max_length"] == int(np.ceil(np.percentile(lengths, 95)))
    path = tmp_path / "s.json"
    path.write_text(json.dumps(out))
    loaded = load_stats(path)
    assert loaded.eta == out["eta"] and loaded.low_freqs == 4
    rep = make_representation("dct_tokens", resolution=32, block_size=2, stats=str(path))
    np.testing.assert_allclose(rep.loss_weights(), out["ebfr_weights"], atol=1e-6)


def test_length_summary_closed_form():
    s = length_summary(np.arange(1, 101), 8, 75, 1200)
    assert s["mean"] == 50.5 and s["min"] == 1 and s["max"] == 100
    assert s["percentiles"]["95"] == pytest.approx(95.05) and s["max_length"] == 96
    assert sum(s["histogram"]["counts"]) == 100


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="low_freqs=5"):
        dataset_statistics(source, 2, 5)
    with pytest.raises(ValueError, match="quality=0"):
        dataset_statistics(source, 2, 4, quality=0)


def test_cli(tmp_path):
    out = tmp_path / "stats.json"
    cmd = [
        sys.executable, "launch/dct_stats.py", "--data=synthetic", "--resolution=32",
        "--block_size=4", "--low_freqs=8", "--num_images=16", "--batch_size=8", "--quality=50",
        f"--output={out}",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    stats = json.loads(out.read_text())
    assert stats["block_size"] == 4 and len(stats["entropy_y"]) == 16
    assert len(stats["ebfr_weights"]) == 48 and stats["sparse"]["quality"] == 50

"""Shipped DCTdiff statistics against the spec's section 5 table, JSON round trip and errors."""

import json

import numpy as np
import pytest

from dctjax.data.reference_stats import REFERENCE_STATS, load_stats, reference_stats

# dctdiff.md section 5: name -> (B, L, eta).
SPEC_TABLE = {
    "cifar10": (2, 4, 242.382),
    "celeba64": (2, 4, 244.925),
    "imagenet64": (2, 4, 247.125),
    "ffhq128": (4, 9, 480.25),
    "ffhq256": (4, 8, 485.0),
    "ffhq512": (8, 18, 969.5),
    "afhq512": (8, 18, 928.0),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_values_match_the_spec_table(name):
    s = reference_stats(name)
    assert (s.block_size, s.low_freqs, s.eta) == SPEC_TABLE[name]
    for v in (s.entropy_y, s.entropy_cb, s.entropy_cr):
        assert len(v) == s.block_size**2 and 0.9 < min(v) and max(v) < np.log2(100)
    w = s.loss_weights()
    assert w.shape == (6 * s.low_freqs,)
    np.testing.assert_allclose(w.reshape(6, -1).mean(axis=1), 1.0, rtol=1e-6)


def test_celeba_weights_check_values():
    # dctdiff.md section 4.4 check values.
    w = reference_stats("celeba64").loss_weights().reshape(6, 4)
    np.testing.assert_allclose(w[0], [1.769, 0.896, 0.833, 0.501], atol=5e-4)
    np.testing.assert_allclose(w[4], [2.181, 0.699, 0.576, 0.543], atol=5e-4)


def test_json_round_trip_and_errors(tmp_path):
    s = REFERENCE_STATS["ffhq256"]
    path = tmp_path / "stats.json"
    s.to_json(path)
    assert load_stats(path) == s
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"eta": 1.0}))
    with pytest.raises(ValueError, match="missing .*block_size.*launch/dct_stats.py"):
        load_stats(bad)
    with pytest.raises(ValueError, match="no reference DCT statistics for 'lsun'"):
        reference_stats("lsun")

"""configs/common.py: the variance-matching snr_scale read from dct_stats --choices, and the pixel
baseline variant."""

import json

import numpy as np
import pytest

from configs import common, dctdiff_cifar10, quickstart
from dctjax.data import dct_choices, sources
from dctjax.representations import make_representation


def test_rule_snr_scale_is_v_pixels_over_v_tokens_of_the_choices_table(tmp_path):
    """A statistics JSON with --choices written here from 64 synthetic images: rule_snr_scale(L)
    reads c(L), equal to the mean per-dimension variance of u/127.5 - 1 over that of the tokens
    with L frequencies (NumPy, on the same images); missing choices / L are clear errors."""
    src = sources.make_source("synthetic", "train", resolution=32, num_examples=64)
    images = np.stack([src[i]["image"] for i in range(64)])
    eta = 250.0
    choices = dct_choices.dct_choices([images], 4, eta, 8, candidates=[4, 8])
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"eta": eta, "choices": choices}))
    for low_freqs in (4, 8):
        rep = make_representation(
            "dct_tokens", resolution=32, block_size=4, low_freqs=low_freqs, eta=eta
        )
        tokens = np.asarray(rep.encode(images), np.float64).reshape(64, -1)
        v_pix = (images / 127.5 - 1.0).reshape(64, -1).var(axis=0).mean()
        expected = v_pix / tokens.var(axis=0).mean()
        assert common.rule_snr_scale(str(path), low_freqs) == pytest.approx(expected, abs=0.006)
    c = common.dctdiff_config(
        name="x", dataset="synthetic", resolution=32, block_size=4, low_freqs=8, stats=str(path),
        snr_scale="rule", size="T", batch_size=8, lr=1e-3, pixel_patch_size=8,
    )  # fmt: skip
    assert c.diffusion.snr_scale == common.rule_snr_scale(str(path), 8)
    with pytest.raises(ValueError, match="low_freqs=16"):
        common.rule_snr_scale(str(path), 16)
    path.write_text(json.dumps({"eta": eta}))
    with pytest.raises(ValueError, match="--choices"):
        common.rule_snr_scale(str(path), 8)


def test_quickstart_uses_the_rule_and_its_pixel_baseline_equal_tokens_at_c_1():
    c = quickstart.get_config()
    assert c.diffusion.snr_scale == common.rule_snr_scale(quickstart.STATS, 8)
    p = quickstart.get_config("pixel")
    assert (p.representation, p.model) == ("pixels", "uvit_pixel")
    assert p.model_kwargs.patch_size == 2 * c.representation_kwargs.block_size  # equal tokens
    assert p.diffusion.snr_scale == 1.0
    assert dctdiff_cifar10.get_config("pixel").diffusion.snr_scale == 1.0
    assert dctdiff_cifar10.get_config().diffusion.snr_scale == 2.0  # the paper's value

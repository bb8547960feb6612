"""The three representations: shapes, round trips against the codec's definitions, loss weights,
chunked training examples and configuration errors (all raised before compilation)."""

import jax
import ml_collections
import numpy as np
import pytest

from dctjax import codec
from dctjax import representations as reps
from dctjax.autoregressive import chunking
from dctjax.codec import sparse
from dctjax.data.reference_stats import reference_stats
from dctjax.data.synthetic import SyntheticShapes


def _images(n=2, res=32):
    src = SyntheticShapes(res, num_examples=n, seed=3)
    return np.stack([src[i]["image"] for i in range(n)])


def test_registry_lists_the_four():
    assert reps.registered() == ["dct_tokens", "latents", "pixels", "sparse_dct"]


def test_pixels_closed_form_and_exact_round_trip():
    r = reps.make_representation("pixels", resolution=32)
    imgs = _images()
    x = np.asarray(jax.jit(r.encode)(imgs))
    np.testing.assert_allclose(x, imgs / 127.5 - 1.0, atol=1e-6)
    assert x.shape[1:] == r.shape and r.loss_weights() is None
    np.testing.assert_array_equal(np.asarray(r.decode(x)), imgs)


def test_dct_tokens_from_reference_stats():
    r = reps.make_representation(
        "dct_tokens", resolution=32, block_size=2, low_freqs=4, stats="cifar10"
    )
    assert r.eta_value == 242.382 and r.shape == (64, 24)
    w = r.loss_weights()
    # CIFAR-10 EBFR check values (dctdiff.md Appendix A).
    np.testing.assert_allclose(w[:4], [1.594, 0.884, 0.928, 0.594], atol=5e-4)
    np.testing.assert_allclose(w[16:20], [2.125, 0.649, 0.733, 0.493], atol=5e-4)
    imgs = _images()
    x = np.asarray(jax.jit(r.encode)(imgs))
    assert x.shape == (2, *r.shape)
    out = np.asarray(jax.jit(r.decode)(x))
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    # L = B^2: only 4:2:0 is lost, so the round trip equals a 4:2:0-only round trip (+-1 rounding).
    only_420 = np.asarray(codec.planes_to_images(*codec.images_to_planes(imgs)))
    assert np.abs(out.astype(int) - only_420).max() <= 1


def test_dct_tokens_with_stats_json_and_explicit_eta(tmp_path):
    path = tmp_path / "s.json"
    reference_stats("ffhq128").to_json(path)
    r = reps.make_representation(
        "dct_tokens", resolution=64, block_size=4, low_freqs=9, stats=str(path)
    )
    assert r.eta_value == 480.25 and r.loss_weights().shape == (54,)
    r2 = reps.make_representation(
        "dct_tokens", resolution=64, block_size=4, low_freqs=9, eta=480.25
    )
    assert r2.loss_weights() is None
    imgs = _images(1, 64)
    np.testing.assert_array_equal(np.asarray(r.encode(imgs)), np.asarray(r2.encode(imgs)))


def test_from_config():
    cfg = ml_collections.ConfigDict(
        dict(
            representation="dct_tokens",
            resolution=64,
            representation_kwargs=dict(block_size=2, low_freqs=4, stats="celeba64"),
        )
    )
    r = reps.from_config(cfg)
    assert isinstance(r, reps.DCTTokens) and r.resolution == 64


def test_sparse_dct_encode_decode_and_vocab():
    r = reps.make_representation("sparse_dct", resolution=32, block_size=8, quality=75, clip=1200)
    assert r.vocab_sizes == dict(channel=193, position=16, value=2401)
    assert r.padded_length == 3 * 16 * 64 // 2 + 1
    imgs = _images()
    seq = jax.jit(r.encode)(imgs)
    expected = sparse.images_to_dct_image(imgs, 8, 75, 1200)
    np.testing.assert_array_equal(
        np.asarray(sparse.sequence_to_dct_image(seq, 8, r.grid_shape)), np.asarray(expected)
    )
    np.testing.assert_array_equal(
        np.asarray(r.decode(seq)), np.asarray(sparse.dct_image_to_images(expected, 8, 75))
    )
    host = r.host_encode(imgs[0])
    assert int(host.length) == int(seq.length[0])


def test_sparse_training_examples_filter_and_chunk():
    r = reps.make_representation(
        "sparse_dct",
        resolution=32,
        block_size=4,
        quality=90,
        chunk_size=16,
        overlap=4,
        max_length=10**6,
    )
    img = _images(1)[0]
    seq = r.host_encode(img)
    length = int(seq.length)
    # max_length far above L': keep probability L'/max_length is tiny, so most draws drop it.
    kept = sum(r.training_example(img, (0, i)) is not None for i in range(200))
    p = chunking.keep_probability(length, 10**6)
    assert abs(kept / 200 - p) < 5 * np.sqrt(p * (1 - p) / 200) + 1e-9
    r_all = reps.make_representation(
        "sparse_dct", resolution=32, block_size=4, quality=90, chunk_size=16, overlap=4
    )
    ex = r_all.training_example(img, (0, 1))
    assert ex["input_channel"].shape == (20,) and ex["encoder_image"].shape == (8, 8, 48)
    i = int(ex["chunk_index"])
    ref = chunking.make_chunk(seq, i, 4, (8, 8), 1200, chunk_size=16, overlap=4)
    for k in ref:
        np.testing.assert_array_equal(ex[k], ref[k])


def test_colorization_example_starts_at_chroma():
    r = reps.make_representation(
        "sparse_dct", resolution=32, block_size=4, quality=90, chunk_size=16, overlap=4,
        order="luma_first", colorization=True,
    )  # fmt: skip
    img = _images(1)[0]
    ex = r.training_example(img, 5)
    luma = np.asarray(ex["encoder_image"])[..., :16]
    dense = sparse.np_images_to_dct_image(img, 4, 90, 1200)
    np.testing.assert_array_equal(luma, dense[..., :16])  # all luma is context


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("voxels", {}, "unknown representation 'voxels'"),
        ("pixels", dict(resolution=32, block_size=4), "takes no argument"),
        ("dct_tokens", dict(resolution=36, block_size=4, eta=1.0), "resolution=36 is not divisible by 2\\*block_size=8"),
        ("dct_tokens", dict(resolution=32, block_size=4, low_freqs=17, eta=1.0), "low_freqs=17"),
        ("dct_tokens", dict(resolution=32, block_size=4), "needs eta"),
        ("dct_tokens", dict(resolution=32, block_size=4, stats="cifar10"), "statistics are for block_size=2"),
        ("dct_tokens", dict(resolution=32, block_size=2, stats="lsun"), "no reference DCT statistics"),
        ("sparse_dct", dict(resolution=24, block_size=8), "resolution=24 is not divisible by 2\\*block_size=16"),
        ("sparse_dct", dict(resolution=32, quality=0), "quality=0"),
        ("sparse_dct", dict(resolution=32, clip=0), "clip=0"),
        ("sparse_dct", dict(resolution=32, order="random"), "order='random'"),
        ("sparse_dct", dict(resolution=32, colorization=True), "Set order='luma_first'"),
    ],
)  # fmt: skip
def test_bad_configuration(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        reps.make_representation(name, **kwargs)

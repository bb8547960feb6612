"""Every representation fed by the one pipeline, on tfds mock data with the real builder names."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dctjax import codec
from dctjax.autoregressive import chunking
from dctjax.data import pipeline, sources
from dctjax.representations import make_representation

BUILDERS = [("cifar10", 32), ("celeb_a", 64), ("imagenet_resized/64x64", 64)]


@pytest.mark.parametrize("name,resolution", BUILDERS)
def test_device_representations(name, resolution):
    with tfds.testing.mock_data(num_examples=8):
        src = sources.make_source(name, "train")
        batch = next(iter(pipeline.make_dataset(src, global_batch_size=4, seed=1)))
    images = batch["image"]
    pixels = make_representation("pixels", resolution=resolution)
    np.testing.assert_allclose(
        np.asarray(jax.jit(pixels.encode)(images)), images / 127.5 - 1, atol=1e-6
    )
    tok = make_representation("dct_tokens", resolution=resolution, block_size=2, stats="celeba64")
    x = jax.jit(tok.encode)(images)
    assert x.shape == (4, *tok.shape)
    np.testing.assert_allclose(
        np.asarray(x), np.asarray(codec.images_to_tokens(images, 2, 4, 244.925)), atol=1e-5
    )


@pytest.mark.parametrize("name,resolution", BUILDERS)
def test_sparse_dct_host_transform(name, resolution):
    rep = make_representation(
        "sparse_dct", resolution=resolution, block_size=8, quality=75, chunk_size=32, overlap=8
    )
    with tfds.testing.mock_data(num_examples=8):
        src = sources.make_source(name, "train")
        ds = pipeline.make_dataset(
            src, global_batch_size=4, seed=0, num_epochs=1, shuffle=False, random_flip=False,
            representation=rep,
        )  # fmt: skip
        batches = list(ds)
        first = src[0]["image"]
    assert len(batches) == 2
    b = batches[0]
    g = resolution // 8
    assert b["input_channel"].shape == (4, 40) and b["encoder_image"].shape == (4, g, g, 192)
    assert b["label"].shape == (4,)
    # The chunk the pipeline drew for example 0 equals make_chunk on the codec's own sequence.
    seq = rep.host_encode(first)
    ref = chunking.make_chunk(
        seq, int(b["chunk_index"][0]), 8, (g, g), 1200, chunk_size=32, overlap=8
    )
    for k, v in ref.items():
        np.testing.assert_array_equal(b[k][0], v)


def test_length_filter_drops_examples_but_batches_stay_full():
    rep = make_representation(
        "sparse_dct", resolution=32, block_size=8, quality=75, chunk_size=32, overlap=8,
        max_length=10**9,
    )  # fmt: skip
    src = sources.make_source("synthetic", "train", resolution=32, num_examples=64)
    ds = pipeline.make_dataset(src, global_batch_size=4, seed=0, num_epochs=1, representation=rep)
    assert list(ds) == []  # keep probability ~1e-6 each: everything is dropped
    rep_keep = make_representation(
        "sparse_dct", resolution=32, block_size=8, quality=75, chunk_size=32, overlap=8,
        max_length=1,
    )  # fmt: skip
    ds = pipeline.make_dataset(
        src, global_batch_size=4, seed=0, num_epochs=1, representation=rep_keep
    )
    assert len(list(ds)) == 16

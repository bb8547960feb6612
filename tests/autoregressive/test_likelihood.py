"""Held-out bits per subpixel (`likelihood.BitsPerSubpixel`, spec §3.6) against a direct
computation: every chunk of each image built independently with `chunking.make_chunk`, the
family's model run on them, the NLL of the targets taken in NumPy from the sequence itself and
summed per image; and the chunks of a sequence cover each predicted element exactly once.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dctransformer_quickstart
from dctjax.autoregressive import chunking, likelihood
from dctjax.data import synthetic
from dctjax.families.autoregressive import Autoregressive
from dctjax.representations import SparseDCT
from dctjax.train import loop


def randomize(model: nnx.Module, seed: int) -> nnx.Module:
    """Random weights in place (no initialisers run): ReZero alphas +-U(0.5, 1.5) instead of 0,
    kernels N(0, 1 / fan_in), embeddings N(0, 1), biases N(0, 0.1^2), scales 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param):
            continue
        shape, name = tuple(node.shape), path[-1]
        if name == "alpha":
            new = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
        elif name == "kernel":
            new = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
        elif name == "bias":
            new = 0.1 * rng.standard_normal(shape)
        elif name == "scale":
            new = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            new = rng.standard_normal(shape)
        node.set_value(jnp.asarray(new, jnp.float32))
    return model


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def patch_image() -> np.ndarray:
    """Mid-grey with one coloured luma block: a sequence of a single chunk."""
    out = np.full((32, 32, 3), 128, np.uint8)
    out[8:12, 12:16] = (200, 100, 50)
    return out


@pytest.fixture(scope="module")
def setup():
    config = dctransformer_quickstart.get_config("runlocal")  # size T, 32px, B=4, 48 / 16
    model, _ = loop.build(config)
    abstract = jax.eval_shape(model.init_fn, jax.random.key(0))
    params = nnx.state(randomize(nnx.merge(model.graphdef, abstract), 0), nnx.Param)
    source = synthetic.SyntheticShapes(32, split="test")
    images = [source[0]["image"], patch_image(), source[1]["image"]]
    return model, params, images


def reference_nll(model, params, images) -> list[np.ndarray]:
    """Per image, (n, 3) NLL (channel, position, value) of each of its chunks, computed
    directly: chunks i = 1..n from `make_chunk`, one forward pass, NumPy log-softmaxes."""
    rep = model.representation
    n_c, o, clip = rep.chunk_size, rep.overlap, rep.clip
    seqs = [rep.host_encode(image) for image in images]
    todo = []  # (image index, chunk index, chunk)
    for idx, seq in enumerate(seqs):
        for i in range(1, -(-int(seq.length) // n_c) + 1):
            chunk = chunking.make_chunk(seq, i, rep.block_size, rep.grid_shape, clip, n_c, o)
            todo.append((idx, i, chunk))
    batch = {k: jnp.asarray(np.stack([c[k] for _, _, c in todo])) for k in todo[0][2]}
    batch["label"] = jnp.zeros(len(todo), jnp.int32)
    logits = jax.jit(lambda p, b: Autoregressive.forward(model, p, b, None))(params, batch)
    ch, pos, val = (log_softmax(np.asarray(x)) for x in logits)
    out = [[] for _ in images]
    for row, (idx, i, _) in enumerate(todo):
        seq, length, a = seqs[idx], int(seqs[idx].length), (i - 1) * n_c
        nll = np.zeros(3)
        for j in range(o, o + n_c):  # the loss slots; slot j predicts u_k
            k = a - o + j + 1
            if k > length:
                break
            nll[0] -= ch[row, j, int(seq.channel[k - 1])]
            if k < length:  # not STOP
                nll[1] -= pos[row, j, int(seq.position[k - 1])]
                nll[2] -= val[row, j, int(seq.value[k - 1]) + clip]
        assert len(out[idx]) == i - 1
        out[idx].append(nll)
    return [np.array(x) for x in out]


def test_bits_per_subpixel_equals_a_direct_computation(setup):
    model, params, images = setup
    rep = model.representation
    nll_fn = jax.jit(likelihood.make_nll_fn(model))
    evaluator = likelihood.BitsPerSubpixel(nll_fn, rep, images, None, batch_size=4)
    out = evaluator(params, step=3)

    per_image = reference_nll(model, params, images)
    counts = [x.shape[0] for x in per_image]
    assert counts[1] == 1 and counts[0] > 2 and counts[2] > 2  # chunk 1 only for the patch
    assert evaluator.num_chunks == sum(counts) and sum(counts) % 4  # a padded last batch
    subpixels_ln2 = math.log(2) * 3 * 32 * 32
    bpd = np.array([x.sum(0) for x in per_image]) / subpixels_ln2  # (images, 3)
    rtol = 2e-5

    np.testing.assert_allclose(out["bpd"], bpd.sum(-1).mean(), rtol=rtol)
    for t, term in enumerate(("channel", "position", "value")):
        np.testing.assert_allclose(out[f"bpd_{term}"], bpd[:, t].mean(), rtol=rtol)
    np.testing.assert_allclose(
        out["bpd_channel"] + out["bpd_position"] + out["bpd_value"], out["bpd"], rtol=1e-6
    )
    assert set(out) == {"bpd", "bpd_channel", "bpd_position", "bpd_value"} | {
        f"bpd_chunk_{i}" for i in range(1, max(counts) + 1)
    }
    for i in range(1, max(counts) + 1):  # mean over the images that have an i-th chunk
        having = [x[i - 1].sum() / subpixels_ln2 for x in per_image if x.shape[0] >= i]
        np.testing.assert_allclose(out[f"bpd_chunk_{i}"], np.mean(having), rtol=rtol)
    # the per-chunk bits of one image add up to its bits per subpixel
    np.testing.assert_allclose(
        sum(x.sum() for x in per_image) / subpixels_ln2 / len(images), out["bpd"], rtol=rtol
    )


@pytest.mark.parametrize("colorization", [False, True])
def test_chunks_cover_every_predicted_element_once(colorization):
    """The loss-slot targets of chunks 1..n, in order, spell u_{s+1}..u_{L'} (s = 0, or the
    number of luma elements for colorization): each element and STOP exactly once."""
    rep = SparseDCT(
        resolution=32, block_size=4, quality=75, clip=255, chunk_size=48, overlap=16,
        order="luma_first" if colorization else "interleaved", colorization=colorization,
    )  # fmt: skip
    source = synthetic.SyntheticShapes(32, split="train")
    stop = 3 * rep.block_size**2
    for image in [source[i]["image"] for i in range(3)] + [patch_image()]:
        seq = rep.host_encode(image)
        length = int(seq.length)
        channel = np.asarray(seq.channel)[:length]
        s = int(np.sum(channel < rep.block_size**2)) if colorization else 0
        if colorization:  # luma first: the first s elements are exactly the luma ones
            assert (channel[:s] < rep.block_size**2).all()
        chunks = likelihood.sequence_chunks(rep, image)
        assert len(chunks) == -(-(length - s) // rep.chunk_size)
        got = {k: [] for k in ("c", "p", "v")}
        for i, c in enumerate(chunks, start=1):
            assert int(c["chunk_index"]) == i and int(c["num_chunks"]) == len(chunks)
            m = c["loss_mask"]
            assert not m[: rep.overlap].any()  # the overlap slots carry no loss
            got["c"] += list(c["target_channel"][m])
            elem = c["position_loss_mask"]
            assert (c["value_loss_mask"] == elem).all()
            assert (elem == (m & (c["target_channel"] != stop))).all()
            got["p"] += list(c["target_position"][elem])
            got["v"] += list(c["target_value"][elem] - rep.clip)
        np.testing.assert_array_equal(got["c"], channel[s:])
        assert got["c"][-1] == stop
        np.testing.assert_array_equal(got["p"], np.asarray(seq.position)[s : length - 1])
        np.testing.assert_array_equal(got["v"], np.asarray(seq.value)[s : length - 1])


def test_an_empty_image_list_is_refused(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="at least one image"):
        likelihood.BitsPerSubpixel(lambda p, b: None, model.representation, [], None, 4)

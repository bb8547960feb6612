"""DCTransformer objectives (spec §3.6) against a hand-written NumPy oracle.

The oracle reads the targets from the sequence itself (slot j of chunk i predicts u_k,
k = a - O + j + 1, a = (i - 1) N_c; a loss only on the last N_c slots and 1 <= k <= L'), takes
float64 log-softmaxes of the logits and sums -(log p(c) + log p(p | c) + log p(v | c, p)) slot by
slot, with no position / value term for STOP and nothing for PAD slots.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from dctjax.autoregressive import chunking, objectives
from dctjax.codec import sparse

B, GRID, CLIP = 4, (8, 8), 64
N_C, O = 48, 16
T = N_C + O
NC, NP, NV = 3 * B * B + 1, GRID[0] * GRID[1], 2 * CLIP + 1  # logit sizes


def image(seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, 3)
    yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    out = (
        base
        + 30 * np.sin(2 * np.pi * (rng.uniform(-2, 2) * yy + rng.uniform(-2, 2) * xx))[..., None]
    )
    out = out + noise * rng.standard_normal(out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def patch_image() -> np.ndarray:
    """Mid-grey (every coefficient 0) but for one coloured luma block: a short sequence."""
    out = np.full((32, 32, 3), 128, np.uint8)
    out[8:12, 12:16] = (200, 100, 50)
    return out


def sequence(img: np.ndarray) -> sparse.SparseSequence:
    dense = sparse.np_images_to_dct_image(img, B, 75, CLIP)
    return sparse.np_dct_image_to_sequence(dense, B)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def reference_slot_nll(logits, seq, i: int) -> np.ndarray:
    """(3, T) float64 NLL of chunk i, from the sequence and the logits, slot by slot."""
    ch, pos, val = (log_softmax(x) for x in logits)
    length = int(seq.length)
    assert int(seq.channel[length - 1]) == NC - 1  # u_{L'} = STOP
    a = (i - 1) * N_C
    out = np.zeros((3, T))
    for j in range(T):
        k = a - O + j + 1  # the target of slot j is u_k, seq index k - 1
        if j < O or not 1 <= k <= length:
            continue  # overlap context, or a PAD slot past the end / before START
        out[0, j] = -ch[j, int(seq.channel[k - 1])]
        if k < length:  # an element: position and value terms; STOP has none
            out[1, j] = -pos[j, int(seq.position[k - 1])]
            out[2, j] = -val[j, int(seq.value[k - 1]) + CLIP]
    return out


@pytest.fixture(scope="module")
def examples():
    """(seq, chunk index) pairs: a first chunk (left PAD), a middle chunk, the last chunk (STOP,
    then PAD), and a short sequence whose only chunk has PAD on both sides."""
    long_seq, short_seq = sequence(image(0, 6.0)), sequence(patch_image())
    n = chunking.num_chunks(int(long_seq.length), N_C)
    assert n >= 3 and int(long_seq.length) % N_C != 0
    assert 2 < int(short_seq.length) < N_C
    return [(long_seq, 1), (long_seq, 2), (long_seq, n), (short_seq, 1)]


def make_batch(examples):
    chunks = [chunking.make_chunk(s, i, B, GRID, CLIP, N_C, O) for s, i in examples]
    return {k: np.stack([c[k] for c in chunks]) for k in chunks[0]}


def random_logits(n: int, seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return tuple((scale * rng.standard_normal((n, T, k))).astype(np.float32) for k in (NC, NP, NV))


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_slot_nll_and_chunk_loss_match_numpy(examples, scale):
    batch = make_batch(examples)
    logits = random_logits(len(examples), 0, scale)
    ref = np.stack(
        [reference_slot_nll([x[b] for x in logits], s, i) for b, (s, i) in enumerate(examples)]
    )  # (N, 3, T)
    got = objectives.slot_nll(tuple(map(jnp.asarray, logits)), batch)
    for t, term in enumerate(objectives.TERMS):
        np.testing.assert_allclose(got[term], ref[:, t], rtol=1e-5, atol=1e-4 * scale)

    # the loss averages the summed NLL over the batch's target slots (elements and STOP)
    num_targets = 0
    for s, i in examples:
        a, length = (i - 1) * N_C, int(s.length)
        num_targets += min(a + N_C, length) - a  # u_{a+1}..u_{min(a+N_c, L')}
    loss, per_example = objectives.chunk_loss(tuple(map(jnp.asarray, logits)), batch)
    np.testing.assert_allclose(loss, ref.sum() / num_targets, rtol=1e-5)
    for t, term in enumerate(objectives.TERMS):
        np.testing.assert_allclose(per_example[term], ref[:, t].sum(-1), rtol=1e-5)
    # STOP contributes a channel term only; the short chunk has exactly one STOP target
    stop_slots = batch["target_channel"][3] == NC - 1
    assert stop_slots.sum() == 1 and batch["loss_mask"][3][stop_slots].all()
    assert (ref[3, 1:, stop_slots] == 0).all() and (ref[3, 0, stop_slots] > 0).all()


def test_loss_slots_pair_with_logits_of_the_last_n_c_slots(examples):
    """`loss_slots(batch, O)` with logits of slots O.. only (as `DCTransformer(from_slot=O)`
    gives them): the same loss and per-example sums as the oracle over the whole slice."""
    batch = make_batch(examples)
    logits = random_logits(len(examples), 1, 1.0)
    ref = np.stack(
        [reference_slot_nll([x[b] for x in logits], s, i) for b, (s, i) in enumerate(examples)]
    )  # (N, 3, T)
    sliced = objectives.loss_slots(batch, O)
    assert sorted(sliced) == sorted(objectives.LOSS_FIELDS)
    assert all(v.shape == (len(examples), N_C) for v in sliced.values())
    loss, per_example = objectives.chunk_loss(tuple(jnp.asarray(x[:, O:]) for x in logits), sliced)
    np.testing.assert_allclose(loss, ref.sum() / np.sum(batch["loss_mask"]), rtol=1e-5)
    for t, term in enumerate(objectives.TERMS):
        np.testing.assert_allclose(per_example[term], ref[:, t].sum(-1), rtol=1e-5, atol=1e-4)


def test_pad_and_overlap_slots_carry_no_loss(examples):
    """Logits of slots without a loss (overlap, PAD) may be anything, even NaN."""
    batch = make_batch(examples)
    logits = random_logits(len(examples), 1, 3.0)
    poisoned = []
    for x in logits:
        y = x.copy()
        y[~batch["loss_mask"]] = np.nan
        poisoned.append(jnp.asarray(y))
    clean = objectives.slot_nll(tuple(map(jnp.asarray, logits)), batch)
    got = objectives.slot_nll(tuple(poisoned), batch)
    for term in objectives.TERMS:
        np.testing.assert_allclose(got[term], clean[term], rtol=1e-6)
    loss, _ = objectives.chunk_loss(tuple(poisoned), batch)
    assert np.isfinite(float(loss))


def test_chunk_loss_without_targets_is_zero(examples):
    batch = make_batch(examples[:1])
    for k in ("loss_mask", "position_loss_mask", "value_loss_mask"):
        batch[k] = np.zeros_like(batch[k])
    loss, per_example = objectives.chunk_loss(
        tuple(map(jnp.asarray, random_logits(1, 2, 1))), batch
    )
    assert float(loss) == 0.0 and all(float(v[0]) == 0.0 for v in per_example.values())


def test_bfloat16_logits_are_scored_in_float32(examples):
    batch = make_batch(examples)
    logits = random_logits(len(examples), 3, 4.0)
    as_bf16 = tuple(jnp.asarray(x, jnp.bfloat16) for x in logits)
    ref = np.stack(
        [
            reference_slot_nll([np.asarray(x[b], np.float32) for x in as_bf16], s, i)
            for b, (s, i) in enumerate(examples)
        ]
    )
    got = objectives.slot_nll(as_bf16, batch)
    for t, term in enumerate(objectives.TERMS):
        assert got[term].dtype == jnp.float32
        np.testing.assert_allclose(got[term], ref[:, t], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(32, 32), (32, 48), (384, 384)])
def test_bits_per_subpixel(shape):
    nats = np.array([0.0, 1.0, 1234.5, 9.87e4])
    height, width = shape
    expected = nats / (math.log(2) * 3 * height * width)
    np.testing.assert_allclose(objectives.bits_per_subpixel(nats, shape), expected, rtol=1e-12)
    # one nat on every subpixel of an image is 1 / ln 2 bits per subpixel
    full = 3 * height * width
    np.testing.assert_allclose(
        objectives.bits_per_subpixel(float(full), shape), 1 / math.log(2), rtol=1e-12
    )

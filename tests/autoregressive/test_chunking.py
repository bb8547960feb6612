"""DCTransformer chunking against independent references: the spec's tables and closed forms,
chi-square / binomial bounds on sampled frequencies, and slices and encoder images built by
brute-force Python from sequences of the real codec."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from dctjax.autoregressive import chunking
from dctjax.codec import sparse

CLIP = 48  # small enough that q=90 luma DC gets clipped

make_chunk_jax = jax.jit(
    chunking.make_chunk_jax,
    static_argnames=("block_size", "grid_shape", "clip", "chunk_size", "overlap"),
)


def smooth_image(seed: int, size: int, noise: float) -> np.ndarray:
    """Natural-ish uint8 (size, size, 3): random low-frequency sinusoids plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    out = np.full((size, size, 3), 128.0)
    for c in range(3):
        for _ in range(6):
            fy, fx = rng.uniform(-4, 4, 2)
            phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(10, 40)
            out[..., c] += amp * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    out += noise * rng.standard_normal(out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def codec_sequence(seed, size, b, q, noise=3.0, order="interleaved", max_len=None):
    """(sequence, dct_image) from the real codec."""
    dct = sparse.np_images_to_dct_image(smooth_image(seed, size, noise), b, q, CLIP)
    return sparse.np_dct_image_to_sequence(dct, b, order, max_len), dct


def elements_of(seq) -> list[tuple[int, int, int]]:
    n = int(seq.length) - 1
    return [(int(seq.channel[j]), int(seq.position[j]), int(seq.value[j])) for j in range(n)]


def reference_chunk(elements, i, b, grid, n_c, o, start=0):
    """Plain-Python slice of chunk i following spec §4.2 and the id table of the module docstring."""
    nc, g = 3 * b * b, grid[0] * grid[1]
    start_ids, pad_ids = (nc + 1, g, 2 * CLIP + 1), (nc + 2, g + 1, 2 * CLIP + 2)
    length = len(elements) + 1
    u = ["START", *elements, "STOP"]
    a = start + (i - 1) * n_c
    out = {k: [] for k in ("ic", "ip", "iv", "im", "tc", "tp", "tv", "loss", "ploss")}
    for j in range(o + n_c):
        k_in, k_t = a - o + j, a - o + j + 1
        x = u[k_in] if 0 <= k_in <= length else "PAD"
        if x == "START":
            ids = start_ids
        elif x == "PAD":
            ids = pad_ids
        elif x == "STOP":
            ids = (nc, pad_ids[1], pad_ids[2])
        else:
            ids = (x[0], x[1], x[2] + CLIP)
        out["ic"].append(ids[0])
        out["ip"].append(ids[1])
        out["iv"].append(ids[2])
        out["im"].append(x != "PAD")
        y = u[k_t] if 1 <= k_t <= length else None
        if y is None:
            t = (0, 0, 0)
        elif y == "STOP":
            t = (nc, 0, 0)
        else:
            t = (y[0], y[1], y[2] + CLIP)
        out["tc"].append(t[0])
        out["tp"].append(t[1])
        out["tv"].append(t[2])
        out["loss"].append(j >= o and y is not None)
        out["ploss"].append(j >= o and y not in (None, "STOP"))
    dense = np.zeros((*grid, nc), np.int32)
    for c, p, v in elements[:a]:
        dense[p // grid[1], p % grid[1], c] = v
    return out, dense


def assert_matches_reference(got, ref, dense):
    pairs = {
        "ic": "input_channel",
        "ip": "input_position",
        "iv": "input_value",
        "im": "input_mask",
        "tc": "target_channel",
        "tp": "target_position",
        "tv": "target_value",
        "loss": "loss_mask",
        "ploss": "position_loss_mask",
    }
    for r, k in pairs.items():
        np.testing.assert_array_equal(np.asarray(got[k]), np.array(ref[r]), err_msg=k)
    np.testing.assert_array_equal(got["value_loss_mask"], got["position_loss_mask"])
    np.testing.assert_array_equal(got["encoder_image"], dense)


SEQ_B8, DCT_B8 = codec_sequence(0, 32, 8, 75)  # G = 4x4, L' ~ 370
SEQ_B4, DCT_B4 = codec_sequence(1, 32, 4, 90)  # G = 8x8


# ---------------------------------------------------------------------------------------------
# Selection weights, chunk counts, length filtering.


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, [1.0]),
        (2, [0.889, 0.111]),
        (3, [0.816, 0.102, 0.082]),
        (10, [0.519, 0.065] + [0.052] * 8),
        (20, [0.342, 0.043] + [0.034] * 18),
    ],
)
def test_chunk_weights_spec_table(n, expected):
    np.testing.assert_allclose(chunking.chunk_weights(n), expected, atol=5e-4)


@pytest.mark.parametrize("p_min, power", [(0.1, 3.0), (0.05, 2.0), (0.3, 1.0)])
def test_chunk_weights_closed_form(p_min, power):
    for n in range(1, 41):
        w = [max(i**-power, p_min) for i in range(1, n + 1)]
        ref = [x / math.fsum(w) for x in w]
        np.testing.assert_allclose(chunking.chunk_weights(n, p_min, power), ref, rtol=1e-12)


def test_num_chunks_brute_force():
    for chunk_size in (1, 3, 8, 896):
        for length in [*range(1, 40), 895, 896, 897, 1792, 1793]:
            assert chunking.num_chunks(length, chunk_size) == len(range(0, length, chunk_size))


def chi_square_pvalue(draws, probs):
    counts = np.bincount(np.asarray(draws) - 1, minlength=len(probs))
    assert counts.size == len(probs), "a draw is out of 1..n"
    return scipy.stats.chisquare(counts, np.asarray(probs) * counts.sum()).pvalue


def test_select_chunk_frequencies():
    length = 4 * 896 + 1  # n = 5
    probs = [max(i**-3, 0.1) for i in range(1, 6)]
    probs = np.array(probs) / sum(probs)
    rng = np.random.default_rng(123)
    draws = [chunking.select_chunk(length, rng) for _ in range(20000)]
    assert chi_square_pvalue(draws, probs) > 1e-4
    # Per-example seeds (seed, index) give the same distribution.
    draws = [chunking.select_chunk(length, (7, idx)) for idx in range(5000)]
    assert chi_square_pvalue(draws, probs) > 1e-4
    assert chunking.select_chunk(length, (7, 11)) == chunking.select_chunk(length, (7, 11))


def test_select_chunk_counts_chunks_from_chroma_start():
    rng = np.random.default_rng(0)
    assert {chunking.select_chunk(5, rng, chunk_size=1) for _ in range(300)} == {1, 2, 3, 4, 5}
    draws = {chunking.select_chunk(5, rng, chunk_size=1, chroma_start=3) for _ in range(300)}
    assert draws == {1, 2}
    assert {chunking.select_chunk(896, rng) for _ in range(50)} == {1}


def test_select_chunk_jax_frequencies():
    n_draws = 20000
    lengths = jnp.full((n_draws,), 4 * 896 + 1, jnp.int32)  # n = 5
    draws = jax.jit(chunking.select_chunk_jax, static_argnames="max_chunks")(
        jax.random.key(0), lengths, max_chunks=8
    )
    probs = np.array([max(i**-3, 0.1) for i in range(1, 6)])
    assert chi_square_pvalue(np.asarray(draws), probs / probs.sum()) > 1e-4
    # Colorization: L' - chroma_start = 897 -> 2 chunks.
    draws = chunking.select_chunk_jax(
        jax.random.key(1), lengths[:2000], 8, chroma_start=jnp.full((2000,), 4 * 896 - 896)
    )
    assert set(np.asarray(draws).tolist()) == {1, 2}


@pytest.mark.parametrize("length", [100, 500, 900, 1000, 5000])
def test_keep_rate(length):
    max_length, n = 1000.0, 20000
    p = min(length / max_length, 1.0)
    assert chunking.keep_probability(length, max_length) == pytest.approx(p)
    rng = np.random.default_rng(length)
    kept = sum(chunking.keep_example(length, max_length, rng) for _ in range(n))
    assert abs(kept - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_keep_example_per_example_seed():
    decisions = [chunking.keep_example(300, 1000, (5, idx)) for idx in range(20000)]
    assert abs(np.mean(decisions) - 0.3) <= 5 * math.sqrt(0.3 * 0.7 / 20000)
    assert decisions[:50] == [chunking.keep_example(300, 1000, (5, idx)) for idx in range(50)]


# ---------------------------------------------------------------------------------------------
# Host slices.


@pytest.mark.parametrize(
    "seq, b, grid, n_c, o",
    [(SEQ_B8, 8, (4, 4), 8, 3), (SEQ_B4, 4, (8, 8), 5, 7), (SEQ_B4, 4, (8, 8), 64, 1)],
)
def test_every_chunk_matches_brute_force(seq, b, grid, n_c, o):
    elements = elements_of(seq)
    n = -(-(len(elements) + 1) // n_c)
    for i in range(1, n + 1):
        got = chunking.make_chunk(seq, i, b, grid, CLIP, chunk_size=n_c, overlap=o)
        assert int(got["chunk_index"]) == i and int(got["num_chunks"]) == n
        assert_matches_reference(got, *reference_chunk(elements, i, b, grid, n_c, o))


def test_slot_layout_small():
    n_c, o, b = 7, 3, 8
    seq, length = SEQ_B8, int(SEQ_B8.length)
    stop, start_ch, pad_ch = 3 * b * b, 3 * b * b + 1, 3 * b * b + 2
    chunk = lambda i: chunking.make_chunk(seq, i, b, (4, 4), CLIP, chunk_size=n_c, overlap=o)  # noqa: E731

    first = chunk(1)
    assert first["input_channel"].shape == (o + n_c,)
    # Slot j reads u_{j-O}: O PAD slots, then START in the first loss slot.
    np.testing.assert_array_equal(first["input_channel"][: o + 1], [pad_ch] * o + [start_ch])
    np.testing.assert_array_equal(first["input_mask"], [False] * o + [True] * n_c)
    np.testing.assert_array_equal(first["loss_mask"], [False] * o + [True] * n_c)
    assert first["target_channel"][o] == seq.channel[0]  # the first element, predicted from START
    assert not first["encoder_image"].any()

    n = -(-length // n_c)
    middle = chunk(2)
    np.testing.assert_array_equal(middle["input_mask"], True)
    np.testing.assert_array_equal(middle["loss_mask"], [False] * o + [True] * n_c)
    # Inputs are the targets shifted by one slot (all slots are elements here).
    for k in ("channel", "position", "value"):
        np.testing.assert_array_equal(middle[f"input_{k}"][1:], middle[f"target_{k}"][:-1])

    last = chunk(n)
    r = length - (n - 1) * n_c  # targets left in the last chunk, STOP included
    assert r < n_c - 1, "the last chunk should end in trailing PAD"
    np.testing.assert_array_equal(last["loss_mask"], [False] * o + [True] * r + [False] * (n_c - r))
    stop_slot = o + r - 1
    assert last["target_channel"][stop_slot] == stop
    assert last["loss_mask"][stop_slot] and not last["position_loss_mask"][stop_slot]
    assert not last["value_loss_mask"][stop_slot]
    np.testing.assert_array_equal(last["position_loss_mask"][o:stop_slot], True)
    np.testing.assert_array_equal(last["input_channel"][stop_slot + 2 :], pad_ch)  # PAD after STOP
    assert last["input_channel"][stop_slot + 1] == stop

    with pytest.raises(ValueError, match="chunk_index"):
        chunk(n + 1)


def test_real_chunk_size():
    seq, _ = codec_sequence(2, 64, 4, 90, noise=8.0)  # G = 16x16, L' ~ 2600: 3 chunks
    elements, length = elements_of(seq), int(seq.length)
    assert 2 * 896 < length <= 3 * 896
    pad_ch, start_ch = 48 + 2, 48 + 1
    for i in (1, 2, 3):
        got = chunking.make_chunk(seq, i, 4, (16, 16), CLIP)
        assert got["input_channel"].shape == (1024,)
        np.testing.assert_array_equal(got["loss_mask"][:128], False)
        assert got["loss_mask"][128:].sum() == min(896, length - (i - 1) * 896)
        assert_matches_reference(got, *reference_chunk(elements, i, 4, (16, 16), 896, 128))
        if i == 1:
            np.testing.assert_array_equal(got["input_channel"][:128], pad_ch)
            assert got["input_channel"][128] == start_ch


@pytest.mark.parametrize("n_c, o", [(8, 3), (30, 12)])
def test_encoder_excludes_target_chunk(n_c, o):
    seq, b, grid = SEQ_B4, 4, (8, 8)
    for i in range(1, chunking.num_chunks(int(seq.length), n_c) + 1):
        got = chunking.make_chunk(seq, i, b, grid, CLIP, chunk_size=n_c, overlap=o)
        enc = got["encoder_image"]
        a = (i - 1) * n_c
        assert np.count_nonzero(enc) == a  # every element u_1..u_a, each at its own cell
        targets = got["position_loss_mask"]
        rows, cols = got["target_position"][targets] // grid[1], got["target_position"][targets] % 8
        assert not enc[rows, cols, got["target_channel"][targets]].any()


def test_colorization_chunks_start_at_chroma():
    b, grid, n_c, o = 4, (8, 8), 8, 3
    seq, dct = codec_sequence(3, 32, b, 90, order="luma_first")
    elements = elements_of(seq)
    s = sum(1 for c, _, _ in elements if c < b * b)  # number of luma elements
    assert chunking.find_chroma_start(seq, b) == s
    assert all(c >= b * b for c, _, _ in elements[s:])
    n = -(-(len(elements) + 1 - s) // n_c)
    for i in range(1, n + 1):
        got = chunking.make_chunk(seq, i, b, grid, CLIP, chunk_size=n_c, overlap=o, chroma_start=s)
        assert int(got["num_chunks"]) == n
        assert_matches_reference(got, *reference_chunk(elements, i, b, grid, n_c, o, start=s))
        # The encoder holds all luma; every target with a loss is chroma or STOP.
        np.testing.assert_array_equal(got["encoder_image"][..., : b * b], dct[..., : b * b])
        assert (got["target_channel"][got["loss_mask"]] >= b * b).all()
        if i == 1:
            assert not got["encoder_image"][..., b * b :].any()
            assert got["target_channel"][o] == elements[s][0]
            # Overlap context u_{a-O}..u_a: the last luma elements (u_k is elements[k - 1]).
            context = [e[0] for e in elements[s - o - 1 : s]]
            np.testing.assert_array_equal(got["input_channel"][: o + 1], context)
            assert (np.array(context) < b * b).all()


def test_find_chroma_start_rejects_interleaved():
    with pytest.raises(ValueError, match="luma_first"):
        chunking.find_chroma_start(SEQ_B4, 4)


def test_random_chunk_is_make_chunk_of_select_chunk():
    kwargs = dict(block_size=8, grid_shape=(4, 4), clip=CLIP, chunk_size=8, overlap=3)
    got = chunking.random_chunk(SEQ_B8, (1, 2), **kwargs)
    i = chunking.select_chunk(int(SEQ_B8.length), (1, 2), chunk_size=8)
    want = chunking.make_chunk(SEQ_B8, i, **kwargs)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_padded_host_sequence_gives_the_same_chunk():
    padded, _ = codec_sequence(0, 32, 8, 75, max_len=1000)
    for i in (1, 5):
        a = chunking.make_chunk(padded, i, 8, (4, 4), CLIP, chunk_size=8, overlap=3)
        b = chunking.make_chunk(SEQ_B8, i, 8, (4, 4), CLIP, chunk_size=8, overlap=3)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


# ---------------------------------------------------------------------------------------------
# Device slices.


def stack(seqs):
    return sparse.SparseSequence(
        *(np.stack([np.asarray(x) for x in f]) for f in zip(*seqs, strict=True))
    )


@pytest.mark.parametrize("n_c, o, colour", [(8, 3, False), (8, 3, True), (896, 128, False)])
def test_device_matches_host(n_c, o, colour):
    b = 4
    order = "luma_first" if colour else "interleaved"
    size, grid = (32, (8, 8)) if n_c == 8 else (64, (16, 16))
    host = [codec_sequence(s, size, b, 90, noise=8.0, order=order)[0] for s in (4, 5, 6)]
    max_len = max(int(x.length) for x in host) + 5
    padded = [
        codec_sequence(s, size, b, 90, noise=8.0, order=order, max_len=max_len)[0]
        for s in (4, 5, 6)
    ]
    starts = [chunking.find_chroma_start(x, b) if colour else 0 for x in host]
    rows, idx = [], []
    for h, st, p in zip(host, starts, padded, strict=True):
        n = chunking.num_chunks(int(h.length) - st, n_c)
        for i in sorted({1, 2, n // 2 + 1, n - 1, n} & set(range(1, n + 1))):
            rows.append((h, p, st))
            idx.append(i)
    batch = stack([p for _, p, _ in rows])
    chroma = jnp.asarray([st for _, _, st in rows], jnp.int32) if colour else None
    got = make_chunk_jax(
        batch,
        jnp.asarray(idx, jnp.int32),
        block_size=b,
        grid_shape=grid,
        clip=CLIP,
        chunk_size=n_c,
        overlap=o,
        chroma_start=chroma,
    )
    if colour:
        np.testing.assert_array_equal(chunking.find_chroma_start_jax(batch, b), chroma)
    for r, ((h, _, st), i) in enumerate(zip(rows, idx, strict=True)):
        want = chunking.make_chunk(h, i, b, grid, CLIP, n_c, o, chroma_start=st if colour else None)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k][r]), want[k], err_msg=f"{k} row {r}")


def test_device_truncated_sequence_has_no_loss_past_max_len():
    b, grid, n_c, o = 8, (4, 4), 8, 3
    length = int(SEQ_B8.length)
    max_len = length - 20  # STOP and the last 19 elements are cut off
    trunc, _ = codec_sequence(0, 32, 8, 75, max_len=max_len)
    assert bool(trunc.truncated)
    n = -(-length // n_c)
    idx = [n - 3, n - 2, n - 1, n, 0, n + 5]  # the last two are clipped into 1..n
    batch = stack([trunc] * len(idx))
    got = make_chunk_jax(batch, jnp.asarray(idx), b, grid, CLIP, n_c, o)
    np.testing.assert_array_equal(got["chunk_index"], [n - 3, n - 2, n - 1, n, 1, n])
    np.testing.assert_array_equal(got["num_chunks"], n)
    elements = elements_of(SEQ_B8)
    for r, i in enumerate(np.asarray(got["chunk_index"])):
        ref, dense = reference_chunk(elements, i, b, grid, n_c, o)
        a = (i - 1) * n_c
        k_t = a - o + np.arange(o + n_c) + 1  # u index of each target
        stored = k_t <= max_len
        loss = np.asarray(got["loss_mask"][r])
        np.testing.assert_array_equal(loss, np.array(ref["loss"]) & stored)
        np.testing.assert_array_equal(
            np.asarray(got["target_channel"][r])[stored], np.array(ref["tc"])[stored]
        )
        stored_in = k_t - 1 <= max_len
        for key, ref_key in (("input_channel", "ic"), ("input_value", "iv"), ("input_mask", "im")):
            np.testing.assert_array_equal(
                np.asarray(got[key][r])[stored_in], np.array(ref[ref_key])[stored_in]
            )
        np.testing.assert_array_equal(np.asarray(got["input_mask"][r])[~stored_in], False)
        if a <= max_len:
            np.testing.assert_array_equal(got["encoder_image"][r], dense)
    with pytest.raises(ValueError, match="truncated"):
        chunking.make_chunk(trunc, 1, b, grid, CLIP, n_c, o)


# ---------------------------------------------------------------------------------------------
# Errors.


def test_errors():
    kw = dict(block_size=8, grid_shape=(4, 4), clip=CLIP)
    n = chunking.num_chunks(int(SEQ_B8.length), 8)
    cases = [
        (lambda: chunking.make_chunk(SEQ_B8, 0, chunk_size=8, overlap=3, **kw), "chunk_index"),
        (lambda: chunking.make_chunk(SEQ_B8, n + 1, chunk_size=8, overlap=3, **kw), "chunk_index"),
        (lambda: chunking.make_chunk(SEQ_B8, 1.0, chunk_size=8, overlap=3, **kw), "chunk_index"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, chunk_size=0, overlap=3, **kw), "chunk_size"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, chunk_size=8, overlap=0, **kw), "overlap"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, chunk_size=8, overlap=-2, **kw), "overlap"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, 8, (4, 4), 0), "clip"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, 8, (4, 4), 10), "value"),  # |v| > clip
        (lambda: chunking.make_chunk(SEQ_B8, 1, 8, (2, 2), CLIP), "position"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, 4, (4, 4), CLIP), "channel"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, 7, (4, 4), CLIP), "block_size"),
        (lambda: chunking.make_chunk(SEQ_B8, 1, 8, (4,), CLIP), "grid_shape"),
        (
            lambda: chunking.make_chunk(SEQ_B8, 1, chroma_start=int(SEQ_B8.length), **kw),
            "chroma_start",
        ),
        (lambda: chunking.make_chunk(SEQ_B8._replace(mask=~SEQ_B8.mask), 1, **kw), "mask"),
        (lambda: chunking.make_chunk(tuple(SEQ_B8), 1, **kw), "SparseSequence"),
        (lambda: chunking.chunk_weights(0), "num_chunks"),
        (lambda: chunking.chunk_weights(3, p_min=0.0), "p_min"),
        (lambda: chunking.chunk_weights(3, power=-1.0), "power"),
        (lambda: chunking.num_chunks(0), "length"),
        (lambda: chunking.num_chunks(10, chunk_size=0), "chunk_size"),
        (lambda: chunking.keep_probability(10, 0), "max_length"),
        (lambda: chunking.keep_probability(0, 10), "length"),
        (lambda: chunking.keep_example(10, 100, "seed"), "rng"),
        (lambda: chunking.select_chunk(10, 0, chroma_start=10), "chroma_start"),
        (
            lambda: chunking.select_chunk_jax(jax.random.key(0), jnp.ones(2, jnp.int32), 0),
            "max_chunks",
        ),
        (
            lambda: chunking.make_chunk_jax(stack([SEQ_B8]), jnp.ones(2, jnp.int32), **kw),
            "chunk_index",
        ),
        (
            lambda: chunking.make_chunk_jax(
                stack([SEQ_B8]), jnp.ones(1, jnp.int32), overlap=0, **kw
            ),
            "overlap",
        ),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()

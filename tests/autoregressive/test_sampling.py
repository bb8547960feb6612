"""DCTransformer sampling (spec §5, §6): the KV-cached chunk loop against uncached decoding and a
teacher-forced full forward, the chunk bookkeeping against the host `make_chunk`, STOP and the
chunk limit, the validity masks, temperature / top-k / top-p, upsampling and colorization
prefixes, and XLA's memory analysis over the number of chunks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dctjax import representations
from dctjax.autoregressive import chunking, sampling
from dctjax.codec import sparse
from dctjax.codec.sparse import SparseSequence
from tests.models.test_dctransformer import CLIP, N_C, B, O, make_forward, random_image, tiny_model

GRID = (8, 8)  # 32 x 32 images
STOP = 3 * B * B
REP = representations.make_representation(
    "sparse_dct", resolution=32, block_size=B, quality=75, clip=CLIP, chunk_size=N_C, overlap=O
)
COLOR_REP = representations.make_representation(
    "sparse_dct", resolution=32, block_size=B, quality=75, clip=CLIP, chunk_size=N_C, overlap=O,
    order="luma_first", colorization=True,
)  # fmt: skip


def model_with_stop_bias(bias: float, seed: int = 0, zero_bias: float = 0.0):
    """The tiny random model with the STOP logit shifted by `bias` (-50: never stops) and the
    logit of value 0 by `zero_bias`."""
    model = tiny_model(seed, grid_shape=GRID)
    b = model.channel_head.bias
    b.set_value(b[...].at[STOP].add(bias))
    b = model.value_head.bias
    b.set_value(b[...].at[CLIP].add(zero_bias))
    return model


@functools.cache
def sampler(bias: float, rep_name: str = "interleaved", zero_bias: float = 0.0, **options):
    """jit (indices, prefix) -> sample_sequences(...) for a tiny random model."""
    model = model_with_stop_bias(bias, zero_bias=zero_bias)
    rep = REP if rep_name == "interleaved" else COLOR_REP
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(indices, prefix=None, forbid=None):
        net = nnx.merge(graphdef, state)
        return sampling.sample_sequences(
            net, rep, jax.random.key(7), indices, prefix=prefix, forbid_channels=forbid, **options
        )

    def call(indices, prefix=None, task=None):
        forbid = None if task is None else sampling.prefix_channels(rep, task)
        out = run(jnp.asarray(indices, jnp.int32), prefix, forbid)
        return jax.tree.map(np.asarray, out)

    return model, call


def host_sequence(seq: SparseSequence, n: int) -> SparseSequence:
    """Sample n of a batched result as a host sequence ending in STOP (appended when truncated)."""
    count = int(seq.length[n])
    ch, pos, val = (np.asarray(x[n, :count]) for x in (seq.channel, seq.position, seq.value))
    if count == 0 or ch[-1] != STOP:
        ch, pos, val = (np.append(x, v) for x, v in ((ch, STOP), (pos, 0), (val, 0)))
    m = ch.size
    return SparseSequence(ch, pos, val, np.ones(m, bool), np.int32(m), np.bool_(False))


# ---------------------------------------------------------------------------------------------
# 1. KV caches: equal to uncached decoding and to the teacher-forced training forward.


@pytest.fixture(scope="module")
def long_samples():
    """Two samples of 3 full chunks (STOP suppressed, no masks, which would end a random model's
    sequences early), cached and uncached, logits recorded."""
    opts = dict(max_chunks=3, record_logits=True, masks=False)
    model, cached = sampler(-50.0, cached=True, **opts)
    _, uncached = sampler(-50.0, cached=False, **opts)
    return model, cached([0, 1]), uncached([0, 1])


def test_cached_sampling_equals_uncached(long_samples):
    _, (seq_a, logits_a), (seq_b, logits_b) = long_samples
    assert (seq_a.length == 3 * N_C).all() and seq_a.truncated.all()
    for x, y in zip(seq_a, seq_b, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(logits_a, logits_b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def training_slice(host: SparseSequence, i: int) -> dict:
    """The training slice of chunk i (`make_chunk_jax`, which, unlike the host `make_chunk`,
    also takes the value 0 that unmasked samples may hold)."""
    batched = SparseSequence(*(jnp.asarray(x)[None] for x in host))
    ex = chunking.make_chunk_jax(batched, jnp.asarray([i]), B, GRID, CLIP, N_C, O)
    return {k: np.asarray(v)[0] for k, v in ex.items()}


def test_step_logits_equal_a_teacher_forced_full_forward(long_samples):
    """Every step's (channel, position, value) logits equal the training forward of the slice
    of the sampled sequence, chunk by chunk."""
    model, (seq, logits), _ = long_samples
    forward = make_forward(model)
    for n in range(2):
        host = host_sequence(seq, n)
        for i in range(1, 4):
            ex = training_slice(host, i)
            full = forward({k: v[None] for k, v in ex.items()})
            loss = ex["loss_mask"][O:]
            for term, rec, ref in zip(("channel", "position", "value"), logits, full, strict=True):
                np.testing.assert_allclose(
                    rec[n, i - 1][loss], ref[0, O:][loss], rtol=1e-4, atol=2e-4, err_msg=term
                )


def test_sample_i_depends_only_on_key_and_index():
    _, call = sampler(-50.0, max_chunks=2)
    a = call([0, 1, 2])
    b = call([2])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[2], y[0])
    assert not np.array_equal(a.channel[0], a.channel[1])


# ---------------------------------------------------------------------------------------------
# 2. Chunk bookkeeping.


@pytest.mark.parametrize("colorization", [False, True])
def test_chunk_context_equals_host_make_chunk(colorization):
    """At the start of chunk i the encoder image holds exactly u_1..u_a and the decoder context
    is the last O elements (plus the context slots' targets), as in training."""
    rep = COLOR_REP if colorization else REP
    dense = sparse.np_images_to_dct_image(random_image(3, (32, 32)), B, 75, CLIP)
    host = sparse.np_dct_image_to_sequence(dense, B, rep.order)
    length = int(host.length)
    start = chunking.find_chroma_start(host, B) if colorization else 0
    i = 2 if colorization else 3
    a = start + (i - 1) * N_C
    assert a + N_C < length
    ref = chunking.make_chunk(host, i, B, GRID, CLIP, N_C, O, chroma_start=start or None)
    # the sampler's buffer: the first `a` elements known, garbage after them
    size = length + 50
    fields = [np.full((1, size), 7, np.int32) for _ in range(3)]
    for f, x in zip(fields, (host.channel, host.position, host.value), strict=True):
        f[0, :a] = np.asarray(x)[:a]
    buffer = sampling._Buffer(*(jnp.asarray(f) for f in fields), jnp.asarray([a]))
    ctx = sampling.chunk_context(buffer, jnp.asarray([a]), rep, jnp.asarray([start]))
    ctx = {k: np.asarray(v)[0] for k, v in ctx.items()}
    for k in ("input_channel", "input_position", "input_value", "input_mask"):
        np.testing.assert_array_equal(ctx[k][: O + 1], ref[k][: O + 1], err_msg=k)
    for k in ("target_channel", "target_position"):
        np.testing.assert_array_equal(ctx[k][:O], ref[k][:O], err_msg=k)
    np.testing.assert_array_equal(ctx["encoder_image"], ref["encoder_image"])
    assert ctx["chunk_index"] == i
    # the context is the last O elements u_{a-O}..u_{a-1}, then u_a
    np.testing.assert_array_equal(
        ctx["input_channel"][: O + 1], np.asarray(host.channel)[a - O - 1 : a]
    )


# ---------------------------------------------------------------------------------------------
# 3. STOP, the chunk limit and the validity masks.


def test_stop_ends_a_sample():
    _, call = sampler(50.0, max_chunks=2)
    seq = call([0, 1, 2])
    assert (seq.length == 1).all() and not seq.truncated.any()
    assert (seq.channel[:, 0] == STOP).all() and not seq.mask[:, 1:].any()
    images = np.asarray(REP.decode(jax.tree.map(jnp.asarray, seq)))
    assert images.shape == (3, 32, 32, 3) and (np.abs(images.astype(int) - 128) <= 1).all()


def test_max_chunks_limits_a_sample_that_never_stops():
    _, call = sampler(-50.0, zero_bias=4.0, masks=False, max_chunks=2)
    seq = call([0, 1])
    assert (seq.length == 2 * N_C).all() and seq.truncated.all() and seq.mask.all()
    assert (seq.channel < STOP).all()


def _violations(seq: SparseSequence, n: int, order: str) -> dict[str, int]:
    count = int(seq.length[n]) - (0 if seq.truncated[n] else 1)
    ch, pos, val = (np.asarray(x[n, :count]) for x in (seq.channel, seq.position, seq.value))
    rank = sampling.channel_rank(B, order)[ch]
    row, col = pos // GRID[1], pos % GRID[1]
    chroma = ch >= B * B
    pairs = set(zip(ch.tolist(), pos.tolist(), strict=True))
    return {
        "earlier channel": int(np.sum(rank[1:] < rank[:-1])),
        "repeat not later": int(np.sum((ch[1:] == ch[:-1]) & (pos[1:] <= pos[:-1]))),
        "chroma off grid": int(np.sum(chroma & ((row % 2 == 1) | (col % 2 == 1)))),
        "zero value": int(np.sum(val == 0)),
        "repeated (c, p)": count - len(pairs),
    }


def test_validity_masks_hold_and_are_needed():
    """Value 0 made likely (logit +4): the masks still never emit it."""
    _, masked = sampler(-50.0, zero_bias=4.0, masks=True, max_chunks=3)
    _, unmasked = sampler(-50.0, zero_bias=4.0, masks=False, max_chunks=2)
    on, off = masked([0, 1, 2]), unmasked([0, 1])
    for n in range(3):
        assert set(_violations(on, n, "interleaved").values()) == {0}
        # the codec can write every masked sequence back as itself
        host = host_sequence(on, n)
        dense = sparse.np_sequence_to_dct_image(host, B, GRID)
        again = sparse.np_dct_image_to_sequence(dense, B)
        np.testing.assert_array_equal(np.asarray(again.channel), np.asarray(host.channel))
    found = [_violations(off, n, "interleaved") for n in range(2)]
    for name in ("earlier channel", "chroma off grid", "zero value"):
        assert sum(v[name] for v in found) > 0, (name, found)


def test_mask_tables_by_brute_force():
    for order in ("interleaved", "luma_first"):
        rank = sampling.channel_rank(B, order)
        # the codec's own slot order lists channels by non-decreasing rank
        _, slot_channel, _ = sparse._slot_order(B, *GRID, order)
        assert (np.diff(rank[slot_channel]) >= 0).all() and rank[STOP] == rank.max()
        assert sorted(rank.tolist()) == list(range(STOP + 1))
    masks = sampling.Masks.build(B, GRID, "interleaved")
    # after Cb_0 at the last even-even cell (6, 6) = 54, Cb_0 is done; Y_1 (rank 3) still comes
    c = jnp.asarray([B * B])
    allowed = np.asarray(masks.channels(c, jnp.asarray([54]), jnp.asarray([True])))[0]
    assert not allowed[B * B] and allowed[1] and allowed[STOP] and not allowed[0]
    allowed = np.asarray(masks.channels(c, jnp.asarray([52]), jnp.asarray([True])))[0]
    assert allowed[B * B]
    pos = np.asarray(masks.positions(c, c, jnp.asarray([20]), jnp.asarray([True])))[0]
    expect = [p > 20 and (p // 8) % 2 == 0 and (p % 8) % 2 == 0 for p in range(64)]
    np.testing.assert_array_equal(pos, expect)


# ---------------------------------------------------------------------------------------------
# 4. Temperature, top-k, top-p.


def test_temperature_to_zero_is_greedy():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(10 * rng.standard_normal((500, 20)), jnp.float32)
    greedy = np.asarray(sampling.sample_logits(jax.random.key(0), logits, temperature=0.0))
    np.testing.assert_array_equal(greedy, np.argmax(np.asarray(logits), -1))
    cold = np.asarray(sampling.sample_logits(jax.random.key(1), logits, temperature=1e-4))
    top2 = np.sort(np.asarray(logits), -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.01  # a gap of 100 nats at this temperature
    assert clear.sum() > 450
    np.testing.assert_array_equal(cold[clear], greedy[clear])


def _frequencies(logits, n=20000, **kw):
    keys = jax.random.split(jax.random.key(3), n)
    draws = jax.vmap(lambda k: sampling.sample_logits(k, logits, **kw))(keys)
    return np.bincount(np.asarray(draws), minlength=logits.shape[-1]) / n


def test_top_p_and_top_k_on_a_hand_made_distribution():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(p, jnp.float32))
    np.testing.assert_allclose(_frequencies(logits), p, atol=0.015)
    # nucleus 0.7: {0, 1} reach 0.8 >= 0.7 (class 1 is needed: 0.5 < 0.7) -> renormalised
    np.testing.assert_allclose(_frequencies(logits, top_p=0.7), [0.625, 0.375, 0, 0], atol=0.015)
    np.testing.assert_allclose(
        _frequencies(logits, top_p=0.9), [0.526, 0.316, 0.158, 0], atol=0.015
    )
    np.testing.assert_array_equal(_frequencies(logits, top_p=0.5), [1, 0, 0, 0])
    np.testing.assert_allclose(_frequencies(logits, top_k=2), [0.625, 0.375, 0, 0], atol=0.015)
    # temperature 2 flattens: p^(1/2) renormalised
    flat = np.sqrt(p) / np.sqrt(p).sum()
    np.testing.assert_allclose(_frequencies(logits, temperature=2.0), flat, atol=0.015)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=-2), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_chunks=0), "max_chunks"),
        (dict(masks="yes"), "masks"),
    ],
)
def test_bad_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        sampling.check_sample_options(**kw)


# ---------------------------------------------------------------------------------------------
# 5. Upsampling and colorization.


def _images(n: int) -> np.ndarray:
    return np.stack([random_image(20 + i, (32, 32)) for i in range(n)])


def test_upsampling_keeps_the_first_dct_channels_exactly():
    images = _images(2)
    prefix = sampling.context_prefix(REP, jnp.asarray(images), "upsample")
    model, call = sampler(-3.0, record_logits=True, max_chunks=2)
    seq, logits = call([0, 1], prefix, "upsample")
    source = np.asarray(sparse.images_to_dct_image(jnp.asarray(images), B, 75, CLIP))
    out = np.asarray(sparse.sequence_to_dct_image(jax.tree.map(jnp.asarray, seq), B, GRID))
    k0 = [0, B * B, 2 * B * B]
    np.testing.assert_array_equal(out[..., k0], source[..., k0])
    forward = make_forward(model)
    for n in range(2):
        p = int(prefix.length[n])
        assert 48 < p <= 96  # the prefix ends inside chunk 2: its first p - 48 steps replay it
        np.testing.assert_array_equal(seq.channel[n, :p], np.asarray(prefix.channel)[n, :p])
        sampled = seq.channel[n, p : int(seq.length[n])]
        assert sampled.size and (sampled[sampled < STOP] % (B * B) != 0).all()
        # the replayed and sampled steps of chunk 2 equal the teacher-forced forward
        host = host_sequence(seq, n)
        if int(host.length) <= 2 * N_C:
            continue
        ex = training_slice(host, 2)
        ref = forward({k: v[None] for k, v in ex.items()})
        loss = ex["loss_mask"][O:]
        np.testing.assert_allclose(logits[0][n, 0][loss], ref[0][0, O:][loss], atol=2e-4, rtol=1e-4)


def test_colorization_keeps_the_luma_plane_exactly():
    images = _images(2)
    prefix = sampling.context_prefix(COLOR_REP, jnp.asarray(images), "colorize")
    _, call = sampler(-3.0, "luma_first", max_chunks=2)
    seq = call([0, 1], prefix, "colorize")
    source = np.asarray(sparse.images_to_dct_image(jnp.asarray(images), B, 75, CLIP))
    out = np.asarray(sparse.sequence_to_dct_image(jax.tree.map(jnp.asarray, seq), B, GRID))
    np.testing.assert_array_equal(out[..., : B * B], source[..., : B * B])
    for n in range(2):
        p, m = int(prefix.length[n]), int(seq.length[n])
        assert m > p and (seq.channel[n, p:m] >= B * B).all()  # only chroma (and STOP) sampled
        assert set(_violations(seq, n, "luma_first").values()) == {0}
    decoded = np.asarray(COLOR_REP.decode(jax.tree.map(jnp.asarray, seq)))
    assert decoded.shape == (2, 32, 32, 3) and decoded.dtype == np.uint8


def test_tasks_need_their_codec_order():
    with pytest.raises(ValueError, match="order='interleaved'"):
        sampling.check_task(COLOR_REP, "upsample")
    with pytest.raises(ValueError, match="luma_first"):
        sampling.check_task(REP, "colorize")
    with pytest.raises(ValueError, match="task='zoom'"):
        sampling.check_task(REP, "zoom")


# ---------------------------------------------------------------------------------------------
# 6. Memory does not grow with the number of chunks.


def test_memory_is_constant_in_the_number_of_chunks():
    """XLA's memory analysis of the compiled sampler: more chunks add only the sequence buffer
    (N * N_c * 4 int32 fields per chunk), no activations."""
    model = model_with_stop_bias(0.0)
    graphdef, state = nnx.split(model)
    n = 4

    def temp(max_chunks: int) -> int:
        def run(state, indices):
            return sampling.sample_sequences(
                nnx.merge(graphdef, state), REP, jax.random.key(0), indices, max_chunks=max_chunks
            )

        compiled = jax.jit(run).lower(state, jnp.arange(n)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp(2), temp(20)
    buffer_growth = 18 * N_C * n * 4 * 4
    assert large - small <= 2 * buffer_growth + 64 * 1024, (small, large)

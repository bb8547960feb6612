"""DCTransformer (spec dctransformer.md §3) against independent oracles.

- causality: perturb one input / teacher-forced target at slot l of a real decoder slice and check
  which logits may move (a tiny model with random non-zero ReZero alphas and random weights, so
  that nothing is trivially zero);
- the encoder image of `chunking.make_chunk` against the sequence itself (no target element);
- parameter counts of every Table 3 column against the paper's numbers (spec §3.7 band);
- a tiny model overfits a few images' chunks and greedy decoding reproduces them;
- argument checks, 'SAME' padding against XLA's own rule, encoder cells against a brute-force
  loop, dropout on / off.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common, dctransformer_quickstart
from dctjax.autoregressive import chunking, likelihood
from dctjax.autoregressive import sampling as ar_sampling
from dctjax.codec import sparse
from dctjax.data import synthetic
from dctjax.families.autoregressive import Autoregressive
from dctjax.models import dctransformer as dct
from dctjax.train import loop

B = 4  # block size: 3B^2 = 48 channels
GRID = (8, 12)  # a 32 x 48 image; non-square so that a swapped G_h / G_w shows
CLIP = 255
N_C, O = 48, 16
T = N_C + O
DOWNSAMPLE = (3, 2)  # encoder grid (4, 6), 'SAME' padding (0, 1) on both axes
BATCH = 20  # every causality call uses this batch size (one compilation)

FIELDS = (
    "encoder_image", "input_channel", "input_position", "input_value", "input_mask",
    "target_channel", "target_position",
)  # fmt: skip


def randomize(model: nnx.Module, seed: int, alpha: float | None = None) -> nnx.Module:
    """In place, also on an `nnx.eval_shape` model (no JAX initialisers to compile): ReZero
    alphas +-U(0.5, 1.5) (zero-initialised in the model) or the constant `alpha`, kernels
    N(0, 1 / fan_in), embeddings N(0, 1), biases N(0, 0.1^2), norm scales 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param):
            continue
        shape, name = tuple(node.shape), path[-1]
        if name == "alpha":
            new = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5) if alpha is None else alpha
        elif name == "kernel":
            new = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
        elif name in ("embedding", "encoder_pos", "slot_embed"):
            new = rng.standard_normal(shape)
        elif name == "bias":
            new = 0.1 * rng.standard_normal(shape)
        elif name == "scale":
            new = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            raise AssertionError(f"unexpected parameter {path}")
        node.set_value(jnp.asarray(new, jnp.float32))
    return model


def tiny_model(seed: int = 0, **overrides) -> dct.DCTransformer:
    kwargs = dict(
        block_size=B, grid_shape=GRID, clip=CLIP, num_slots=T, size="T",
        channel_spec=[(1, 1), (1, 1)], position_spec=[(1, 1), (1, 1)],
        value_spec=[(1, 1), (1, 1)], downsample=DOWNSAMPLE,
    )  # fmt: skip
    kwargs.update(overrides)
    abstract = nnx.eval_shape(lambda: dct.DCTransformer(**kwargs, rngs=nnx.Rngs(seed)))
    return randomize(abstract, seed + 1)


def random_params(model, seed: int, alpha: float | None = None):
    """Random parameters (see `randomize`) for a family's `TrainedModel`, without running the
    model's initialisers."""
    abstract = jax.eval_shape(model.init_fn, jax.random.key(0))
    return nnx.state(randomize(nnx.merge(model.graphdef, abstract), seed, alpha), nnx.Param)


def make_forward(model: dct.DCTransformer):
    """jit (state, batch dict, key) -> three float32 NumPy logits."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, batch, key):
        net = nnx.merge(graphdef, state)
        return net(*(batch[k] for k in FIELDS), dropout_key=key)

    def call(batch, key=None):
        out = fwd(state, {k: jnp.asarray(batch[k]) for k in FIELDS}, key)
        return tuple(np.asarray(x) for x in out)

    return call


@pytest.fixture(scope="module")
def causal_model():
    model = tiny_model(0)
    return model, make_forward(model)


def random_image(seed: int, shape=(32, 48)) -> np.ndarray:
    """Smooth random colours plus noise: a long sequence (>> 3 chunks) from the real codec."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    out = np.full((*shape, 3), 128.0)
    for c in range(3):
        for _ in range(4):
            fy, fx = rng.uniform(-3, 3, 2)
            out[..., c] += rng.uniform(10, 40) * np.sin(
                2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi)
            )
    out += 12 * rng.standard_normal(out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def codec_sequence(seed: int, shape=(32, 48), quality: int = 75) -> sparse.SparseSequence:
    dense = sparse.np_images_to_dct_image(random_image(seed, shape), B, quality, CLIP)
    return sparse.np_dct_image_to_sequence(dense, B)


def chunk(seq, i, grid=GRID):
    return chunking.make_chunk(seq, i, B, grid, CLIP, N_C, O)


def stack(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _same(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _moved(a, b) -> float:
    return float(np.max(np.abs(a - b)))


# ---------------------------------------------------------------------------------------------
# 1. Causality.


def _perturbations(base, rng):
    """(kind, slot, example) triples: one changed input or teacher-forced target per example."""
    nc, g, nv = 3 * B * B, GRID[0] * GRID[1], 2 * CLIP + 1
    valid = np.flatnonzero(base["input_mask"])
    slots = [int(valid[0]), int(valid[-1]), *rng.choice(valid[1:-1], 2, replace=False)]
    out = []
    for field, size in (("input_channel", nc), ("input_position", g), ("input_value", nv)):
        for slot in slots[:3] if field != "input_channel" else slots:
            ex = {k: v.copy() for k, v in base.items()}
            ex[field][slot] = (ex[field][slot] + 1 + rng.integers(size - 1)) % size
            out.append(("input", slot, ex))
    for slot in slots[:3]:
        ex = {k: v.copy() for k, v in base.items()}
        ex["target_channel"][slot] = (ex["target_channel"][slot] + 1 + rng.integers(nc)) % (nc + 1)
        out.append(("target_channel", slot, ex))
    for slot in slots[:3]:
        ex = {k: v.copy() for k, v in base.items()}
        row, col = divmod(int(ex["target_position"][slot]), GRID[1])
        # 4 rows / 6 columns away: a different encoder cell at stride 2 (eq. (8) gathers the cell)
        ex["target_position"][slot] = ((row + 4) % GRID[0]) * GRID[1] + (col + 6) % GRID[1]
        out.append(("target_position", slot, ex))
    return out


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_causality_of_inputs_and_teacher_forced_targets(causal_model, which):
    """Input (c, p, v) at slot l: no logits of slots < l move, slot l's channel logits do.
    target_channel at slot j: no channel logits anywhere, no position / value logits before j;
    slot j's position logits move. target_position at slot j: only value logits at >= j; slot
    j's value logits move. (The first chunk has O left-PAD slots; the last ends in PAD.)"""
    _, fwd = causal_model
    seq = codec_sequence(1)
    n = chunking.num_chunks(int(seq.length), N_C)
    i = {"first": 1, "middle": 2, "last": n}[which]
    base = chunk(seq, i)
    perturbed = _perturbations(base, np.random.default_rng(i))
    assert len(perturbed) < BATCH
    examples = [base] + [ex for _, _, ex in perturbed]
    examples += [base] * (BATCH - len(examples))
    logits = fwd(stack(examples))
    ref = [x[0] for x in logits]
    for b, (kind, slot, _) in enumerate(perturbed, start=1):
        ch, pos, val = (x[b] for x in logits)
        if kind == "input":
            for new, old in ((ch, ref[0]), (pos, ref[1]), (val, ref[2])):
                _same(new[:slot], old[:slot])
            assert _moved(ch[slot], ref[0][slot]) > 1e-3, (kind, slot)
        elif kind == "target_channel":
            _same(ch, ref[0])
            _same(pos[:slot], ref[1][:slot])
            _same(val[:slot], ref[2][:slot])
            assert _moved(pos[slot], ref[1][slot]) > 1e-3, (kind, slot)
        else:
            _same(ch, ref[0])
            _same(pos, ref[1])
            _same(val[:slot], ref[2][:slot])
            assert _moved(val[slot], ref[2][slot]) > 1e-3, (kind, slot)


def test_pad_slots_are_masked_as_keys(causal_model):
    """Changing the ids of a left-PAD slot of the first chunk moves no other slot's logits."""
    _, fwd = causal_model
    base = chunk(codec_sequence(2), 1)
    pads = np.flatnonzero(~base["input_mask"])
    assert pads.size == O and (pads == np.arange(O)).all()  # spec §4.2 left padding
    rng = np.random.default_rng(0)
    examples, slots = [base], []
    for slot in (0, 5, O - 1):
        ex = {k: v.copy() for k, v in base.items()}
        ex["input_channel"][slot] = rng.integers(3 * B * B)
        ex["input_position"][slot] = rng.integers(GRID[0] * GRID[1])
        ex["input_value"][slot] = rng.integers(2 * CLIP + 1)
        examples.append(ex)
        slots.append(slot)
    logits = fwd(stack(examples + [base] * (BATCH - len(examples))))
    for b, slot in enumerate(slots, start=1):
        other = np.arange(T) != slot
        for x in logits:
            _same(x[b][other], x[0][other])


def test_changing_a_target_chunk_element_moves_nothing_that_predicts_it(causal_model):
    """End to end through `make_chunk` (the encoder image included): changing the value of
    u_m, an element of the target chunk, leaves every logit of the slots that predict
    u_{a-O+1}..u_m unchanged (with an encoder leak all slots would move)."""
    _, fwd = causal_model
    seq = codec_sequence(3)
    i = 2
    a = (i - 1) * N_C
    rng = np.random.default_rng(1)
    ms = [a + 1, a + 20, a + N_C - 1]
    examples = [chunk(seq, i)]
    for m in ms:
        value = np.array(seq.value).copy()
        old = value[m - 1]  # u_m is seq index m - 1
        choices = [v for v in range(-CLIP, CLIP + 1) if v not in (0, old)]
        value[m - 1] = rng.choice(choices)
        examples.append(chunk(seq._replace(value=value), i))
    logits = fwd(stack(examples + [examples[0]] * (BATCH - len(examples))))
    for b, m in enumerate(ms, start=1):
        j = m - (a - O)  # slot whose input is u_m; slot j - 1 predicts u_m
        for x in logits:
            _same(x[b][:j], x[0][:j])
        assert _moved(logits[0][b][j], logits[0][0][j]) > 1e-3


def _dense_elements(encoder_image: np.ndarray) -> set[tuple[int, int, int]]:
    rows, cols, chans = np.nonzero(encoder_image)
    return {
        (int(c), int(r) * encoder_image.shape[1] + int(q), int(encoder_image[r, q, c]))
        for r, q, c in zip(rows, cols, chans, strict=True)
    }


@pytest.mark.parametrize("seed", [4, 5])
def test_encoder_image_holds_exactly_the_elements_before_the_target_chunk(seed):
    seq = codec_sequence(seed)
    elements = [
        (int(c), int(p), int(v))
        for c, p, v in zip(seq.channel[:-1], seq.position[:-1], seq.value[:-1], strict=True)
    ]
    n = chunking.num_chunks(int(seq.length), N_C)
    assert n >= 4
    for i in range(1, n + 1):
        a = (i - 1) * N_C
        got = _dense_elements(chunk(seq, i)["encoder_image"])
        assert got == set(elements[:a]), i  # u_1..u_a
        assert not got & set(elements[a : a + N_C]), i  # no element of the target chunk


# ---------------------------------------------------------------------------------------------
# 3. Parameter counts.

TABLE3_PARAMS = dict(
    lsun=448e6, ffhq=473e6, imagenet=738e6, openimages=533e6, plant_leaves=325e6,
    retinopathy=318e6, clevr=483e6,
)  # fmt: skip


def test_table3_parameter_counts_within_the_spec_band():
    assert set(TABLE3_PARAMS) == set(common.DCTRANSFORMER_TABLE3)
    rows = []
    for column, t in common.DCTRANSFORMER_TABLE3.items():
        g = t["resolution"] // t["block_size"]

        def build(column=column, t=t, g=g):
            return dct.DCTransformer(
                block_size=t["block_size"], grid_shape=(g, g), clip=t["clip"], num_slots=1024,
                size=column, num_classes=1000 if column == "imagenet" else 0,
                rngs=nnx.Rngs(0),
            )  # fmt: skip

        abstract = nnx.eval_shape(build)
        count = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
        rows.append((column, count, TABLE3_PARAMS[column], count / TABLE3_PARAMS[column]))
    print("\n  column          params     Table 3   ratio")
    for column, count, paper, ratio in rows:
        print(f"  {column:<13} {count / 1e6:7.1f}M  {paper / 1e6:7.0f}M   {ratio:.3f}")
    bad = [r for r in rows if not 0.80 <= r[3] <= 1.05]
    assert not bad, bad


# ---------------------------------------------------------------------------------------------
# 4. Overfitting a few images.


def test_tiny_model_overfits_a_few_images_and_greedy_decoding_reproduces_them():
    """Class-conditional (two unconditional first chunks share their whole context: START, an
    empty encoder image and the teacher-forced (c, p) = (0, 0) of the first element, so its
    value, the images' top-left DC, would be ambiguous; the labels tell them apart)."""
    config = dctransformer_quickstart.get_config("runlocal")  # size T, 32px, B=4, 48 / 16
    config.model_kwargs.update(dropout=0.0)
    config.dataset.num_classes = 4
    model, training = loop.build(config)
    rep = model.representation
    assert (rep.resolution, rep.block_size, rep.chunk_size, rep.overlap) == (32, 4, 48, 16)
    assert config.model_kwargs.size == "T" and dct.DCTRANSFORMER_SIZES["T"]["hidden"] == 64
    source = synthetic.SyntheticShapes(32, split="train")
    items = [source[idx] for idx in (0, 1)]
    assert model.num_classes == 4 and items[0]["label"] != items[1]["label"]
    images = [x["image"] for x in items]
    per_image = [likelihood.sequence_chunks(rep, image) for image in images]
    chunks = [c for cs in per_image for c in cs]
    batch = stack([{k: c[k] for k in likelihood.CHUNK_FIELDS} for c in chunks])
    batch["label"] = np.concatenate(
        [np.full(len(cs), x["label"], np.int32) for x, cs in zip(items, per_image, strict=True)]
    )
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    steps = 120
    tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.05))
    params = random_params(model, 0, alpha=0.0)  # ReZero: every sublayer starts as identity
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        (loss, _), grads = jax.value_and_grad(training.loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for s in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.key(s))
        first = float(loss) if first is None else first
    logits = jax.jit(lambda p: Autoregressive.forward(model, p, batch, None))(params)
    final, _ = jax.jit(lambda p: training.loss_fn(p, batch, None))(params)
    assert first > 8.0  # ~ uniform over the three vocabularies at init
    assert float(final) < 0.05, (first, float(final))

    ch, pos, val = (np.argmax(np.asarray(x), -1) for x in logits)
    b = {k: np.asarray(v) for k, v in batch.items()}
    lm, pm = b["loss_mask"], b["position_loss_mask"]
    np.testing.assert_array_equal(ch[lm], b["target_channel"][lm])
    np.testing.assert_array_equal(pos[pm], b["target_position"][pm])
    np.testing.assert_array_equal(val[pm], b["target_value"][pm])
    # greedy (channel, position, value) of the loss slots, chunk after chunk, re-spell each
    # sequence u_1..u_L' (its elements, then STOP)
    lo = 0
    for image, cs in zip(images, per_image, strict=True):
        seq = rep.host_encode(image)
        sel = slice(lo, lo + len(cs))
        lo += len(cs)
        elem = pm[sel]  # loss slots whose target is an element (not STOP)
        np.testing.assert_array_equal(ch[sel][lm[sel]], np.asarray(seq.channel))
        np.testing.assert_array_equal(pos[sel][elem], np.asarray(seq.position)[:-1])
        np.testing.assert_array_equal(val[sel][elem] - rep.clip, np.asarray(seq.value)[:-1])
    # the chunked, KV-cached sampler at temperature 0 (greedy) writes both sequences out again
    labels = jnp.asarray([x["label"] for x in items], jnp.int32)
    sampled = jax.jit(
        lambda p: ar_sampling.sample_sequences(
            model.module(p), rep, jax.random.key(0), jnp.arange(2), labels, temperature=0.0
        )
    )(params)
    for n, image in enumerate(images):
        seq = rep.host_encode(image)
        m = int(seq.length)
        assert int(sampled.length[n]) == m and not bool(sampled.truncated[n])
        for field in ("channel", "position", "value"):
            np.testing.assert_array_equal(
                np.asarray(getattr(sampled, field))[n, :m], np.asarray(getattr(seq, field))
            )


# ---------------------------------------------------------------------------------------------
# 6. Arguments, 'SAME' padding, encoder cells.


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(channel_spec=[(0, 2)]), "channel_spec"),
        (dict(value_spec=[]), "value_spec"),
        (dict(position_spec=[(1, -1)]), "position_spec"),
        (dict(encoder_spec="abc"), "encoder_spec"),
        (dict(size="XL"), "size"),
        (dict(input_scaling="sqrt"), "input_scaling"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(downsample=(0, 1)), "downsample"),
        (dict(hidden=0), "hidden"),
        (dict(clip=0), "clip"),
        (dict(num_slots=1), "num_slots"),
    ],
)
def test_bad_arguments_raise_naming_the_field(overrides, field):
    kwargs = dict(block_size=B, grid_shape=GRID, clip=CLIP, num_slots=T, size="T")
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=field):
        nnx.eval_shape(lambda: dct.DCTransformer(**kwargs, rngs=nnx.Rngs(0)))


def test_a_slice_longer_than_num_slots_is_refused():
    model = tiny_model(0, num_slots=8)
    n, t = 1, 9
    ids = jnp.zeros((n, t), jnp.int32)
    with pytest.raises(ValueError, match="slots"):
        model(jnp.zeros((n, *GRID, 3 * B * B), jnp.int32), ids, ids, ids, ids > -1, ids, ids)


@pytest.mark.parametrize("remat", [False, True])
def test_from_slot_equals_the_full_pass_from_that_slot(remat):
    """Logits of `from_slot=O` (the value decoder's last cross-attention and FC sublayers on the
    N_c loss slots only) == slots O.. of the full pass, and so do the loss and its gradient."""
    model = tiny_model(3, value_spec=[(1, 1), (1, 2)], remat=remat)
    examples = [chunk(codec_sequence(s), i) for s in (1, 2) for i in (1, 2, 3)]
    batch = {k: jnp.asarray(v) for k, v in stack(examples).items()}
    args = [batch[k] for k in FIELDS]
    graphdef, state = nnx.split(model)

    def logits(state, from_slot):
        return nnx.merge(graphdef, state)(*args, from_slot=from_slot)

    full = jax.jit(lambda s: logits(s, 0))(state)
    cut = jax.jit(lambda s: logits(s, O))(state)
    for a, b in zip(full, cut, strict=True):
        assert b.shape == (len(examples), N_C, a.shape[-1])
        np.testing.assert_allclose(b, a[:, O:], rtol=1e-5, atol=1e-5)

    def loss(state, from_slot):
        lg = logits(state, from_slot)
        return sum(
            jnp.sum(jnp.where(batch[m][:, from_slot:], -jax.nn.log_softmax(x)[..., 0], 0.0))
            for x, m in zip(lg, ("loss_mask", "position_loss_mask", "value_loss_mask"), strict=True)
        )

    assert not np.any(np.asarray(batch["loss_mask"])[:, :O])  # the overlap carries no loss
    with pytest.raises(ValueError, match="from_slot"):
        logits(state, T)
    if remat:  # the same sublayers, recomputed: the logits above suffice
        return
    g_full = jax.jit(jax.grad(lambda s: loss(s, 0)))(state)
    g_cut = jax.jit(jax.grad(lambda s: loss(s, O)))(state)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_cut), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_same_padding_matches_xla_same():
    """Against `jax.lax.padtype_to_pads` (XLA's / TensorFlow's 'SAME': output ceil(n / s),
    the odd pixel at the end) and the output size of a VALID window over the padded axis."""
    for size in range(1, 26):
        for kernel in range(1, 9):
            for stride in range(1, 5):
                lo, hi = dct.same_padding(size, kernel, stride)
                (ref,) = jax.lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")
                assert (lo, hi) == tuple(ref), (size, kernel, stride)
                assert (size + lo + hi - kernel) // stride + 1 == -(-size // stride)


@pytest.mark.parametrize("grid, stride", [((8, 12), 2), ((8, 12), 3), ((5, 7), 2), ((6, 6), 4)])
def test_encoder_cells_brute_force(grid, stride):
    gh, gw = grid
    cell_of = {}
    index = 0
    for cr in range(0, gh, stride):  # cells in raster order over the strided grid
        for cc in range(0, gw, stride):
            for r in range(cr, min(cr + stride, gh)):
                for c in range(cc, min(cc + stride, gw)):
                    cell_of[r * gw + c] = index
            index += 1
    positions = np.arange(gh * gw)
    got = np.asarray(dct.encoder_cells(jnp.asarray(positions), grid, stride))
    np.testing.assert_array_equal(got, [cell_of[p] for p in positions])


def test_encoder_tokens_and_conv_are_same_padded(causal_model):
    """E_input has ceil(G_h/s) * ceil(G_w/s) tokens, and the strided conv equals XLA's 'SAME'
    convolution of the scaled image (receptive fields centred as TensorFlow's)."""
    model, _ = causal_model
    image = np.asarray(chunk(codec_sequence(6), 3)["encoder_image"])[None]
    memory = model.encode(jnp.asarray(image))
    assert memory.shape == (1, 4 * 6, 64)
    x = np.sign(image) * np.log1p(np.abs(image))  # spec §3.4 'log' scaling
    s = DOWNSAMPLE[1]
    ref = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32), model.conv.kernel[...], (s, s), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ) + model.conv.bias[...]  # fmt: skip
    padded = jnp.pad(jnp.asarray(x, jnp.float32), ((0, 0), *model.padding, (0, 0)))
    np.testing.assert_allclose(model.conv(padded), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 7. Dropout.


def test_dropout_only_with_a_key():
    one_block = dict(channel_spec=None, position_spec=None, value_spec=None)  # size T: 1 each
    fwd = make_forward(tiny_model(7, dropout=0.3, **one_block))
    batch = stack([chunk(codec_sequence(8), 2)])
    plain = fwd(batch)
    for x, y in zip(plain, fwd(batch), strict=True):
        np.testing.assert_array_equal(x, y)  # deterministic without a key
    k1 = fwd(batch, jax.random.key(1))
    k1_again = fwd(batch, jax.random.key(1))
    k2 = fwd(batch, jax.random.key(2))
    for a, b, c, d in zip(plain, k1, k1_again, k2, strict=True):
        assert _moved(a, b) > 1e-2  # dropout changes the outputs
        np.testing.assert_array_equal(b, c)  # a key fixes the mask
        assert _moved(b, d) > 1e-2
    # the same weights with dropout = 0: a key changes nothing, and it is the keyless model
    zero = make_forward(tiny_model(7, dropout=0.0, **one_block))(batch, jax.random.key(1))
    for a, b in zip(plain, zero, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("t", [7, 300])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_key_mask", [True, False])
def test_attention_and_its_backward_equal_a_plain_softmax(t, causal, with_key_mask):
    """The custom-VJP attention (weights recomputed from the saved log-sum-exp; causal rows in
    blocks of 128 that skip the keys above the diagonal, so t=300 has a partial last block)
    against a NumPy float64 softmax attention and its closed-form gradients, with left-padded keys
    masked."""
    from dctjax.models.dctransformer import attention

    rng = np.random.default_rng(3)
    n, h, d = 2, 2, 64
    q, k, v, g = (rng.normal(size=(n, t, h, d)) for _ in range(4))
    valid = rng.random((n, t)) > 0.3
    valid[0, :3] = False  # a left-padded row
    valid[:, -1] = True  # (a non-causal row with every key masked has no softmax)
    key_valid = valid if with_key_mask else None

    mask = np.ones((n, 1, t, t), bool)
    if causal:
        mask &= np.tril(np.ones((t, t), bool))
    if key_valid is not None:
        kv = key_valid[:, None, None, :]
        mask &= (kv | np.eye(t, dtype=bool)) if causal else kv
    s = np.einsum("nthd,nshd->nhts", q, k) / np.sqrt(d)
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("nhts,nshd->nthd", p, v)
    dv = np.einsum("nhts,nthd->nshd", p, g)
    dp = np.einsum("nthd,nshd->nhts", g, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(d)
    dq = np.einsum("nhts,nshd->nthd", ds, k)
    dk = np.einsum("nhts,nthd->nshd", ds, q)

    f32 = [jnp.asarray(x, jnp.float32) for x in (q, k, v, g)]
    kv_arg = None if key_valid is None else jnp.asarray(key_valid)
    got = attention(*f32[:3], kv_arg, causal)
    grads = jax.grad(lambda *a: jnp.sum(attention(*a, kv_arg, causal) * f32[3]), (0, 1, 2))(
        *f32[:3]
    )
    np.testing.assert_allclose(got, out, atol=5e-6)
    for got_g, want in zip(grads, (dq, dk, dv), strict=True):
        np.testing.assert_allclose(got_g, want, atol=2e-5)

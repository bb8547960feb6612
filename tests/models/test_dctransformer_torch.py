"""The DCTransformer against an independent PyTorch transcription of spec §3.

`benchmarks/torch_dctransformer.py` is written from the spec (ReZero pre-LN sublayers, PAR stacks,
SAME-padded strided conv, 64 features per head, teacher-forced E_position / E_value, ...). The NNX
parameters are random and off their init (every ReZero alpha +-U(0.4, 1), so no sublayer is the
identity; non-zero biases, non-unit norms) and copied into it; both then run the same decoder
slices: real ones from `chunking.make_chunk` on synthetic images (a left-padded first chunk, a
middle chunk with a non-empty encoder image, a right-padded last chunk) and random ones on odd
luma grids. The torch side runs in float64 as the oracle; the logits and the gradients of the
summed-three-CE loss are compared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dctjax.autoregressive import chunking, objectives
from dctjax.data.sources import make_source
from dctjax.models.dctransformer import DCTRANSFORMER_SIZES, SPEC_NAMES, DCTransformer
from dctjax.representations import make_representation

torch = pytest.importorskip("torch")
ref = pytest.importorskip("benchmarks.torch_dctransformer")

RES, BLOCK, CLIP, CHUNK, OVERLAP = 16, 4, 63, 24, 8  # grid 4x4, 48 channels, T = 32 slots
TINY = dict(
    hidden=64, heads=2, encoder_spec=[(1, 1)], channel_spec=[(1, 1)], position_spec=[(1, 1)],
    value_spec=[(1, 1)],
)  # fmt: skip
FIELDS = (
    "encoder_image", "input_channel", "input_position", "input_value", "input_mask",
    "target_channel", "target_position",
)  # fmt: skip


def _real_slices() -> dict[str, np.ndarray]:
    """Four make_chunk slices of synthetic images: first (left-padded), middle, last, first."""
    rep = make_representation("sparse_dct", resolution=RES, block_size=BLOCK, quality=75, clip=CLIP)
    src = make_source("synthetic", "train", resolution=RES, num_examples=8)
    rows = []
    for i, which in enumerate(("first", "middle", "last", "first")):
        seq = rep.host_encode(np.asarray(src[i]["image"]))
        n = chunking.num_chunks(int(seq.length), CHUNK)
        assert n >= 3, n  # the middle chunk has earlier chunks in its encoder image
        index = {"first": 1, "middle": n // 2 + 1, "last": n}[which]
        rows.append(chunking.make_chunk(seq, index, BLOCK, rep.grid_shape, CLIP, CHUNK, OVERLAP))
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["label"] = np.array([2, 0, 1, 2], np.int32)
    return batch


REAL = _real_slices()


def _random_slices(seed: int, n: int, block: int, grid: tuple[int, int], clip: int, t: int):
    """Random slices in make_chunk's id layout: some left padding (first chunk), START, elements,
    a STOP and right padding in one row; a sparse random encoder image."""
    rng = np.random.default_rng(seed)
    v = chunking.vocab(block, grid, clip)
    g = grid[0] * grid[1]
    ch = rng.integers(0, 3 * block**2, (n, t + 1))
    pos = rng.integers(0, g, (n, t + 1))
    val = rng.integers(0, 2 * clip + 1, (n, t + 1))
    present = np.ones((n, t + 1), bool)
    present[0, :5] = False  # first chunk: 5 PAD slots, then START
    ch[0, 5], pos[0, 5], val[0, 5] = v.start_channel, v.start_position, v.start_value
    stop = t - 6  # row 1 ends: STOP, then PAD
    ch[1, stop], pos[1, stop], val[1, stop] = v.stop_channel, v.pad_position, v.pad_value
    present[1, stop + 1 :] = False
    ch = np.where(present, ch, v.pad_channel)
    pos = np.where(present, pos, v.pad_position)
    val = np.where(present, val, v.pad_value)
    has_target = present[:, 1:] & (ch[:, 1:] != v.start_channel)
    elem = has_target & (ch[:, 1:] != v.stop_channel)
    dense = rng.integers(-300, 301, (n, *grid, 3 * block**2))
    dense = np.where(rng.random(dense.shape) < 0.7, 0, dense)
    batch = dict(
        encoder_image=dense.astype(np.int32),
        input_channel=ch[:, :-1], input_position=pos[:, :-1], input_value=val[:, :-1],
        input_mask=present[:, :-1],
        target_channel=np.where(has_target, ch[:, 1:], 0),
        target_position=np.where(elem, pos[:, 1:], 0),
        target_value=np.where(elem, val[:, 1:], 0),
        loss_mask=has_target & (np.arange(t) >= 4),
        chunk_index=rng.integers(1, 6, (n,)),
        label=rng.integers(0, 3, (n,)),
    )  # fmt: skip
    batch["position_loss_mask"] = batch["value_loss_mask"] = batch["loss_mask"] & elem
    return {
        k: np.asarray(x, np.int32 if x.dtype.kind in "iu" else x.dtype) for k, x in batch.items()
    }


def _model(**kw) -> DCTransformer:
    """A DCTransformer with random non-init parameters (built abstractly, then filled from NumPy:
    no jax.random kernels to compile). Every ReZero alpha is +-U(0.4, 1)."""
    kw = {
        **dict(block_size=BLOCK, grid_shape=(RES // BLOCK,) * 2, clip=CLIP, downsample=(2, 1)),
        **TINY,
        **kw,
    }
    kw.setdefault("num_slots", CHUNK + OVERLAP)
    abstract = nnx.eval_shape(lambda: DCTransformer(**kw, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    rng = np.random.default_rng(1)

    def fill(keypath, p):
        name, shape = str(getattr(keypath[-1], "key", keypath[-1])), p.shape
        if name == "alpha":
            x = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
        elif name == "kernel":  # Dense (in, out) or Conv HWIO: N(0, 1 / fan_in)
            x = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        elif name == "scale":
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "bias":
            x = 0.1 * rng.standard_normal(shape)
        else:  # embedding tables, encoder_pos, slot_embed
            x = 0.3 * rng.standard_normal(shape)
        return jnp.asarray(x, p.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, params))


def _torch_model(model: DCTransformer, kw: dict):
    spec = {**TINY, **{k: v for k, v in kw.items() if k in TINY}}
    tm = ref.DCTransformer(
        block_size=model.block_size, grid_shape=model.grid_shape, clip=model.clip,
        num_slots=model.num_slots, downsample=kw.get("downsample", (2, 1)),
        dropout=model.dropout, input_scaling=model.input_scaling, input_scale=model.input_scale,
        num_classes=model.num_classes, value_pos_embedding=model.value_pos_embedding,
        chunk_embeddings=model.chunk_embeddings, **spec,
    ).double()  # fmt: skip
    ref.load_nnx_params(tm, nnx.state(model, nnx.Param))
    return tm.eval()


def _args(model: DCTransformer, batch: dict) -> tuple:
    labels = batch["label"] if model.num_classes else None
    chunk = batch["chunk_index"] if model.chunk_embeddings else None
    return (*(batch[k] for k in FIELDS), labels, chunk)


def _torch_args(args) -> list:
    """NumPy ids / masks -> int64 / bool tensors (None stays None)."""
    out = []
    for a in args:
        a = None if a is None else np.asarray(a)
        out.append(
            None
            if a is None
            else torch.from_numpy(a.astype(a.dtype if a.dtype == bool else np.int64))
        )
    return out


@nnx.jit
def _forward(model, *args):
    return model(*args)


def _compare(model: DCTransformer, kw: dict, batch: dict, rtol: float = 2e-4):
    tm = _torch_model(model, kw)
    args = _args(model, batch)
    out = [
        np.asarray(x)
        for x in _forward(model, *(None if a is None else jnp.asarray(a) for a in args))
    ]
    with torch.no_grad():
        want = [x.numpy() for x in tm(*_torch_args(args))]
    for name, got, w in zip(("channel", "position", "value"), out, want, strict=True):
        assert got.shape == w.shape and got.dtype == np.float32, name
        scale = np.abs(w).max()
        assert scale > 0.1, name  # a non-trivial comparison
        np.testing.assert_allclose(got, w, rtol=rtol, atol=rtol * scale, err_msg=name)
    return tm, want


def test_real_slices_cover_padding_and_encoder_images():
    b = REAL
    assert not b["input_mask"][0, :OVERLAP].any() and b["input_mask"][0, OVERLAP]  # O PAD, START
    assert b["encoder_image"][0].sum() == 0 and np.abs(b["encoder_image"][1]).sum() > 0
    assert not b["input_mask"][2, -1] and not b["loss_mask"][2, -1]  # right padding
    assert (b["target_channel"][b["loss_mask"]] == 3 * BLOCK**2).sum() == 1  # STOP in 'last'


@pytest.mark.parametrize(
    "kw",
    [
        {},  # 'T'-like: hidden 64, 2 heads of 64 (inner 128), stride 1
        dict(  # hidden 48 != heads * 64, a 2-self-attention block, a block with no FC, stride 2
            hidden=48,
            heads=3,
            downsample=(3, 2),
            input_scaling="linear",
            input_scale=50.0,
            encoder_spec=[(2, 1)],
            channel_spec=[(1, 0), (1, 2)],
            position_spec=[(2, 1)],
            value_spec=[(1, 1), (1, 0)],
        ),  # fmt: skip
    ],
)
def test_real_slices_match_torch(kw):
    _compare(_model(**kw), kw, REAL)


def test_conditioning_changes_the_torch_output():
    """The class / chunk-number / value-position embeddings of the compared model are live."""
    kw = dict(num_classes=3, value_pos_embedding=True, chunk_embeddings=3)
    model = _model(**kw)
    tm = _torch_model(model, kw)
    with torch.no_grad():
        base = [x.numpy() for x in tm(*_torch_args(_args(model, REAL)))]
        tm.value_pos_embedding = False
        out = tm(*_torch_args(_args(model, REAL)))
        assert np.abs(out[2].numpy() - base[2]).max() > 1e-3  # only the value logits move
        np.testing.assert_array_equal(out[0].numpy(), base[0])
        tm.value_pos_embedding = True
        for field, new in (("label", [1, 2, 0, 0]), ("chunk_index", [2, 3, 1, 2])):
            out = tm(*_torch_args(_args(model, {**REAL, field: np.asarray(new, np.int32)})))
            assert all(np.abs(o.numpy() - w).max() > 1e-3 for o, w in zip(out, base, strict=True))


@pytest.mark.parametrize(
    "grid,downsample",
    [((5, 7), (4, 2)), ((7, 5), (3, 3))],  # SAME pads (1, 2) x (1, 2); (1, 1) x (0, 1)
)
def test_odd_grid_strided_same_padding_matches_torch(grid, downsample):
    kw = dict(grid_shape=grid, block_size=2, clip=7, num_slots=20, downsample=downsample,
              num_classes=3, chunk_embeddings=2, value_pos_embedding=True)  # fmt: skip
    model = _model(**kw)
    assert model.encoder_grid == tuple(-(-g // downsample[1]) for g in grid)
    _compare(model, kw, _random_slices(3, 3, 2, grid, 7, 20))


def test_tf_same_padding_by_hand():
    # TensorFlow: out = ceil(n / s), pad = max((out - 1) s + k - n, 0), the smaller half first
    assert ref.tf_same_padding(5, 4, 2) == (1, 2)
    assert ref.tf_same_padding(7, 3, 3) == (1, 1)
    assert ref.tf_same_padding(5, 3, 3) == (0, 1)
    assert ref.tf_same_padding(8, 2, 1) == (0, 1)
    assert ref.tf_same_padding(8, 6, 3) == (2, 2)
    assert ref.tf_same_padding(4, 1, 2) == (0, 0)


def test_logits_and_loss_gradients_match_torch():
    """Class-conditional, value_pos_embedding, chunk embeddings, a stride-2 conv, dropout 0.1 (off
    without a key / in eval), remat: the logits, the loss (summed three CE / target slots) and its
    gradient w.r.t. every parameter against torch autograd."""
    kw = dict(
        num_classes=3, value_pos_embedding=True, chunk_embeddings=3, downsample=(3, 2), dropout=0.1,
        remat=True,
    )  # fmt: skip
    model = _model(**kw)
    tm = _torch_model(model, kw)
    args = _args(model, REAL)
    names = (*FIELDS, "label", "chunk_index")

    @nnx.jit
    def loss_and_grad(model, batch):
        def loss_fn(m):
            logits = m(*(None if a is None else batch[k] for k, a in zip(names, args, strict=True)))
            return objectives.chunk_loss(logits, batch)[0], logits

        return nnx.value_and_grad(loss_fn, has_aux=True)(model)

    (loss, logits), grads = loss_and_grad(model, {k: jnp.asarray(v) for k, v in REAL.items()})
    grads = nnx.to_pure_dict(grads)
    t_logits = tm(*_torch_args(args))
    t_loss = ref.chunk_loss(t_logits, dict(zip(REAL, _torch_args(REAL.values()), strict=True)))
    t_loss.backward()
    for got, want in zip(logits, t_logits, strict=True):
        want = want.detach().numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-5)
    assert t_loss.item() > 1.0
    checked = 0
    for path, p, layout in ref.param_pairs(tm):
        g = ref.to_torch_layout(ref.lookup(grads, path), layout)
        w = p.grad.numpy()
        scale = np.abs(w).max()
        if path[-1] == "alpha" or path[0] in ("conv", "slot_embed", "chunk_embed", "class_embed"):
            assert scale > 1e-4, path  # these must all receive gradient
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3 * scale + 1e-7, err_msg=str(path))
        checked += 1
    assert checked == len(list(tm.parameters()))


@pytest.mark.parametrize("size", ["T", "S", "lsun"])
def test_param_counts_agree(size):
    s = DCTRANSFORMER_SIZES[size]
    kw = dict(block_size=8, grid_shape=(16, 16), clip=255, num_slots=1024, num_classes=10)
    model = nnx.eval_shape(lambda: DCTransformer(**kw, size=size, rngs=nnx.Rngs(0)))
    with torch.device("meta"):  # shapes only
        tm = ref.DCTransformer(
            **kw, **{k: s[k] for k in ("hidden", "heads", "downsample", *SPEC_NAMES)}
        )
    n_jax = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_jax == sum(p.numel() for p in tm.parameters())

"""The autoregressive family (DCTransformer) on the one train loop: config checks before any
compilation, durations in tokens, the cosine schedule, chunk-index metrics, the held-out bits per
subpixel during training, colorization training, and every Table 3 config traced on 8 devices.
(Resume, the NaN guard, compile_only and 8 devices == 1 are in tests/train/test_loop.py.)"""

import importlib
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import common
from dctjax import families
from dctjax.autoregressive import sampling
from dctjax.codec import sparse
from dctjax.sampling import load_workdir_sampler
from dctjax.train import loop, sharding
from dctjax.train import state as state_lib
from tests.helpers import tiny_ar_config

TABLE3 = sorted(common.DCTRANSFORMER_TABLE3)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("resolution", 36, r"resolution=36 is not divisible by 2\*block_size=8"),
        ("representation_kwargs.clip", 0, r"clip=0 is out of range"),
        ("representation_kwargs.clip", -5, r"clip=-5 is out of range"),
        ("representation_kwargs.overlap", 64, r"overlap=64 is longer than chunk_size=48"),
        ("representation_kwargs.max_length", 5000, r"max_length=5000 .* exceeds the longest"),
        ("representation_kwargs.max_len", 100, r"max_len=100 .* shorter than max_length=200"),
        ("representation", "pixels", r"trains on representation 'sparse_dct'"),
        ("sample.top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("sample.task", "zoom", r"task='zoom'; use 'upsample' or 'colorize'"),
        ("model_kwargs.size", "XXL", r"unknown dctransformer size='XXL'"),
        ("model_kwargs.dropout", 1.5, r"dropout=1.5 must be in \[0, 1\)"),
        ("optim.lr_decay", "step", r"lr_decay='step'"),
    ],
)
def test_config_errors_before_compilation(tmp_path, field, value, match):
    c = tiny_ar_config()
    c.representation_kwargs.max_length = 200
    *parents, name = field.split(".")
    node = c
    for parent in parents:
        node = node[parent]
    node[name] = value
    with pytest.raises(ValueError, match=match):
        loop.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_total_tokens_and_cosine_schedule():
    """A step trains batch * chunk_size target slots; the LR warms up to lr then decays to 0 at
    the run's last step (cosine, spec §4.5)."""
    c = tiny_ar_config()
    with c.unlocked():
        c.total_steps = None
        c.total_tokens = 10 * 8 * 48 + 100  # floored: 10 steps of 8 chunks of 48 targets
        c.optim.warmup_steps = 2
    data = families.DataAccess(lambda: loop.open_source(c))
    assert loop.Durations.from_config(c, data).total == 10
    _, training = loop.build(c, data)
    lr = [float(training.lr_schedule(s)) for s in range(11)]
    peak = c.optim.lr
    assert lr[0] == 0
    assert math.isclose(lr[1], peak / 2, rel_tol=1e-6) and math.isclose(lr[2], peak, rel_tol=1e-6)
    u = (6 - 2) / (10 - 2)
    assert math.isclose(lr[6], peak * (1 + math.cos(math.pi * u)) / 2, rel_tol=1e-6)
    assert lr[10] == 0


def test_tokens_need_a_token_counting_family():
    from tests.helpers import tiny_config

    c = tiny_config()
    with c.unlocked():
        c.total_steps = None
        c.total_tokens = 1000
    with pytest.raises(ValueError, match="total_tokens is only for families that count tokens"):
        loop.Durations.from_config(c, families.DataAccess(lambda: None))


def test_chunk_index_metrics_are_ratios_of_interval_sums():
    """bpd_chunk_i is the mean over the interval's examples with chunk index i (K+ pools i >= K),
    not a mean of per-step means."""
    c = tiny_ar_config()
    c.autoregressive.log_chunks = 2
    _, training = loop.build(c)
    # two steps: step 1 has 3 examples of chunk 1 (bits 1, 1, 1) and 1 of chunk 3 (bits 5);
    # step 2 has 1 of chunk 1 (bits 3); the loop averages the summed metrics over the 2 steps
    steps = [
        {"_sum_bpd_chunk_1": 3.0, "_count_chunk_1": 3.0, "_sum_bpd_chunk_2": 5.0, "_count_chunk_2": 1.0},
        {"_sum_bpd_chunk_1": 3.0, "_count_chunk_1": 1.0, "_sum_bpd_chunk_2": 0.0, "_count_chunk_2": 0.0},
    ]  # fmt: skip
    averaged = {k: (steps[0][k] + steps[1][k]) / 2 for k in steps[0]}
    averaged["loss"] = 1.0
    out = training.finalize_metrics(averaged)
    assert out == {"loss": 1.0, "bpd_chunk_1": 6.0 / 4, "bpd_chunk_2+": 5.0}


def test_training_logs_bits_held_out_bpd_and_grids(ar_workdir):
    """A short run logs the loss and bits during training, the held-out bits per subpixel, and
    writes a grid of samples."""
    tmp_path = ar_workdir
    grid = Image.open(tmp_path / "samples" / "00000004.png")
    assert grid.size == (64, 64)  # sample.num = 4: 2 x 2 images of 32 px
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
    for tag in ("loss", "bpe_channel", "bpe_position", "bpe_value", "bpd_chunk", "tokens_per_s",
                "eval/bpd", "eval/bpd_channel", "eval/bpd_position", "eval/bpd_value",
                "eval/bpd_chunk_1"):  # fmt: skip
        assert tag in tags, (tag, sorted(tags))
    saved = json.loads((tmp_path / "checkpoints" / "4" / "config" / "metadata").read_text())
    assert saved["family"] == "autoregressive"


def test_colorization_trains_on_chroma_chunks():
    """The OpenImages column (colorization: luma-first order, chroma targets only) in its runlocal
    size: every drawn chunk targets chroma elements (or STOP) only, and the family's loss and
    gradients on such a batch are finite and non-zero (the loop itself is tested per family in
    tests/train/test_loop.py)."""
    from tests.helpers import ar_batch

    c = importlib.import_module("configs.dctransformer_openimages").get_config("runlocal")
    assert c.representation_kwargs.colorization and c.representation_kwargs.max_length is None
    model, training = loop.build(c)
    spec = model.family.batch_spec(c, model)
    b = {k: v for k, v in ar_batch(c, 4).items() if k in spec}
    bsz = c.representation_kwargs.block_size
    targets = b["target_channel"][b["loss_mask"]]
    assert targets.size and np.all(targets >= bsz * bsz)  # Cb, Cr or STOP (3B^2)
    params = model.init_fn(jax.random.key(0))
    grad_fn = jax.jit(jax.value_and_grad(training.loss_fn, has_aux=True))
    (loss, metrics), grads = grad_fn(params, b, jax.random.key(1))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert float(metrics["tokens_per_step"]) == targets.size
    assert any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("column", TABLE3)
def test_table3_configs_trace_on_8_devices(column):
    """Every Table 3 config builds and its train step traces and lowers with the 8-device mesh at
    8 chunks a step (one per device); `benchmarks/train_step.py` compiles them for memory."""
    name = {"lsun": "lsun"}.get(column, column)
    c = importlib.import_module(f"configs.dctransformer_{name}").get_config()
    c.batch_size = 8
    model, training = loop.build(c)
    rep = model.representation
    assert model.graphdef is not None and rep.chunk_size == 896 and rep.overlap == 128
    mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp)
    with jax.set_mesh(mesh):
        abstract = state_lib.abstract_train_state(
            model.init_fn, training.tx, 0, mesh, c.mesh.param_strategy, num_emas=1
        )
        bs = sharding.batch_sharding(mesh)
        spec = model.family.batch_spec(c, model)
        batch = {k: jax.ShapeDtypeStruct((8, *s), d, sharding=bs) for k, (s, d) in spec.items()}
        lowered = jax.jit(loop.make_train_step(training)).lower(abstract, batch)
    assert lowered.as_text()  # traced end to end
    g = rep.grid_shape
    assert spec["encoder_image"][0] == (*g, 3 * rep.block_size**2)
    assert sparse.max_sequence_length(g, rep.block_size) > 896  # chunking matters at this size


def test_workdir_sampler_equals_the_chunked_sampler(ar_workdir):
    """`WorkdirSampler.sample` (batched over 8 devices, padded batches) gives the decoded
    `sample_sequences` of the checkpoint's weights, and sample i does not depend on the batch."""
    s = load_workdir_sampler(ar_workdir)
    assert s.model.family.name == "autoregressive"
    key = jax.random.key(3)
    a = s.sample(key, 3, batch_size=8, max_chunks=2)
    b = s.sample(key, 9, batch_size=16, max_chunks=2)
    np.testing.assert_array_equal(a, b[:3])
    net = nnx.merge(s.model.graphdef, jax.device_get(s.params))
    rep = s.model.representation
    seqs = sampling.sample_sequences(net, rep, key, jnp.arange(3), max_chunks=2)
    np.testing.assert_array_equal(a, np.asarray(rep.decode(seqs)))
    with pytest.raises(ValueError, match=r"\['nfe'\] do not apply"):
        s.sample(key, 2, nfe=10)
    with pytest.raises(ValueError, match="context images and task='upsample' go together"):
        s.sample(key, 2, task="upsample")
    with pytest.raises(ValueError, match="context must be uint8 \\(2, 32, 32, 3\\)"):
        s.sample(key, 2, task="upsample", context=np.zeros((2, 16, 16, 3), np.uint8))


def test_sample_script_upsamples_a_folder_and_refuses_colorization(ar_workdir, tmp_path):
    from dctjax.data import synthetic

    folder = tmp_path / "lowres"
    folder.mkdir()
    src = synthetic.SyntheticShapes(48, split="test")  # resized to the model's 32 px
    for i in range(3):
        Image.fromarray(src[i]["image"]).save(folder / f"{i:02d}.png")
    env = {**os.environ, "XLA_FLAGS": ""}
    r = subprocess.run(
        [sys.executable, "launch/sample.py", f"--workdir={ar_workdir}", f"--upsample={folder}",
         "--max_chunks=2", "--temperature=0.9", "--format=npz", f"--out={tmp_path}/up.npz"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(tmp_path / "up.npz") as data:
        assert data["images"].shape == (3, 32, 32, 3) and data["images"].dtype == np.uint8
    r = subprocess.run(
        [sys.executable, "launch/sample.py", f"--workdir={ar_workdir}", f"--colorize={folder}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 2 and "order='luma_first'" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_fid_of_a_dctransformer_workdir(ar_workdir, tmp_path):
    from dctjax.eval import evaluate
    from tests.eval.test_metrics import fake_feature_fn

    feature_fn = fake_feature_fn(pool3_dim=8, spatial_dim=4)
    ref = tmp_path / "ref32.npz"
    evaluate.compute_reference(
        feature_fn, dataset="synthetic", resolution=32, num=16, out=str(ref), batch_size=8,
        max_keep=16,
    )  # fmt: skip
    out = evaluate.evaluate_workdir(
        str(ar_workdir), feature_fn, str(ref), num=8, batch_size=8,
        sampler_options={"temperature": 0.9, "max_chunks": 2},
    )  # fmt: skip
    assert out["num_samples"] == 8 and np.isfinite(out["fid"]) and out["fid"] > 0

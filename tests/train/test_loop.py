"""The one train loop end to end on the synthetic dataset, for the diffusion family and (where
parametrized) the flow and autoregressive families: training, sample grids, sampling from a
checkpoint, resume after a kill (bitwise), the NaN guard, config validation, compile_only, the
8-device sharded step against 1 device, and the missing-data message."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dctdiff_afhq512
from dctjax import families
from dctjax.autoencoder import losses as ae_losses
from dctjax.autoregressive import objectives as ar_objectives
from dctjax.data import sources
from dctjax.diffusion.generate import generate
from dctjax.families import diffusion as diffusion_family
from dctjax.families import flow as flow_family
from dctjax.train import checkpoint, loop, sharding
from dctjax.train import state as state_lib
from tests.helpers import ar_batch, tiny_ae_config, tiny_ar_config, tiny_config, tiny_flow_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tree_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))


def test_end_to_end_then_sample_from_checkpoint(tmp_path, monkeypatch):
    c = tiny_config()
    logged = {}
    make_writer = loop.metrics.make_writer

    def recording_writer(*args, **kwargs):
        writer = make_writer(*args, **kwargs)
        write = writer.write_scalars
        writer.write_scalars = lambda step, scalars: (
            logged.update({step: scalars}),
            write(step, scalars),
        )
        return writer

    monkeypatch.setattr(loop.metrics, "make_writer", recording_writer)
    st = loop.train_and_evaluate(c, str(tmp_path))
    assert int(st.step) == 4
    assert sorted(logged) == [2, 4]  # log_every=2
    expected = {
        "loss",
        "lr",
        "grad_norm",
        "param_norm",
        "update_norm",
        "steps_per_s",
        "images_per_s",
    }
    assert expected <= set(logged[4]) and all(np.isfinite(v) for v in logged[4].values())
    # the parameter norm is the one of the step's updated parameters (not an average)
    norm = np.sqrt(sum(np.sum(np.square(np.float64(x))) for x in jax.tree.leaves(st.params)))
    np.testing.assert_allclose(logged[4]["param_norm"], norm, rtol=1e-5)
    grid = tmp_path / "samples" / "00000004.png"
    assert grid.exists()
    # Sample from the saved checkpoint's EMA weights.
    model, training = loop.build(c)
    mesh = sharding.make_mesh()
    abstract = state_lib.abstract_train_state(model.init_fn, training.tx, c.seed, mesh)
    with checkpoint.Checkpointer(tmp_path, handle_sigterm=False) as ck:
        restored, step = ck.restore_latest(abstract)
    assert step == 4 and _tree_equal(restored.ema_params, st.ema_params)
    net = nnx.merge(model.graphdef, restored.ema_params)
    images = generate(net, model.representation, model.process, jax.random.key(0), 2, nfe=3)
    assert images.shape == (2, 32, 32, 3) and images.dtype == jnp.uint8


FAMILIES = {
    "diffusion": (tiny_config, "configs/quickstart.py", diffusion_family, "diffusion_loss"),
    "flow": (tiny_flow_config, "configs/jit_quickstart.py", flow_family, "flow_loss"),
    "autoregressive": (
        tiny_ar_config, "configs/dctransformer_quickstart.py", ar_objectives, "chunk_loss",
    ),
    "autoencoder": (
        tiny_ae_config, "configs/autoencoder_quickstart.py", ae_losses, "l1_loss",
    ),
}  # fmt: skip
# the config variant each family's tiny config starts from
VARIANTS = {"autoencoder": "runlocal,gan,esm"}
# command-line flags giving the runlocal variant the sizes of the FAMILIES' tiny configs
TINY_FLAGS = {
    "diffusion": ["--config.model_kwargs.embed_dim=32", "--config.model_kwargs.depth=2",
                  "--config.model_kwargs.num_heads=2", "--config.dataset.num_examples=64"],
    "autoregressive": ["--config.optim.warmup_steps=1"],
    "autoencoder": ["--config.autoencoder.kl_weight=1e-6", "--config.autoencoder.gan.start=2",
                    "--config.dataset.num_examples=64"],
}  # fmt: skip
TINY_FLAGS["flow"] = TINY_FLAGS["diffusion"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resume_after_kill_is_bitwise(tmp_path, family):
    make_config, config_file = FAMILIES[family][:2]
    total = 30  # killed after checkpoint 10 of 30, resumed to 30
    base = make_config(total_steps=total, checkpoint_every=5, log_every=5, sample_every=0)
    ref = loop.train_and_evaluate(base, str(tmp_path / "ref"))
    work = tmp_path / "killed"
    cmd = [
        sys.executable, "launch/train.py",
        f"--config={config_file}:{VARIANTS.get(family, 'runlocal')}",
        f"--workdir={work}", *TINY_FLAGS[family],
        f"--config.total_steps={total}", "--config.checkpoint_every=5", "--config.log_every=5",
        "--config.sample_every=0", "--config.keep_checkpoints=10",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (work / "checkpoints" / "10").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] < total, "the run finished before it was killed; raise total"
    resumed = loop.train_and_evaluate(base, str(work))
    assert int(resumed.step) == total
    assert _tree_equal(resumed.params, ref.params)
    assert _tree_equal(resumed.ema_params, ref.ema_params)
    assert _tree_equal(resumed.extra_emas, ref.extra_emas)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nan_guard_keeps_last_good_checkpoint(tmp_path, monkeypatch, family):
    make_config, _, module, loss_name = FAMILIES[family]
    c = make_config(total_steps=2)
    loop.train_and_evaluate(c, str(tmp_path))
    real_loss = getattr(module, loss_name)

    def nan_loss(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        if isinstance(out, tuple):
            return out[0] * jnp.nan, out[1]
        return out * jnp.nan

    monkeypatch.setattr(module, loss_name, nan_loss)
    with pytest.raises(FloatingPointError, match=r"steps 3\.\.4: .*loss=nan"):
        loop.train_and_evaluate(make_config(total_steps=6), str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("resolution", 36, "resolution=36 is not divisible by 2\\*block_size=8"),
        ("model", "resnet", "unknown model|resnet"),
        ("representation", "voxels", "unknown representation 'voxels'"),
        ("batch_size", 6, "batch_size=6 is not divisible by the 8 devices"),
        ("dtype", "float16", "dtype='float16'"),
        ("model_kwargs.attention", "cudnn", "attention='cudnn' cannot run float32 attention"),
        ("model_kwargs.attention", "flash", "attention='flash' is not one of"),
    ],
)
def test_config_validation_before_compilation(tmp_path, field, value, match):
    c = tiny_config()
    *parents, name = field.split(".")
    node = c
    for parent in parents:
        node = node[parent]
    node[name] = value
    with pytest.raises(ValueError, match=match):
        loop.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compile_only_on_8_devices(tmp_path, family):
    make_config = FAMILIES[family][0]
    report = loop.train_and_evaluate(make_config(), str(tmp_path), compile_only=True)
    assert report["flops_per_step"] > 0 and report["gflops_per_image"] > 0
    assert report["argument_size_in_bytes"] > 0
    # the logging-step variant materialises the update: about as many temporaries or more (XLA's
    # buffer assignment differs between the two programs by a few percent on tiny models)
    assert report["log_step_temp_size_in_bytes"] >= 0.95 * report["temp_size_in_bytes"] > 0


@pytest.mark.parametrize(
    "family,strategy,fsdp",
    [
        ("diffusion", "replicate", 1), ("diffusion", "fsdp", 2), ("flow", "fsdp", 2),
        ("autoregressive", "fsdp", 2), ("autoencoder", "fsdp", 2),
    ],
)  # fmt: skip
def test_sharded_step_equals_single_device(family, strategy, fsdp):
    c = FAMILIES[family][0]()
    model, training = loop.build(c)
    step = loop.make_train_step(training)
    rng = np.random.default_rng(0)
    if family == "autoregressive":
        spec = model.family.batch_spec(c, model)
        batch = {k: v for k, v in ar_batch(c, 8).items() if k in spec}
    else:
        batch = {
            "image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 4, (8,), dtype=np.int32),
        }

    def run(mesh):
        st = state_lib.create_train_state(
            model.init_fn, training.tx, 0, mesh, strategy, min_size_mb=0.0,
            num_emas=len(training.ema_decays),
        )  # fmt: skip
        sh = sharding.batch_sharding(mesh)
        b = jax.tree.map(lambda x: jax.device_put(x, sh), batch)
        f = jax.jit(step)
        for _ in range(2):
            st, m = f(st, b)
        return jax.device_get(st.params), float(m["loss"])

    p8, l8 = run(sharding.make_mesh(fsdp=fsdp))
    p1, l1 = run(sharding.make_mesh(devices=jax.devices()[:1]))
    assert abs(l8 - l1) < 1e-5
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4), p8, p1)


def test_afhq_without_data_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = dctdiff_afhq512.get_config()
    with pytest.raises(sources.DatasetNotPreparedError, match="(?s)prepare_data.py.*AFHQ"):
        loop.train_and_evaluate(c, str(tmp_path / "run"))


def test_inverse_variance_weights_match_numpy():
    """Weights are 1/Var of each encoded feature over images and tokens, normalised to mean 1."""

    class Rep:
        def encode(self, images):  # (N, 2, 2, 3) -> (N, 4 tokens, 3 features)
            return images.reshape(images.shape[0], 4, 3).astype(jnp.float32) / 255.0

    rng = np.random.default_rng(0)
    scales = np.array([10, 40, 120])
    images = [rng.integers(0, 256, (2, 2, 3)) * scales / 255 for _ in range(64)]
    src = [{"image": np.round(im).astype(np.uint8)} for im in images]
    w = diffusion_family.inverse_variance_weights(Rep(), src, num=64)
    x = np.stack([s["image"] for s in src]).reshape(-1, 3) / 255.0
    expected = 1 / x.var(axis=0)
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-4)
    assert w[0] > w[1] > w[2]
    # A constant feature (grey images' chroma) is floored at 1e-3 of the largest variance.
    grey = [
        {"image": np.stack([s["image"][..., 2]] * 2 + [np.full((2, 2), 7, np.uint8)], -1)}
        for s in src
    ]
    w = diffusion_family.inverse_variance_weights(Rep(), grey, num=64, power=0.5)
    x = np.stack([g["image"] for g in grey]).reshape(-1, 3) / 255.0
    var = x.var(axis=0)
    expected = np.maximum(var, 1e-3 * var.max()) ** -0.5
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-4)


def test_loss_weighting_none_is_the_plain_mse_and_ebfr_is_the_representations():
    """'none' gives unit weights (None) even for DCT tokens, whose own weights are EBFR."""

    class Model:
        class representation:  # noqa: N801
            @staticmethod
            def loss_weights():
                return np.array([3.0, 1.0], np.float32)

    c = tiny_config()
    fam = diffusion_family.Diffusion()
    c.diffusion.loss_weighting = "none"
    assert fam.loss_weights(c, Model(), None) is None
    c.diffusion.loss_weighting = "representation"
    np.testing.assert_array_equal(fam.loss_weights(c, Model(), None), [3.0, 1.0])


def test_unknown_loss_weighting_is_an_error(tmp_path):
    c = tiny_config()
    c.diffusion.loss_weighting = "snr"
    with pytest.raises(ValueError, match="loss_weighting='snr'"):
        loop.train_and_evaluate(c, str(tmp_path))


def test_relative_workdir(tmp_path, monkeypatch):
    """orbax needs absolute paths: a relative --workdir (as in the README) saves and resumes."""
    monkeypatch.chdir(tmp_path)
    loop.train_and_evaluate(tiny_config(total_steps=2, sample_every=0), "rel_run")
    assert (tmp_path / "rel_run" / "checkpoints" / "2" / "state").is_dir()
    st = loop.train_and_evaluate(tiny_config(total_steps=4, sample_every=0), "rel_run")
    assert int(st.step) == 4


# Names this run's shared-memory segments /psm_k<8 hex> (Python's own are /psm_<8 hex>, and k is
# not a hex digit), so the check below sees only them while other tests run beside it.
SHM_TAG_SITECUSTOMIZE = """
import multiprocessing.shared_memory
multiprocessing.shared_memory._SHM_NAME_PREFIX = "/psm_k"
"""


def tagged() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith("psm_k")]


def test_sigterm_to_the_process_group_saves_and_leaves_no_shared_memory(tmp_path):
    """A cluster's preemption signals every process of the job: the trainer saves and exits with
    75; its grain workers (which ignore the signal) are stopped and no segment stays in /dev/shm."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SHM_TAG_SITECUSTOMIZE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    work = tmp_path / "run"
    cmd = [
        sys.executable, "launch/train.py", "--config=configs/quickstart.py:runlocal",
        f"--workdir={work}", "--config.dataset.num_examples=64", "--config.model_kwargs.embed_dim=32",
        "--config.model_kwargs.depth=2", "--config.model_kwargs.num_heads=2",
        "--config.total_steps=100000", "--config.checkpoint_every=5", "--config.log_every=5",
        "--config.sample_every=0", "--config.input.worker_count=2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not (work / "checkpoints" / "10").exists():
        time.sleep(0.1)
    has_shm = os.path.isdir("/dev/shm")
    seen = False
    while has_shm and time.time() < deadline and not seen:  # a batch in flight, not yet consumed
        seen = bool(tagged())
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == checkpoint.PREEMPTED_EXIT_CODE, err[-3000:]
    assert "Preempted at step" in err and "Traceback" not in err
    with checkpoint.Checkpointer(work, handle_sigterm=False) as ck:
        assert ck.latest_step() >= 10
    if has_shm:
        assert seen, "the run's grain workers made no tagged segment: the check would see nothing"
        assert not tagged()


def test_every_duration_in_steps_epochs_or_examples():
    """Durations.from_config: epochs use the dataset's size (64 images here), examples the batch."""
    c = tiny_config()  # batch 8, 64 synthetic images
    with c.unlocked():
        c.total_steps = None
        c.total_epochs = 2  # 2 * 64 / 8
        c.log_every = None
        c.log_every_examples = 32  # 32 / 8
        c.checkpoint_every = None
        c.checkpoint_every_epochs = 0.5
        c.eval.every = None
        c.eval.every_examples = 80  # floored: 10 steps
    d = loop.Durations.from_config(c, families.DataAccess(lambda: loop.open_source(c)))
    assert (d.total, d.log_every, d.checkpoint_every, d.sample_every, d.eval_every) == (
        16, 4, 4, 4, 10,
    )  # fmt: skip
    with c.unlocked():
        c.total_steps = 5
    with pytest.raises(ValueError, match="Give only one of total_steps, total_epochs"):
        loop.Durations.from_config(c, families.DataAccess(lambda: loop.open_source(c)))

"""The flow family (JiT + Spectral Forcing) on the one train loop: workdirs, sampling, launchers."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from dctjax import families
from dctjax.diffusion.samplers import heun
from dctjax.diffusion.schedules import FlowSchedule
from dctjax.models import make_model
from dctjax.sampling import load_workdir_sampler
from dctjax.train import checkpoint, loop, sharding
from dctjax.train import state as state_lib
from tests.helpers import tiny_flow_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_workdir_holds_grids_and_both_emas(flow_workdir):
    assert (flow_workdir / "samples" / "00000004.png").exists()
    c = tiny_flow_config(ema_decay=[0.99, 0.9])
    model, training = loop.build(c)
    assert training.ema_decays == (0.99, 0.9)
    abstract = state_lib.abstract_train_state(
        model.init_fn, training.tx, c.seed, sharding.make_mesh(), num_emas=2
    )
    with checkpoint.Checkpointer(flow_workdir, handle_sigterm=False) as ck:
        st, step = ck.restore_latest(abstract)
    assert step == 4 and len(st.extra_emas) == 1
    # EMA recursion by hand: e_k = d e_{k-1} + (1 - d) p_k, and the two decays differ.
    diffs = [float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(st.ema_params), jax.tree.leaves(st.extra_emas[0]), strict=True)]  # fmt: skip
    assert max(diffs) > 0
    s = load_workdir_sampler(flow_workdir)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(st.ema_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sampling_equals_heun_on_the_x_prediction_velocity(flow_workdir):
    """The family's batched, sharded sampler against Heun run by hand on v = (x-hat - z)/max(1-t, 0.05)."""
    s = load_workdir_sampler(flow_workdir)
    assert s.model.family.name == "flow" and s.num_classes == 4 and s.null_label == 4
    key, labels = jax.random.key(2), np.array([0, 1, 2, 3, 1])
    images = s.sample(key, 5, labels, nfe=5, batch_size=8)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    net = nnx.merge(s.model.graphdef, jax.device_get(s.params))
    z0 = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), (32, 32, 3)) for i in range(5)])
    y = jnp.asarray(labels)

    def v(z, t):
        x_hat = net(z, t, y)
        return (x_hat - z) / jnp.maximum(1.0 - t, 0.05)[:, None, None, None]

    x = heun(v, FlowSchedule(), z0, 5)
    ref = np.asarray(jnp.round(jnp.clip((x + 1) * 127.5, 0, 255)).astype(jnp.uint8))
    diff = np.abs(images.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # guidance w = 1 is exactly the conditional model; the interval is the run's (0.1, 1.0)
    w1 = s.sample(key, 5, labels, nfe=5, batch_size=8, guidance=1.0)
    assert np.abs(w1.astype(int) - images.astype(int)).max() <= 1


def test_flow_requests_fail_clearly(flow_workdir):
    s = load_workdir_sampler(flow_workdir)
    with pytest.raises(ValueError, match="VP-diffusion sampler"):
        s.sample(jax.random.key(0), 2, sampler="dpm_solver")
    with pytest.raises(ValueError, match="unknown sampler"):
        s.sample(jax.random.key(0), 2, sampler="nope")
    with pytest.raises(ValueError, match="guidance_interval"):
        s.sample(jax.random.key(0), 2, guidance=2.0, guidance_interval=(0.5, 0.1))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("flow.spectral_forcing.window", 8, "unknown field"),
        ("flow.spectral_forcing.window_size", 5, "does not divide the resolution"),
        ("flow.spectral_forcing.schedule", "cosine", "schedule='cosine'"),
        ("flow.pred_param", "eps", "pred_param='eps'"),
        ("sample.sampler", "ddim", "VP-diffusion sampler"),
        ("label_dropout", 1.5, "label_dropout"),
        ("model_kwargs.patch_size", 5, "patch"),
    ],
)
def test_config_validation_before_compilation(tmp_path, field, value, match):
    c = tiny_flow_config()
    *parents, name = field.split(".")
    node = c
    for p in parents:
        node = node[p]
    with c.unlocked():
        node[name] = value
    with pytest.raises(ValueError, match=match):
        loop.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_nosf_variant_is_vanilla_jit():
    """`:nosf` builds exactly JiT without the filter (same parameters, same outputs)."""
    from configs import jit_quickstart

    c = jit_quickstart.get_config("nosf")
    assert c.flow.spectral_forcing.enabled is False
    model = families.build(c)
    params = model.init_fn(jax.random.key(0))
    vanilla = make_model(
        "jit", rngs=nnx.Rngs(jax.random.key(0)), input_shape=(32, 32, 3), num_classes=4,
        **{k: v for k, v in c.model_kwargs.items() if k != "num_classes"},
    )  # fmt: skip
    vanilla_params = nnx.state(vanilla, nnx.Param)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(vanilla_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    sf = families.build(jit_quickstart.get_config())
    assert sf.module(sf.init_fn(jax.random.key(0))).spectral_forcing is not None


def test_sample_script_and_evaluate_on_a_flow_workdir(flow_workdir, tmp_path):
    r = subprocess.run(
        [sys.executable, "launch/sample.py", f"--workdir={flow_workdir}", "--num=4", "--nfe=3",
         "--labels=2", "--guidance=2.0", f"--out={tmp_path}/grid.png"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "grid.png").size == (64, 64)
    r = subprocess.run(
        [sys.executable, "launch/sample.py", f"--workdir={flow_workdir}", "--sampler=ddim"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert r.returncode == 2 and "error: sampler 'ddim' is a VP-diffusion sampler" in r.stderr
    assert "Traceback" not in r.stderr

    from dctjax.eval import evaluate
    from tests.eval.test_metrics import fake_feature_fn

    feature_fn = fake_feature_fn(pool3_dim=8, spatial_dim=4)
    ref = tmp_path / "ref32.npz"
    evaluate.compute_reference(
        feature_fn, dataset="synthetic", resolution=32, num=16, out=str(ref), batch_size=8,
        max_keep=16,
    )  # fmt: skip
    out = evaluate.evaluate_workdir(
        str(flow_workdir), feature_fn, str(ref), num=8, batch_size=8, nfe=3, seed=0
    )
    assert out["num_samples"] == 8 and np.isfinite(out["fid"]) and out["fid"] > 0

"""Mesh construction, sharding rules, multi-host gating, and the sharded step vs one device."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from dctjax.train import sharding
from dctjax.train import state as state_lib


def test_make_mesh_shapes_and_errors():
    assert jax.device_count() == 8
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert dict(sharding.make_mesh(2, 4).shape) == {"data": 2, "fsdp": 4}
    assert dict(sharding.make_mesh(data=2, fsdp=-1).shape) == {"data": 2, "fsdp": 4}
    assert dict(sharding.make_mesh(fsdp=8).shape) == {"data": 1, "fsdp": 8}
    sub = sharding.make_mesh(devices=jax.devices()[:4])
    assert dict(sub.shape) == {"data": 4, "fsdp": 1}
    assert set(sub.devices.flat) == set(jax.devices()[:4])
    for kwargs, match in [
        ({"data": 3}, "does not match the 8 devices"),
        ({"data": 2, "fsdp": 2}, "does not match"),
        ({"fsdp": 3}, "cannot be split"),
        ({"data": -1, "fsdp": -1}, "At most one"),
        ({"data": 0}, "must be positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            sharding.make_mesh(**kwargs)


def test_fsdp_spec_picks_largest_divisible_axis():
    assert sharding.fsdp_spec((16, 24), 4) == P(None, "fsdp")
    assert sharding.fsdp_spec((24, 16), 4) == P("fsdp")
    assert sharding.fsdp_spec((6, 10), 4) == P()  # nothing divisible: replicate
    assert sharding.fsdp_spec((8, 8), 4) == P(None, "fsdp")  # tie: later axis
    assert sharding.fsdp_spec((3, 3, 6, 12), 4) == P(None, None, None, "fsdp")
    assert sharding.fsdp_spec((12, 10), 4) == P("fsdp")  # largest (10) not divisible
    assert sharding.fsdp_spec((16, 24), 1) == P()


def test_param_shardings_rules():
    mesh = sharding.make_mesh(2, 4)
    abstract = {
        "big": jax.ShapeDtypeStruct((256, 1024), jnp.float32),  # 1 MiB
        "odd": jax.ShapeDtypeStruct((3, 2**18 + 1), jnp.float32),  # > 1 MiB, nothing divisible
        "small": jax.ShapeDtypeStruct((64,), jnp.float32),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "rng": jax.eval_shape(lambda: jax.random.key(0)),
    }
    spec = lambda tree: {k: v.spec for k, v in tree.items()}  # noqa: E731
    fsdp = sharding.param_shardings(abstract, mesh, "fsdp", min_size_mb=0.5)
    assert spec(fsdp) == {"big": P(None, "fsdp"), "odd": P(), "small": P(), "step": P(), "rng": P()}
    assert all(s.mesh is mesh for s in fsdp.values())
    everything = sharding.param_shardings(abstract, mesh, "fsdp", min_size_mb=0)
    assert spec(everything)["small"] == P("fsdp")
    repl = sharding.param_shardings(abstract, mesh, "replicate")
    assert set(spec(repl).values()) == {P()}
    ruled = sharding.param_shardings(
        abstract, mesh, "replicate", min_size_mb=0, rules=[("^sm", "fsdp"), ("big", P("data"))]
    )
    assert spec(ruled)["small"] == P("fsdp") and spec(ruled)["big"] == P("data")
    with pytest.raises(ValueError, match="valid: replicate, fsdp"):
        sharding.param_shardings(abstract, mesh, "zero3")
    with pytest.raises(ValueError, match="Unknown rule strategy"):
        sharding.param_shardings(abstract, mesh, rules=[("big", "zero3")])


def test_batch_sharding_splits_over_all_devices():
    mesh = sharding.make_mesh(2, 4)
    sh = sharding.batch_sharding(mesh)
    assert sh.spec == P(("data", "fsdp"))
    x = jax.device_put(np.arange(16 * 3).reshape(16, 3), sh)
    assert {s.data.shape for s in x.addressable_shards} == {(2, 3)}


def test_maybe_initialize_distributed(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.delenv(sharding.MULTIHOST_ENV, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    with caplog.at_level(logging.WARNING):
        assert sharding.maybe_initialize_distributed() is False
    assert not calls and "SLURM_NTASKS" in caplog.text
    assert sharding.maybe_initialize_distributed(True, coordinator_address="x:1") is True
    assert calls == [{"coordinator_address": "x:1"}]
    monkeypatch.setenv(sharding.MULTIHOST_ENV, "1")
    assert sharding.maybe_initialize_distributed() is True and len(calls) == 2
    assert sharding.maybe_initialize_distributed(False) is False and len(calls) == 2


# -- the sharded train step equals the one-device step ---------------------------------------
D_IN, D_OUT = 16, 32


def init_linear(key: jax.Array) -> dict:
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.normal(kw, (D_IN, D_OUT)) / np.sqrt(D_IN),
        "b": 0.1 * jax.random.normal(kb, (D_OUT,)),
    }


def loss_fn(params: dict, batch: dict) -> jax.Array:
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((pred - batch["y"]) ** 2)


def make_step(tx: optax.GradientTransformation, ema_decay: float = 0.9):
    def step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        state, metrics = state.apply_gradients(grads, tx, ema_decay)
        return state, {"loss": loss, **metrics}

    return step


def _run(mesh, strategy: str, batches: list[dict]) -> tuple:
    tx = optax.adamw(1e-2, b1=0.99, b2=0.99, weight_decay=0.03)
    st = state_lib.create_train_state(init_linear, tx, 0, mesh, strategy, min_size_mb=0)
    state_sh = sharding.tree_shardings(st)
    batch_sh = sharding.batch_sharding(mesh)
    step = jax.jit(
        make_step(tx),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    losses = []
    for b in batches:
        st, metrics = step(st, jax.device_put(b, batch_sh))
        losses.append(float(jax.device_get(metrics["loss"])))
    return st, losses


def test_sharded_step_equals_single_device():
    rng = np.random.default_rng(0)
    batches = [
        {
            "x": rng.normal(size=(16, D_IN)).astype(np.float32),
            "y": rng.normal(size=(16, D_OUT)).astype(np.float32),
        }
        for _ in range(3)
    ]
    with jax.transfer_guard("disallow"):  # the trainer's safety switch: no implicit transfers
        one, losses1 = _run(sharding.make_mesh(devices=jax.devices()[:1]), "replicate", batches)
        many, losses8 = _run(sharding.make_mesh(2, 4), "fsdp", batches)
    assert many.params["w"].sharding.spec == P(None, "fsdp")
    assert many.params["w"].sharding.mesh.devices.size == 8
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(many.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(many.step) == 3
    assert isinstance(many.params["w"].sharding, NamedSharding)


def test_round_to_devices():
    mesh = sharding.make_mesh()  # the 8 fake devices
    assert [sharding.round_to_devices(n, mesh) for n in (1, 8, 9, 50, 128)] == [8, 8, 16, 56, 128]

"""TrainState: born-sharded init, EMA math, apply_gradients; the optimiser vs hand-written AdamW."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from dctjax.train import optim, sharding
from dctjax.train import state as state_lib


def init_params(key: jax.Array) -> dict:
    kw, kb = jax.random.split(key)
    return {"w": jax.random.normal(kw, (8, 32)), "b": jax.random.normal(kb, (32,))}


def test_born_sharded_state():
    mesh = sharding.make_mesh(2, 4)
    tx, _ = optim.make_optimizer(lr=1e-3)
    st = state_lib.create_train_state(init_params, tx, 0, mesh, "fsdp", min_size_mb=0.0005)
    # w (8, 32) f32 = 1 KiB >= threshold: split on its largest axis; b (128 B) replicated.
    assert st.params["w"].sharding.spec == P(None, "fsdp")
    assert st.params["b"].sharding.spec == P()
    mu = st.opt_state[0].mu
    assert mu["w"].sharding.spec == P(None, "fsdp") and mu["b"].sharding.spec == P()
    assert st.step.dtype == jnp.int32 and int(st.step) == 0 and st.step.sharding.spec == P()
    assert jax.dtypes.issubdtype(st.rng.dtype, jax.dtypes.prng_key)
    assert st.rng.sharding.spec == P()
    for leaf in jax.tree.leaves(st):
        assert leaf.sharding.mesh.shape == mesh.shape
    # The EMA is an exact copy in its own buffers (so donating the state is safe).
    for p, e in zip(jax.tree.leaves(st.params), jax.tree.leaves(st.ema_params), strict=True):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(e))
        assert p.sharding == e.sharding
        assert (
            p.addressable_shards[0].data.unsafe_buffer_pointer()
            != e.addressable_shards[0].data.unsafe_buffer_pointer()
        )
    # Same values as an unsharded init with the same key (an int seed s means jax.random.key(s)).
    init_key, state_key = jax.random.split(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(st.params["w"]), init_params(init_key)["w"])
    np.testing.assert_array_equal(jax.random.key_data(st.rng), jax.random.key_data(state_key))
    # The abstract state matches the real one, shardings included.
    abstract = state_lib.abstract_train_state(init_params, tx, 0, mesh, "fsdp", 0.0005)
    assert jax.tree.structure(abstract) == jax.tree.structure(st)
    for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(st), strict=True):
        assert (a.shape, a.dtype, a.sharding) == (x.shape, x.dtype, x.sharding)


def test_ema_update_closed_form():
    ema0 = {"a": jnp.array([1.0, -2.0, 3.0]), "h": jnp.array([4.0], jnp.bfloat16)}
    p = {"a": jnp.array([0.5, 0.0, -1.0]), "h": jnp.array([0.0], jnp.bfloat16)}
    decay, n = 0.9, 7
    ema = ema0
    for _ in range(n):
        ema = state_lib.ema_update(ema, p, decay)
    expected = decay**n * np.array([1.0, -2.0, 3.0]) + (1 - decay**n) * np.array([0.5, 0.0, -1.0])
    np.testing.assert_allclose(ema["a"], expected, rtol=1e-6)
    assert ema["h"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(ema["h"][0]), 4.0 * decay**n, rtol=2e-2)
    same = state_lib.ema_update(p, p, 0.9999)  # EMA of a constant stays put
    np.testing.assert_array_equal(same["a"], p["a"])


def test_apply_gradients_and_step_key():
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    tx = optax.sgd(0.1)
    st = state_lib.create_train_state(init_params, tx, jax.random.key(3), mesh)
    grads = jax.tree.map(jnp.ones_like, st.params)
    new, metrics = jax.jit(lambda s, g: s.apply_gradients(g, tx, 0.5))(st, grads)
    assert int(new.step) == 1
    w0 = np.asarray(st.params["w"])
    np.testing.assert_allclose(new.params["w"], w0 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(new.ema_params["w"], w0 - 0.05, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], np.sqrt(8 * 32 + 32), rtol=1e-6)
    np.testing.assert_allclose(metrics["update_norm"], 0.1 * np.sqrt(8 * 32 + 32), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["param_norm"],
        np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(new.params))),
        rtol=1e-6,
    )
    same, quiet = jax.jit(lambda s, g: s.apply_gradients(g, tx, 0.5, log_norms=False))(st, grads)
    assert set(quiet) == {"grad_norm"}  # the norms over the parameters are for logging steps
    np.testing.assert_allclose(quiet["grad_norm"], metrics["grad_norm"], rtol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, (same.params, same.ema_params),
                 (new.params, new.ema_params))  # fmt: skip
    big_seed = state_lib._as_key(2**32 - 1)  # int seeds are put on device explicitly
    np.testing.assert_array_equal(
        jax.random.key_data(big_seed), jax.random.key_data(jax.random.key(2**32 - 1))
    )
    with pytest.raises(ValueError, match="int seed"):
        state_lib._as_key(-1)
    expected_key = jax.random.fold_in(st.rng, 1)
    np.testing.assert_array_equal(
        jax.random.key_data(new.step_key()), jax.random.key_data(expected_key)
    )


# -- optimiser ---------------------------------------------------------------------------------
def _adamw_reference(params, grads_seq, lrs, b1, b2, eps, wd, decay_mask):
    """PyTorch AdamW: p <- p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps), float64."""
    p = {k: np.float64(v) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, (g, lr) in enumerate(zip(grads_seq, lrs, strict=True), start=1):
        for k in p:
            gk = np.float64(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            mhat, vhat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            decay = wd if decay_mask[k] else 0.0
            p[k] = p[k] * (1 - lr * decay) - lr * mhat / (np.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("exclude_1d", [False, True])
def test_optimizer_matches_pytorch_adamw(exclude_1d):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.ones(4, np.float32)}
    grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}]
    grads_seq.append({k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()})
    grads_seq.append({k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()})
    lr, warmup = 0.5, 4  # large lr and wd so decay shows
    tx, sched = optim.make_optimizer(
        {"lr": lr, "warmup_steps": warmup, "wd_exclude_1d": exclude_1d}
    )
    assert float(sched(0)) == 0.0
    lrs = [float(sched(t)) for t in range(3)]
    np.testing.assert_allclose(lrs, [0.0, lr / 4, lr / 2])
    p = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(p)

    @jax.jit
    def update(g, opt_state, p):
        updates, opt_state = tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    for i, g in enumerate(grads_seq):
        p, opt_state = update(g, opt_state, p)
        if i == 0:  # lr = 0 at step 0: nothing moves
            for k in params:
                np.testing.assert_array_equal(p[k], params[k])
    ref = _adamw_reference(
        params, grads_seq, lrs, 0.99, 0.99, 1e-8, 0.03, {"w": True, "b": not exclude_1d}
    )
    for k in params:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


def test_optimizer_defaults_clipping_and_errors():
    c = optim.resolve_config({"lr": 2e-4, "ema_decay": 0.9999})
    assert (c["b1"], c["b2"], c["eps"], c["weight_decay"]) == (0.99, 0.99, 1e-8, 0.03)
    assert c["warmup_steps"] == 5000 and c["grad_clip_norm"] is None and not c["wd_exclude_1d"]
    _, sched = optim.make_optimizer(lr=2e-4)
    np.testing.assert_allclose(
        [sched(0), sched(2500), sched(5000), sched(10**6)], [0, 1e-4, 2e-4, 2e-4]
    )
    _, const = optim.make_optimizer(lr=1.0, warmup_steps=0)
    assert float(const(0)) == 1.0
    # Clipping: Adam's moment sees the clipped gradient (Adam itself is nearly scale-invariant).
    params = {"w": jnp.ones((2, 2))}
    big = {"w": jnp.full((2, 2), 100.0)}
    tx_clip, _ = optim.make_optimizer(lr=0.1, warmup_steps=0, grad_clip_norm=1.0)
    _, st = tx_clip.update(big, tx_clip.init(params), params)
    np.testing.assert_allclose(st[1][0].mu["w"], 0.01 * 0.5, rtol=1e-6)  # (1 - b1) * 0.5
    tx_plain, _ = optim.make_optimizer(lr=0.1, warmup_steps=0)
    _, st = tx_plain.update(big, tx_plain.init(params), params)
    np.testing.assert_allclose(st[0].mu["w"], 0.01 * 100.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown optimiser option"):
        optim.make_optimizer(lr=1.0, beta1=0.9)
    with pytest.raises(ValueError, match="base learning rate"):
        optim.make_optimizer({})
    np.testing.assert_allclose(
        optim.global_norm({"a": jnp.ones(4), "b": jnp.full(1, 3.0)}), np.sqrt(13)
    )

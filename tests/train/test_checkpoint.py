"""Checkpointer: exact round trip with the grain iterator, retention, crash mid-write, restore into
other meshes, weights-only init, preemption flag, NNX state."""

import functools
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from dctjax.data import pipeline
from dctjax.train import checkpoint, optim, sharding
from dctjax.train import state as state_lib


class IndexSource:
    """Example i: label i, a constant (2, 2, 3) image."""

    num_classes = None

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> dict:
        return {"image": np.full((2, 2, 3), i, np.uint8), "label": np.int32(i)}


def make_iterator():
    return iter(pipeline.make_dataset(IndexSource(), global_batch_size=4, seed=7))


def init_params(key: jax.Array) -> dict:
    kw, kb = jax.random.split(key)
    return {"w": jax.random.normal(kw, (8, 16)), "b": jax.random.normal(kb, (16,))}


TX, _ = optim.make_optimizer(lr=0.1, warmup_steps=2)
CONFIG = {"lr": 0.1, "model": {"depth": 2}, "name": "test"}


@jax.jit
def _train_step(st: state_lib.TrainState) -> state_lib.TrainState:
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, st.params)
    return st.apply_gradients(grads, TX, 0.9)[0]


@functools.cache
def trained_state(seed: int = 0, steps: int = 2) -> state_lib.TrainState:
    """A state (replicated on all 8 devices) whose params, EMA and Adam moments all differ from
    their initial values. Cached: tests must not donate it."""
    st = state_lib.create_train_state(init_params, TX, seed, sharding.make_mesh())
    for _ in range(steps):
        st = _train_step(st)
    return st


def abstract(mesh, strategy="replicate"):
    return state_lib.abstract_train_state(init_params, TX, 0, mesh, strategy, min_size_mb=0)


def assert_states_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def mesh():
    return sharding.make_mesh()


def test_round_trip_exact_with_iterator_and_config(tmp_path, mesh):
    st = trained_state()
    it = make_iterator()
    for _ in range(3):
        next(it)
    config = ml_collections.ConfigDict(CONFIG)
    with checkpoint.Checkpointer(tmp_path, config=config, async_save=True) as ckpt:
        assert ckpt.restore_latest(abstract(mesh)) is None
        assert ckpt.save(int(st.step), st, it)
        expected = [next(it) for _ in range(2)]  # advancing right after an async save is safe
        assert not ckpt.save(int(st.step), st, it)  # already saved
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        it2 = make_iterator()
        restored, step = ckpt.restore_latest(abstract(mesh), it2)
        assert step == 2 and ckpt.restore_config() == CONFIG
    assert isinstance(restored, state_lib.TrainState)
    assert_states_equal(restored, st)
    assert restored.params["w"].sharding.spec == P() and restored.rng.sharding.mesh == mesh
    for want in expected:
        got = next(it2)
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_array_equal(got["image"], want["image"])


def test_retention_policies(tmp_path, mesh):
    st = trained_state(steps=0)
    with checkpoint.Checkpointer(tmp_path / "a", keep=2, async_save=False) as ckpt:
        for s in range(1, 5):
            ckpt.save(s, st)
        assert ckpt.all_steps() == [3, 4]
    with checkpoint.Checkpointer(tmp_path / "a") as reopened:
        assert reopened.all_steps() == [3, 4]
    with checkpoint.Checkpointer(tmp_path / "b", keep=1, keep_every=2, async_save=False) as ckpt:
        for s in range(1, 6):
            ckpt.save(s, st)
        assert ckpt.all_steps() == [2, 4, 5]
    fids = {1: 5.0, 2: 1.0, 3: 3.0, 4: 4.0}
    with checkpoint.Checkpointer(
        tmp_path / "c", keep=1, best_metric="fid", best_mode="min", async_save=False
    ) as ckpt:
        for s, fid in fids.items():
            ckpt.save(s, st, metrics={"fid": fid})
        assert ckpt.all_steps() == [2, 4]  # the best and the latest


CRASHING_SAVE = """
import os, sys
from unittest import mock
import orbax.checkpoint as ocp
from dctjax.train import checkpoint
from tests.train.test_checkpoint import trained_state

ckpt = checkpoint.Checkpointer(sys.argv[1], async_save=True)
ckpt.save(1, trained_state(steps=1))
ckpt.wait_until_finished()

async def killed(self):  # step 2's files are written; the process dies before the commit
    os._exit(9)

with mock.patch.object(ocp._src.path.atomicity.AtomicRenameTemporaryPath, "finalize", killed):
    ckpt.save(2, trained_state(steps=2))
    ckpt.wait_until_finished()
"""


def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, mesh):
    repo = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_SAVE, str(tmp_path)], cwd=repo, capture_output=True
    )
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    names = os.listdir(tmp_path / "checkpoints")
    partial = [n for n in names if n.startswith("2.orbax-checkpoint-tmp")]
    assert partial and "1" in names and "2" not in names, names
    written = [f for _, _, files in os.walk(tmp_path / "checkpoints" / partial[0]) for f in files]
    assert len(written) > 3, written  # array data was written before the kill

    with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:  # the restarted job
        assert ckpt.all_steps() == [1]
        restored, step = ckpt.restore_latest(abstract(mesh))
        assert step == 1
        assert_states_equal(restored, trained_state(steps=1))
        assert ckpt.save(2, trained_state(steps=2))
        assert ckpt.all_steps() == [1, 2]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]  # tmp dir cleaned up


def test_restore_into_other_meshes(tmp_path, mesh):
    st = trained_state()  # replicated on 8 devices
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(2, st)
        fsdp_mesh = sharding.make_mesh(2, 4)
        fsdp = ckpt.restore(2, abstract(fsdp_mesh, "fsdp"))
        assert fsdp.params["w"].sharding.spec == P(None, "fsdp")
        assert fsdp.opt_state[0].nu["w"].sharding.spec == P(None, "fsdp")
        assert_states_equal(fsdp, st)
        small_mesh = sharding.make_mesh(fsdp=4, devices=jax.devices()[4:])
        small = ckpt.restore(2, abstract(small_mesh, "fsdp"))
        assert small.params["w"].sharding.device_set == set(jax.devices()[4:])
        assert small.params["b"].sharding.spec == P("fsdp")
        assert_states_equal(small, st)


def test_init_from_loads_weights_only(tmp_path, mesh):
    st = trained_state()
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, trained_state(steps=1))
        ckpt.save(2, st)
    fresh = state_lib.create_train_state(init_params, TX, 5, sharding.make_mesh(2, 4), "fsdp", 0)
    for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "2"):
        tuned = checkpoint.init_from(path, fresh)
        assert_states_equal(tuned.params, st.params)
        assert_states_equal(tuned.ema_params, st.ema_params)
        assert int(tuned.step) == 0
        assert_states_equal(tuned.opt_state, fresh.opt_state)
        assert_states_equal(tuned.rng, fresh.rng)
        assert tuned.params["w"].sharding == fresh.params["w"].sharding
    older = checkpoint.init_from(tmp_path / "checkpoints" / "1", fresh, use_ema_for_params=True)
    assert_states_equal(older.params, trained_state(steps=1).ema_params)
    with pytest.raises(FileNotFoundError):
        checkpoint.init_from(tmp_path / "nothing", fresh)


def test_sigterm_sets_preemption_flag(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    first = checkpoint.Checkpointer(tmp_path / "a")
    second = checkpoint.Checkpointer(tmp_path / "b")
    assert not first.reached_preemption(10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert first.reached_preemption(11) and second.reached_preemption(11)
    first.close()
    assert signal.getsignal(signal.SIGTERM) != before  # still in use by `second`
    second.close()
    assert signal.getsignal(signal.SIGTERM) == before
    with checkpoint.Checkpointer(tmp_path / "c") as third:  # a fresh start is not preempted
        assert not third.reached_preemption(0)
    with checkpoint.Checkpointer(tmp_path / "d", handle_sigterm=False):
        assert signal.getsignal(signal.SIGTERM) == before


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(4, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.dense(x))


def test_nnx_state_round_trip(tmp_path, mesh):
    init = lambda key: nnx.state(Tiny(nnx.Rngs(key)), nnx.Param)  # noqa: E731
    tx, _ = optim.make_optimizer(lr=0.1, wd_exclude_1d=True)
    st = state_lib.create_train_state(init, tx, 1, mesh)
    assert isinstance(st.params, nnx.State)
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(0, st)
        restored = ckpt.restore(0, state_lib.abstract_train_state(init, tx, 1, mesh))
    assert isinstance(restored.params, nnx.State)
    assert_states_equal(restored, st)
    other = state_lib.create_train_state(init, tx, 2, mesh)
    tuned = checkpoint.init_from(tmp_path, other)
    assert jax.tree.structure(tuned.params) == jax.tree.structure(st.params)
    assert_states_equal(tuned.params, st.params)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Tiny(nnx.Rngs(0))), nnx.Param)
    assert nnx.merge(graphdef, tuned.params)(jnp.ones((1, 4))).shape == (1, 8)


def test_checkpoints_written_before_several_emas_still_restore(tmp_path, mesh):
    """A one-EMA state is written without `extra_emas`, as every checkpoint was before states could
    hold several EMAs: a checkpoint in that layout (written here with orbax directly) restores."""
    import orbax.checkpoint as ocp

    st = trained_state()
    old_layout = {k: getattr(st, k) for k in ("step", "params", "opt_state", "ema_params", "rng")}
    mngr = ocp.CheckpointManager(tmp_path / checkpoint.CHECKPOINT_DIR)
    mngr.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(old_layout)))
    mngr.wait_until_finished()
    mngr.close()
    with checkpoint.Checkpointer(tmp_path, handle_sigterm=False) as ck:
        restored, step = ck.restore_latest(abstract(mesh))
    assert step == 2 and restored.extra_emas == ()
    assert_states_equal(restored, st)


def test_two_emas_round_trip(tmp_path, mesh):
    """With two decays both EMAs are updated (d e + (1 - d) p each) and saved and restored."""
    st = state_lib.create_train_state(init_params, TX, 0, mesh, num_emas=2)
    grads = jax.tree.map(jnp.ones_like, st.params)
    new, _ = jax.jit(lambda s: s.apply_gradients(grads, TX, (0.9, 0.5)))(st)
    for d, ema in ((0.9, new.ema_params), (0.5, new.extra_emas[0])):
        want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, st.ema_params, new.params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ema, want)
    with checkpoint.Checkpointer(tmp_path, handle_sigterm=False) as ck:
        ck.save(1, new)
        ck.wait_until_finished()
        target = state_lib.abstract_train_state(
            init_params, TX, 0, mesh, "replicate", min_size_mb=0, num_emas=2
        )
        assert_states_equal(ck.restore(1, target), new)
    with pytest.raises(ValueError, match="2 EMA decays for a state with 1"):
        trained_state().apply_gradients(grads, TX, (0.9, 0.5))

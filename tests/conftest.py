"""Test set-up: 8 fake CPU devices and a session-wide XLA compilation cache, set before jax is
imported anywhere."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests compile the same tiny programs (a run, then its resume in a subprocess and again in
# this process): a persistent cache for this session, inherited by the subprocesses, compiles each
# once. Programs under half a second to compile are not worth a file.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="dctjax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """A workdir trained for 4 steps with the tiny quickstart config (unconditional DiT)."""
    from dctjax.train import loop
    from tests.helpers import tiny_config

    workdir = tmp_path_factory.mktemp("quickstart_run")
    loop.train_and_evaluate(tiny_config(), str(workdir))
    return workdir


@pytest.fixture(scope="session")
def conditional_workdir(tmp_path_factory):
    """A class-conditional DiT (4 classes, null class, label dropout 0.1) trained for 4 steps."""
    from dctjax.train import loop
    from tests.helpers import tiny_config

    workdir = tmp_path_factory.mktemp("conditional_run")
    c = tiny_config(label_dropout=0.1)
    c.dataset.num_classes = 4
    c.model_kwargs.num_classes = 4
    loop.train_and_evaluate(c, str(workdir))
    return workdir


@pytest.fixture(scope="session")
def flow_workdir(tmp_path_factory):
    """A class-conditional JiT with Spectral Forcing (flow family, 4 classes, 2 EMAs), 4 steps."""
    from dctjax.train import loop
    from tests.helpers import tiny_flow_config

    workdir = tmp_path_factory.mktemp("flow_run")
    loop.train_and_evaluate(tiny_flow_config(ema_decay=[0.99, 0.9]), str(workdir))
    return workdir


@pytest.fixture(scope="session")
def ar_workdir(tmp_path_factory):
    """4 steps of the tiny DCTransformer (autoregressive family): bits logged, held-out bits per
    subpixel and a grid of 4 samples (at most 3 chunks each) at step 4."""
    from dctjax.train import loop
    from tests.helpers import tiny_ar_config

    c = tiny_ar_config(total_steps=4, log_every=2, sample_every=4)
    c.eval.update(every=4, split="test", num_images=3, batch_size=8)
    workdir = tmp_path_factory.mktemp("ar_run")
    st = loop.train_and_evaluate(c, str(workdir))
    assert int(st.step) == 4
    return workdir


@pytest.fixture(scope="session")
def ae_workdir(tmp_path_factory):
    """4 steps of the tiny autoencoder (L1 + KL + ESM, GAN from step 2), held-out reconstruction
    metrics at step 4."""
    from dctjax.train import loop
    from tests.helpers import tiny_ae_config

    workdir = tmp_path_factory.mktemp("ae_run")
    c = tiny_ae_config()
    c.eval.update(every=4, num_images=8, batch_size=8)
    loop.train_and_evaluate(c, str(workdir))
    return workdir

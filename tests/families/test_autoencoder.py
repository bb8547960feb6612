"""The autoencoder family (Spectrum Matching, spec spectral.md §4) on the shared loop: the adaptive
GAN weight against the full decoder's gradients, one backward pass giving each network its own
loss, the discriminator's own optimiser, DSM and ESM in the loss, reconstruction sampling and
metrics, config errors, and latent diffusion on a frozen autoencoder (the `latents`
representation). Resume, the NaN guard, compile_only and sharding: tests/train/test_loop.py."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dctjax import representations
from dctjax.autoencoder import losses
from dctjax.codec import spectral
from dctjax.data import sources
from dctjax.families import autoencoder as ae_family
from dctjax.sampling import load_workdir_sampler
from dctjax.train import loop
from tests.helpers import tiny_ae_config, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _replace_leaf(params, name_parts, value):
    def f(path, leaf):
        keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
        return value if all(n in keys for n in name_parts) and keys[-1] != "bias" else leaf

    return jax.tree_util.tree_map_with_path(f, params)


def _leaf(params, name_parts):
    found = []

    def f(path, leaf):
        keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
        if all(n in keys for n in name_parts) and "bias" not in keys:
            found.append(leaf)

    jax.tree_util.tree_map_with_path(f, params)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def built():
    c = tiny_ae_config()
    c.autoencoder.gan.start = 0
    model, training = loop.build(c)
    params = jax.jit(model.init_fn)(jax.random.key(0))
    return c, model, training, params


def _posterior(model, params, x, key):
    net = model.module(params)
    mean, logvar = net.encode(x)
    return mean, logvar, mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)


def test_adaptive_weight_equals_the_full_decoders_gradient_ratio(built):
    """taming's d_weight = ||d nll / d W_last|| / (||d g / d W_last|| + 1e-4) * weight, with W_last
    the decoder's last conv kernel, here by differentiating through the whole decoder."""
    c, model, training, params = built
    batch = {"image": _images(), "label": np.zeros(8, np.int32)}
    key = jax.random.key(3)
    _, metrics = training.loss_fn(params, batch, key, jnp.int32(5))
    x = batch["image"].astype(np.float32) / 127.5 - 1
    _, _, z = _posterior(model, params, x, key)
    path = ("decoder", "conv_out", "kernel")
    w0 = _leaf(params, path)

    def rec(w):
        return model.module(_replace_leaf(params, path, w)).decode(z)

    def nll(w):
        return jnp.mean(jnp.abs(rec(w) - x))

    def g(w):
        return -jnp.mean(model.module(params).discriminate(rec(w)))

    gn, gg = jax.grad(nll)(w0), jax.grad(g)(w0)
    expected = np.linalg.norm(gn) / (np.linalg.norm(gg) + 1e-4) * c.autoencoder.gan.weight
    np.testing.assert_allclose(float(metrics["d_weight"]), expected, rtol=1e-4)
    assert float(metrics["disc_factor"]) == 1.0


def test_one_backward_pass_gives_each_network_its_own_loss(built):
    c, model, training, params = built
    batch = {"image": _images(seed=1), "label": np.zeros(8, np.int32)}
    key, step = jax.random.key(4), jnp.int32(7)
    grads, metrics = jax.grad(lambda p: training.loss_fn(p, batch, key, step), has_aux=True)(params)
    x = batch["image"].astype(np.float32) / 127.5 - 1
    a = c.autoencoder
    d_weight = float(metrics["d_weight"])

    def d_loss(p):  # the discriminator's: the hinge loss on real and (fixed) reconstructions
        mean, logvar, z = _posterior(model, params, x, key)
        rec = model.module(params).decode(z)
        net = model.module(p)
        return losses.hinge_d_loss(net.discriminate(x), net.discriminate(rec))

    def g_loss(p):  # the autoencoder's: nll + KL + ESM + adaptive * generator, D fixed
        mean, logvar, z = _posterior(model, p, x, key)
        rec = model.module(p).decode(z)
        kl = jnp.mean(losses.kl_divergence(mean, logvar)) / (32 * 32 * 3)
        esm = spectral.esm_loss(x, z, a.esm.delta, a.esm.num_bins)
        fake = model.module(params).discriminate(rec)
        return (
            jnp.mean(jnp.abs(rec - x)) + a.kl_weight * kl + a.esm.weight * esm
            - d_weight * jnp.mean(fake)
        )  # fmt: skip

    gd, gg = jax.grad(d_loss)(params), jax.grad(g_loss)(params)
    labels = ae_family.param_labels(params)
    for got, d, g, lab in zip(
        jax.tree.leaves(grads), jax.tree.leaves(gd), jax.tree.leaves(gg), jax.tree.leaves(labels),
        strict=True,
    ):  # fmt: skip
        want = d if lab == "discriminator" else g
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)
    assert {"discriminator", "autoencoder"} == set(jax.tree.leaves(labels))


def test_the_discriminator_has_its_own_optimiser(built):
    """gan.optim with lr 0: the discriminator's updates are 0, the autoencoder's are not."""
    c = tiny_ae_config()
    c.autoencoder.gan.optim = dict(lr=0.0, b1=0.5, b2=0.9, weight_decay=0.0, warmup_steps=0)
    _, training = loop.build(c)
    params = built[3]
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = training.tx.update(grads, training.tx.init(params), params)
    labels = jax.tree.leaves(ae_family.param_labels(params))
    for u, lab in zip(jax.tree.leaves(updates), labels, strict=True):
        if lab == "discriminator":
            assert not np.any(np.asarray(u))
        else:  # AdamW's first step: -lr * sign(g) - lr * wd * p
            assert np.all(np.asarray(u) < 0)


def test_before_the_gan_start_the_gan_terms_are_off(built):
    _, _, training, params = built
    c = tiny_ae_config()
    c.autoencoder.gan.start = 100
    _, tr = loop.build(c)
    batch = {"image": _images(seed=2), "label": np.zeros(8, np.int32)}
    loss, m = tr.loss_fn(params, batch, jax.random.key(0), jnp.int32(99))
    assert float(m["disc_factor"]) == 0.0 and float(m["d_loss"]) == 0.0
    expected = (
        m["rec_l1"] + c.autoencoder.kl_weight * m["kl"] + c.autoencoder.esm.weight * m["esm_kl"]
    )
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_dsm_reconstructs_the_masked_image_from_the_masked_latent():
    c = tiny_ae_config()
    c.autoencoder.gan.enabled = False
    c.autoencoder.esm.weight = 0.0
    c.autoencoder.kl_weight = 0.0
    c.autoencoder.dsm.update(enabled=True, ks=(10,))
    model, training = loop.build(c)
    params = jax.jit(model.init_fn)(jax.random.key(0))
    batch = {"image": _images(seed=3), "label": np.zeros(8, np.int32)}
    key = jax.random.key(5)
    loss, m = training.loss_fn(params, batch, key, jnp.int32(0))
    assert float(m["dsm_k"]) == 10.0
    x = batch["image"].astype(np.float32) / 127.5 - 1
    _, _, z = _posterior(model, params, x, key)
    rec = model.module(params).decode(spectral.dsm_lowpass(z, 10, 8))
    target = spectral.dsm_lowpass(jnp.asarray(x), 10, 8)
    np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.abs(rec - target))), rtol=1e-5)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("autoencoder.gan.loss", "wgan", "gan.loss='wgan'"),
        ("autoencoder.esm.weight", -1.0, "esm.weight must be >= 0"),
        ("autoencoder.dsm", dict(enabled=True, ks=(0, 20)), "dsm.ks=.*in 0..15"),
        ("representation", "dct_tokens", "family 'autoencoder' trains on representation 'pixels'"),
        ("autoencoder.lpips_weights", "/nonexistent/lpips.npz", "lpips_weight=0"),
    ],
)
def test_config_errors_before_compilation(tmp_path, field, value, match):
    c = tiny_ae_config()
    if field == "autoencoder.lpips_weights":
        c.autoencoder.lpips_weight = 0.5
    *parents, name = field.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[name] = value
    with pytest.raises((ValueError, FileNotFoundError, OSError), match=match):
        loop.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_autoencoder_field_is_named():
    c = tiny_ae_config()
    c.autoencoder.esm.deltaa = 2.0
    with pytest.raises(
        ValueError, match=r"config.autoencoder.esm has unknown field\(s\) \['deltaa'\]"
    ):
        loop.build(c)


def test_reconstructions_prior_samples_and_metrics(ae_workdir, tmp_path):
    sampler = load_workdir_sampler(ae_workdir)
    model, params = sampler.model, sampler.params
    src = sources.make_source("synthetic", "test", resolution=32, num_examples=8)
    images = np.stack([src[i]["image"] for i in range(8)])
    rec = sampler.sample(jax.random.key(0), 8, context=images, task="reconstruct")
    net = model.module(params)
    mean, _ = net.encode(images.astype(np.float32) / 127.5 - 1)
    want = np.round(np.clip((np.asarray(net.decode(mean)) + 1) * 127.5, 0, 255))
    assert rec.dtype == np.uint8 and rec.shape == images.shape
    assert np.mean(np.abs(rec.astype(np.float64) - want)) < 0.05
    prior = sampler.sample(jax.random.key(0), 4)
    assert prior.shape == (4, 32, 32, 3) and prior.dtype == np.uint8

    ev = ae_family.ReconstructionEvaluator(model, images, 8, sampler.mesh)
    metrics = ev(params, 4)
    mse = np.mean((rec.astype(np.float64) - images) ** 2)
    np.testing.assert_allclose(metrics["rec_psnr"], 10 * np.log10(255**2 / mse), rtol=1e-3)
    assert np.isfinite(metrics["latent_psd_slope"]) and metrics["latent_std"] > 0

    with pytest.raises(ValueError, match="do not apply"):
        model.family.sample_options(model.config, model, nfe=10)
    np.savez(tmp_path / "imgs.npz", images=images[:4])
    r = subprocess.run(
        [sys.executable, "launch/sample.py", f"--workdir={ae_workdir}",
         f"--reconstruct={tmp_path}/imgs.npz", f"--out={tmp_path}/rec.png"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "rec.png").size == (64, 64)


def test_eval_metrics_were_logged(ae_workdir):
    from tensorboard.backend.event_processing import event_accumulator

    files = [f for f in os.listdir(ae_workdir) if f.startswith("events")]
    acc = event_accumulator.EventAccumulator(os.path.join(ae_workdir, files[0]))
    acc.Reload()
    tags = set(acc.Tags().get("tensors", [])) | set(acc.Tags().get("scalars", []))
    for tag in ("eval/rec_psnr", "eval/latent_psd_slope", "esm_kl", "d_loss", "d_weight", "kl"):
        assert tag in tags, sorted(tags)


def test_latent_diffusion_on_a_frozen_autoencoder(ae_workdir, tmp_path):
    c = tiny_config(total_steps=2, checkpoint_every=2, sample_every=2, log_every=2)
    c.representation = "latents"
    c.representation_kwargs = dict(autoencoder=str(ae_workdir), stats_examples=16)
    c.model = "uvit_pixel"
    c.model_kwargs = dict(size="T", patch_size=4, embed_dim=32, depth=2, num_heads=2)
    work = tmp_path / "ldm"
    loop.train_and_evaluate(c, str(work))
    assert (work / "samples" / "00000002.png").exists()

    # the saved config holds the per-channel shift and scale measured on the AE's training data
    sampler = load_workdir_sampler(work)
    kw = sampler.config.representation_kwargs
    ae = load_workdir_sampler(ae_workdir)
    src = sources.make_source("synthetic", "train", resolution=32, num_examples=64)
    images = np.stack([src[i]["image"] for i in range(16)])
    mean, _ = ae.model.module(ae.params).encode(images.astype(np.float32) / 127.5 - 1)
    z = np.asarray(mean, np.float64).reshape(-1, 4)
    np.testing.assert_allclose(kw.shift, z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(kw.scale, 1 / z.std(0), rtol=1e-4)
    rep = representations.from_config(sampler.config)
    x = np.asarray(rep.encode(images))
    np.testing.assert_allclose(x.reshape(-1, 4).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x.reshape(-1, 4).std(0), 1, rtol=1e-4)

    for name in ("dpm_solver", "ddim"):
        out = sampler.sample(jax.random.key(1), 2, sampler=name, nfe=3)
        assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8

    from dctjax.eval import evaluate
    from tests.eval.test_metrics import fake_feature_fn

    feature_fn = fake_feature_fn(pool3_dim=8, spatial_dim=4)
    ref = tmp_path / "ref32.npz"
    evaluate.compute_reference(
        feature_fn, dataset="synthetic", resolution=32, num=16, out=str(ref), batch_size=8,
        max_keep=16,
    )  # fmt: skip
    res = evaluate.evaluate_workdir(str(work), feature_fn, str(ref), num=8, batch_size=8, nfe=3)
    assert res["num_samples"] == 8 and np.isfinite(res["fid"])


def test_latents_without_an_autoencoder_says_what_to_give():
    with pytest.raises(ValueError, match="representation_kwargs.autoencoder=WORKDIR"):
        representations.make_representation("latents", resolution=32)


def test_config_variants():
    from configs import autoencoder_quickstart, quickstart, sm_celeba256, sm_imagenet256

    c = quickstart.get_config("latents=runs/ae,latent_patch=4")
    assert (c.representation, c.model, c.model_kwargs.patch_size) == ("latents", "uvit_pixel", 4)
    assert c.representation_kwargs.autoencoder == "runs/ae" and c.diffusion.snr_scale == 1.0
    a = autoencoder_quickstart.get_config("gan,esm")
    assert a.autoencoder.gan.enabled and a.autoencoder.esm.weight == 0.01
    assert a.autoencoder.kl_weight == 0.0 and a.recipe == "esm"
    for module in (sm_celeba256, sm_imagenet256):
        for recipe, kl, esm, dsm in (
            ("sdvae", 1e-6, 0.0, False), ("esm", 0.0, 0.01, False), ("dsm", 1e-6, 0.0, True),
        ):  # fmt: skip
            s = module.get_config(recipe)
            assert s.model_kwargs.size == "ldm_f16d16" and s.autoencoder.gan.start == 50_001
            assert s.autoencoder.lpips_weight == 0.5 and s.autoencoder.gan.weight == 0.5
            got = (s.autoencoder.kl_weight, s.autoencoder.esm.weight, s.autoencoder.dsm.enabled)
            assert got == (kl, esm, dsm)
            assert s.optim.lr == 5e-5 and s.optim.grad_clip_norm == 1.0
    with pytest.raises(ValueError, match="unknown config field 'nonsense'"):
        autoencoder_quickstart.get_config("nonsense=1")


def test_paper_configs_build_and_need_lpips_weights_offline(monkeypatch, tmp_path):
    from configs import sm_celeba256
    from dctjax.eval import lpips

    model, _ = loop.build(sm_celeba256.get_config("dsm,nolpips"))
    assert ae_family.latent_shape(model) == (16, 16, 16)

    def offline(*args, **kwargs):
        raise lpips.WeightsUnavailableError("no network")

    monkeypatch.setattr(lpips, "_download", offline)
    monkeypatch.setenv("DCTJAX_CACHE", str(tmp_path))
    with pytest.raises(lpips.WeightsUnavailableError, match="lpips_weight=0"):
        loop.build(sm_celeba256.get_config("esm"))

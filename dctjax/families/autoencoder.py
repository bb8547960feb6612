"""The `autoencoder` family: SD-VAE-style autoencoders with Spectrum Matching (spec spectral.md §4).

The loss of one batch, as the taming / latent-diffusion `LPIPSWithDiscriminator` with the two
Spectrum Matching options of [SM-code]:

  x' = DSM(x, k), z' = DSM(z, k)        (k ~ U{dsm.ks} per step when dsm.enabled, else x' = x, z' = z)
  x_rec = D(z'),  z = mean + std * eps  (the posterior sample; the mean for a deterministic AE)
  nll   = l1_weight * |x' - x_rec| + lpips_weight * LPIPS(x', x_rec)       (means per example)
  loss  = nll + kl_weight * KL / (H W 3) + esm.weight * ESM(x, z)
          + gan.weight * w_adaptive * f(step) * (-mean D(x_rec))            (generator)
          + f(step) * hinge(D(x'), D(sg(x_rec)))                            (discriminator)

with f(step) = 1 from `gan.start` on (taming's `adopt_weight`, 50,001 in the reference) and
w_adaptive = ||grad nll|| / (||grad g|| + 1e-4) w.r.t. the decoder's last conv kernel, clipped to
[0, 1e4] and not differentiated. The generator term sees the discriminator's parameters through
a stop-gradient, the discriminator term sees the reconstruction through one, so one backward pass
gives each network its own gradient; the discriminator has its own optimiser (`gan.optim`) through
`optax.multi_transform` over the parameter tree's `discriminator` branch. The train loop is the
shared one: it passes the step to this loss (`Training.loss_uses_step`).

Reductions (a choice; the reference sums L1 over pixels and divides by the batch): every term is a
per-pixel mean, and the KL (summed over the latent as LDM does) is divided by the pixel count, so
`kl_weight` keeps the meaning it has next to LDM's summed L1 (1e-6: "SD-VAE"). The adaptive weight
makes the GAN term independent of the reduction. LDM's learned output log-variance (initialised to
0, nearly constant in practice) is left out.

Config fields it reads (`config.autoencoder`):
  l1_weight (1.0), lpips_weight (0.5; 0 trains without LPIPS, offline), lpips_weights (None: the
  download cache, or a file from `launch/convert_lpips.py`), kl_weight (1e-6; 0 for ESM-AE),
  esm: weight (0.01 for ESM-AE, 0 off), delta (1.0), num_bins (16);
  dsm: enabled, ks ((0, 8, 10, 12)), block_size (8);
  gan: enabled, weight (0.5), start (50_001), loss ('hinge' | 'vanilla'), ndf (64), n_layers (3),
    optim (None: a copy of config.optim).
  eval: every*, split, num_images, batch_size: reconstruction metrics on held-out images.

Sampling: with context images (task 'reconstruct', `launch/sample.py --reconstruct=DIR`) the
reconstructions D(mean(E(x))); without, decodes of z ~ N(0, I) (the prior's samples: meaningful
for a KL-regularised model only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dctjax import representations
from dctjax.autoencoder import losses
from dctjax.codec import spectral
from dctjax.families import base
from dctjax.train import optim, sharding

DEFAULTS: dict[str, Any] = dict(
    l1_weight=1.0,
    lpips_weight=0.5,
    lpips_weights=None,
    kl_weight=1e-6,
    esm=dict(weight=0.0, delta=1.0, num_bins=16),
    dsm=dict(enabled=False, ks=(0, 8, 10, 12), block_size=8),
    gan=dict(enabled=True, weight=0.5, start=50_001, loss="hinge", ndf=64, n_layers=3, optim=None),
)
LATENT_FIT_RANGE = (0.02, 0.5)  # cycles per latent pixel: all but the lowest bins of a small grid
D_LOSSES = {"hinge": losses.hinge_d_loss, "vanilla": losses.vanilla_d_loss}


def _merge(defaults: dict, given: Any, where: str) -> dict:
    given = dict(given.to_dict() if hasattr(given, "to_dict") else (given or {}))
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; valid: {sorted(defaults)}.")
    out = {}
    for k, v in defaults.items():
        if isinstance(v, dict) and k != "optim":
            out[k] = _merge(v, given.get(k), f"{where}.{k}")
        else:
            out[k] = given.get(k, v)
    return out


def settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.autoencoder over DEFAULTS, checked (ValueError names the field)."""
    s = _merge(DEFAULTS, config.get("autoencoder"), "config.autoencoder")
    for name in ("l1_weight", "lpips_weight", "kl_weight"):
        if not float(s[name]) >= 0:
            raise ValueError(f"autoencoder.{name} must be >= 0, got {s[name]}.")
    if not float(s["esm"]["weight"]) >= 0:
        raise ValueError(f"autoencoder.esm.weight must be >= 0, got {s['esm']['weight']}.")
    if s["gan"]["loss"] not in D_LOSSES:
        raise ValueError(f"autoencoder.gan.loss={s['gan']['loss']!r}; use one of {list(D_LOSSES)}.")
    if s["dsm"]["enabled"]:
        b = int(s["dsm"]["block_size"])
        ks = tuple(int(k) for k in s["dsm"]["ks"])
        if not ks or min(ks) < 0 or max(ks) > 2 * b - 1:
            raise ValueError(f"autoencoder.dsm.ks={ks} must be non-empty, in 0..{2 * b - 1}.")
        s["dsm"]["ks"] = ks
    return s


def _is_discriminator(path: tuple) -> bool:
    first = path[0]
    return getattr(first, "key", getattr(first, "name", None)) == "discriminator"


def param_labels(params: Any) -> Any:
    """'discriminator' for the leaves under the `discriminator` branch, else 'autoencoder'."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "discriminator" if _is_discriminator(path) else "autoencoder", params
    )


def _conv_same(h: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    out = jax.lax.conv_general_dilated(
        h, kernel.astype(h.dtype), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out if bias is None else out + bias.astype(out.dtype)


class Autoencoder(base.Family):
    name = "autoencoder"
    context_tasks = ("reconstruct",)

    # ---- the model ------------------------------------------------------------------------------
    def make_process(self, config: ml_collections.ConfigDict) -> None:
        return None

    def model_kwargs(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        kwargs = dict(config.model_kwargs)
        if "discriminator" in kwargs:
            raise ValueError("set the discriminator with config.autoencoder.gan, not model_kwargs.")
        gan = settings(config)["gan"]
        kwargs["discriminator"] = (
            dict(ndf=int(gan["ndf"]), n_layers=int(gan["n_layers"])) if gan["enabled"] else None
        )
        return kwargs

    def build(self, config: ml_collections.ConfigDict) -> base.TrainedModel:
        if config.representation != "pixels":
            raise ValueError(
                f"family 'autoencoder' trains on representation 'pixels', got "
                f"{config.representation!r}."
            )
        s = settings(config)
        model = super().build(config)
        if s["dsm"]["enabled"]:
            b = int(s["dsm"]["block_size"])
            h, w, _ = latent_shape(model)
            if h % b or w % b or int(config.resolution) % b:
                raise ValueError(
                    f"DSM masks {b}x{b} blocks of the image ({config.resolution} px) and of the "
                    f"latent ({h}x{w}); both must be divisible by autoencoder.dsm.block_size."
                )
        return model

    # ---- training -------------------------------------------------------------------------------
    def optimizer(self, config: ml_collections.ConfigDict) -> tuple[Any, optax.Schedule]:
        tx, lr_schedule = optim.make_optimizer(config.optim, batch_size=int(config.batch_size))
        gan = settings(config)["gan"]
        if not gan["enabled"]:
            return tx, lr_schedule
        d_cfg = gan["optim"] if gan["optim"] is not None else config.optim
        d_tx, _ = optim.make_optimizer(d_cfg, batch_size=int(config.batch_size))
        return optax.multi_transform(
            {"autoencoder": tx, "discriminator": d_tx}, param_labels
        ), lr_schedule

    def make_training(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, data: base.DataAccess
    ) -> base.Training:
        del data
        s = settings(config)
        tx, lr_schedule = self.optimizer(config)
        rep = model.representation
        res = int(config.resolution)
        num_pixels = res * res * 3
        l1_w, lp_w, kl_w = float(s["l1_weight"]), float(s["lpips_weight"]), float(s["kl_weight"])
        esm, dsm, gan = s["esm"], s["dsm"], s["gan"]
        lpips_params = load_perceptual(s) if lp_w else None
        d_loss_fn = D_LOSSES[gan["loss"]]

        def nll_of(x_target, x_rec):
            rec = l1_w * losses.l1_loss(x_target, x_rec)
            metrics = {"rec_l1": jnp.mean(losses.l1_loss(x_target, x_rec))}
            if lpips_params is not None:
                from dctjax.eval import lpips

                p = lpips.lpips_distance(lpips_params, x_target, x_rec)
                rec = rec + lp_w * p
                metrics["lpips"] = jnp.mean(p)
            return jnp.mean(rec), metrics

        def loss_fn(params, batch, key, step):
            x = rep.encode(batch["image"])
            net = model.module(params)
            mean, logvar = net.encode(x)
            if logvar is not None:
                z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
            else:
                z = mean
            metrics = {}
            x_target, z_dec = x, z
            if dsm["enabled"]:
                ks = jnp.asarray(dsm["ks"], jnp.int32)
                k = ks[jax.random.randint(jax.random.fold_in(key, 1), (), 0, ks.shape[0])]
                x_target = spectral.dsm_lowpass(x, k, int(dsm["block_size"]))
                z_dec = spectral.dsm_lowpass(z, k, int(dsm["block_size"]))
                metrics["dsm_k"] = k.astype(jnp.float32)
            x_rec, hidden = net.decode(z_dec, return_hidden=True)
            nll, rec_metrics = nll_of(x_target, x_rec)
            metrics.update(rec_metrics)
            loss = nll
            if logvar is not None:
                kl = jnp.mean(losses.kl_divergence(mean, logvar)) / num_pixels
                metrics["kl"] = kl
                loss = loss + kl_w * kl
            if float(esm["weight"]):
                esm_kl = spectral.esm_loss(x, z, float(esm["delta"]), int(esm["num_bins"]))
                metrics["esm_kl"] = esm_kl
                loss = loss + float(esm["weight"]) * esm_kl
            if gan["enabled"]:
                disc_factor = losses.adopt_weight(1.0, step, int(gan["start"]))
                # the generator sees the discriminator through a stop-gradient
                frozen_d = model.module(
                    jax.tree_util.tree_map_with_path(
                        lambda p, v: jax.lax.stop_gradient(v) if _is_discriminator(p) else v,
                        params,
                    )
                )
                g_loss = losses.generator_loss(frozen_d.discriminate(x_rec))
                conv = net.decoder.conv_out
                kernel = conv.kernel[...]
                bias = None if conv.bias is None else conv.bias[...]
                h = jax.lax.stop_gradient(hidden)

                def last_layer(w):
                    return _conv_same(h, w, bias).astype(jnp.float32)

                nll_grad = jax.grad(lambda w: nll_of(x_target, last_layer(w))[0])(kernel)
                g_grad = jax.grad(
                    lambda w: losses.generator_loss(frozen_d.discriminate(last_layer(w)))
                )(kernel)
                d_weight = losses.adaptive_weight(nll_grad, g_grad) * float(gan["weight"])
                loss = loss + d_weight * disc_factor * g_loss
                logits_real = net.discriminate(jax.lax.stop_gradient(x_target))
                logits_fake = net.discriminate(jax.lax.stop_gradient(x_rec))
                d_loss = disc_factor * d_loss_fn(logits_real, logits_fake)
                loss = loss + d_loss
                metrics.update(
                    g_loss=g_loss, d_loss=d_loss, d_weight=d_weight, disc_factor=disc_factor,
                    logits_real=jnp.mean(logits_real), logits_fake=jnp.mean(logits_fake),
                )  # fmt: skip
            return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

        return base.Training(loss_fn, tx, lr_schedule, base.ema_decays(config), loss_uses_step=True)

    def evaluations(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, mesh: jax.sharding.Mesh
    ) -> list:
        e = config.get("eval") or ml_collections.ConfigDict()
        every = any(e.get(f"every{u}") for u in ("", "_steps", "_epochs", "_examples"))
        if not every or not int(e.get("num_images") or 0):
            return []
        from dctjax.train.loop import open_source

        eval_config = ml_collections.ConfigDict(config.to_dict())
        eval_config.dataset.split = e.get("split") or "test"
        source = open_source(eval_config)
        n = min(int(e.num_images), len(source))
        images = np.stack([np.asarray(source[i]["image"]) for i in range(n)])
        batch_size = sharding.round_to_devices(int(e.get("batch_size") or 8), mesh)
        return [ReconstructionEvaluator(model, images, batch_size, mesh)]

    # ---- sampling -------------------------------------------------------------------------------
    def sample_options(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, **overrides: Any
    ) -> dict[str, Any]:
        """Only `task` (None: prior samples; 'reconstruct': reconstructions of context images)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        foreign = sorted(set(given) - {"task"})
        if foreign:
            raise ValueError(
                f"an autoencoder encodes and decodes; the sampling option(s) {foreign} do not "
                "apply. Reconstruct images with task='reconstruct' (launch/sample.py "
                "--reconstruct=DIR)."
            )
        task = given.get("task", (config.get("sample") or {}).get("task"))
        if task not in (None, *self.context_tasks):
            raise ValueError(f"task={task!r}; an autoencoder has task 'reconstruct' or None.")
        return {"task": task}

    def sample_batch(
        self,
        model: base.TrainedModel,
        params: Any,
        key: jax.Array,
        indices: jax.Array,
        labels: jax.Array | None,
        options: Mapping[str, Any],
        context: jax.Array | None = None,
    ) -> jax.Array:
        net = model.module(params)
        if context is not None:
            mean, _ = net.encode(model.representation.encode(context))
            return model.representation.decode(net.decode(mean))
        shape = latent_shape(model)
        z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(indices)
        return model.representation.decode(net.decode(z))


def latent_shape(model: base.TrainedModel) -> tuple[int, int, int]:
    """(h, w, C) of the model's latents."""
    return representations.latent_shape(model)


def load_perceptual(s: Mapping[str, Any]) -> Any:
    """The frozen LPIPS (VGG) weights of `autoencoder.lpips_weights` (None: the download cache)."""
    from dctjax.eval import lpips

    try:
        return lpips.load_lpips(s["lpips_weights"])
    except Exception as e:  # missing file or offline: say how to train without it
        raise type(e)(
            f"{e}\nOr train without the perceptual loss: --config.autoencoder.lpips_weight=0."
        ) from None


class ReconstructionEvaluator:
    """Held-out reconstruction metrics: (params, step) -> psnr (dB, on uint8 images), l1 (on
    [-1, 1] pixels), the latents' std and the fitted power-law slope of their RAPSD (spec §5.3;
    natural images give about 2, a flat-spectrum latent about 0)."""

    def __init__(
        self, model: base.TrainedModel, images: np.ndarray, batch_size: int, mesh: Any
    ) -> None:
        self.model, self.images, self.batch_size = model, images, batch_size
        self.batch_sh = sharding.batch_sharding(mesh)
        rep = model.representation

        def run(params, imgs):
            net = model.module(params)
            mean, _ = net.encode(rep.encode(imgs))
            rec = rep.decode(net.decode(mean))
            return rec, mean

        self._run = jax.jit(run)

    def __call__(self, params: Any, step: int) -> dict[str, float]:
        del step
        n, bs = len(self.images), self.batch_size
        recs, lats = [], []
        for i in range(0, n, bs):
            chunk = self.images[i : i + bs]
            pad = bs - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            rec, lat = self._run(params, jax.device_put(chunk, self.batch_sh))
            recs.append(np.asarray(rec)[: bs - pad])
            lats.append(np.asarray(lat, np.float32)[: bs - pad])
        rec, lat = np.concatenate(recs), np.concatenate(lats)
        ref = self.images.astype(np.float64)
        mse = np.mean((rec.astype(np.float64) - ref) ** 2)
        psnr = 10 * math.log10(255.0**2 / max(mse, 1e-12))
        l1 = float(np.mean(np.abs(rec.astype(np.float64) - ref)) / 127.5)
        out = {"rec_psnr": psnr, "rec_l1": l1, "latent_std": float(lat.std())}
        if min(lat.shape[1:3]) >= 8:
            from dctjax.analysis import spectrum

            ps = spectral.rapsd(jnp.asarray(lat - lat.mean(axis=(1, 2), keepdims=True)))
            fit = spectrum.fit_power_law(ps.freqs, ps.power, LATENT_FIT_RANGE)
            out["latent_psd_slope"] = fit.alpha
        return out

"""The `diffusion` family: DCTdiff (DCT tokens) and the pixel U-ViT baseline on the SNR-scaled VP-SDE.

Config fields it reads: `diffusion` (beta_min, beta_max, snr_scale, prediction, loss_weighting),
`label_dropout`, `sample` (sampler, nfe, guidance) and `ema_decay`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dctjax.diffusion.generate import generate, initial_noise
from dctjax.diffusion.objectives import diffusion_loss, get_prediction
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import VPSchedule
from dctjax.families import base

# loss_weighting -> power of the per-feature variance (None: the representation's own weights;
# 0: unit weights, the plain mean squared error)
LOSS_WEIGHTINGS = {"representation": None, "inverse_variance": 1.0, "inverse_std": 0.5, "none": 0.0}


def inverse_variance_weights(
    representation: Any, source: Any, num: int = 2048, power: float = 1.0
) -> np.ndarray:
    """Per-feature loss weights Var[x0_k]^-power (normalised to mean 1) from the first `num` images.

    x0_k is the encoded feature k pooled over tokens (shape (F,)). With x0-prediction, DCT tokens'
    high frequencies have ~1/500 of the DC variance, so an unweighted x0 loss barely trains them
    and samples come out as smooth blobs; power 1 gives every feature the same scale, power 1/2
    (1 / std) keeps more weight on the low frequencies. Variances are floored at 1e-3 of the largest,
    so constant features (the chroma of grey images) do not take over the loss.
    """
    n = min(int(num), len(source))
    images = np.stack([source[i]["image"] for i in range(n)])
    x = np.asarray(jax.jit(representation.encode)(images), np.float64)
    var = x.reshape(-1, x.shape[-1]).var(axis=0)
    w = np.maximum(var, 1e-3 * var.max() + 1e-12) ** -float(power)
    return (w / w.mean()).astype(np.float32)


class Diffusion(base.Family):
    name = "diffusion"

    def make_process(self, config: ml_collections.ConfigDict) -> VPSchedule:
        d = config.diffusion
        get_prediction(d.prediction)
        return VPSchedule(d.beta_min, d.beta_max, d.snr_scale)

    def loss_weights(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, data: base.DataAccess
    ) -> jax.Array | None:
        weighting = config.diffusion.get("loss_weighting") or "representation"
        if weighting not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"diffusion.loss_weighting={weighting!r}; use 'representation' (EBFR for DCT "
                "tokens), 'inverse_std', 'inverse_variance' or 'none' (unit weights)."
            )
        power = LOSS_WEIGHTINGS[weighting]
        if power == 0.0:
            return None
        if power is None:
            w = model.representation.loss_weights()
        else:
            w = inverse_variance_weights(model.representation, data.source, power=power)
        return None if w is None else jnp.asarray(w)

    def make_training(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, data: base.DataAccess
    ) -> base.Training:
        p_drop = base.label_dropout(config, model)
        weights = self.loss_weights(config, model, data)
        prediction = config.diffusion.prediction
        rep, conditional = model.representation, model.num_classes > 0
        tx, lr_schedule = self.optimizer(config)

        def loss_fn(params, batch, key):
            x0 = rep.encode(batch["image"])
            labels = batch["label"] if conditional else None
            labels = base.drop_labels(labels, jax.random.fold_in(key, 1), p_drop, model.null_label)
            loss, _ = diffusion_loss(
                model.module(params), x0, key, model.process,
                weights=weights, prediction=prediction, labels=labels,
            )  # fmt: skip
            return loss, {}

        return base.Training(loss_fn, tx, lr_schedule, base.ema_decays(config))

    def sample_options(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, **overrides: Any
    ) -> dict[str, Any]:
        s = config.sample
        opts = dict(sampler=s.sampler, nfe=int(s.nfe), guidance=s.get("guidance"))
        opts.update({k: v for k, v in overrides.items() if v is not None})
        get_sampler(opts["sampler"])
        if int(opts["nfe"]) < 1:
            raise ValueError(f"nfe must be >= 1, got {opts['nfe']}.")
        base.check_guidance(model, opts["guidance"])
        return opts

    def sample_batch(
        self,
        model: base.TrainedModel,
        params: Any,
        key: jax.Array,
        indices: jax.Array,
        labels: jax.Array | None,
        options: Mapping[str, Any],
    ) -> jax.Array:
        opts = dict(options)
        sampler, nfe, guidance = opts.pop("sampler"), int(opts.pop("nfe")), opts.pop("guidance")
        x_T = initial_noise(key, indices, model.representation.shape)
        return generate(
            model.module(params), model.representation, model.process,
            jax.random.fold_in(key, indices[0]), indices.shape[0],
            sampler=sampler, nfe=nfe, labels=labels,
            prediction=model.config.diffusion.prediction,
            guidance=guidance, null_label=model.null_label, x_T=x_T, **opts,
        )  # fmt: skip

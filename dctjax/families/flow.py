"""The `flow` family: JiT with optional Spectral Forcing, pixel-space rectified flow (spec spectral §2-§3).

Config fields it reads:
  flow: noise_scale, t_eps, p_mean, p_std, pred_param ('x' | 'v'), spectral_forcing (below).
  flow.spectral_forcing: enabled, schedule ('linear' | 'contour'), window_size (None: the full
    image), fixed_scale (None; 1.0 is the time-independent ablation), kappa, c_min, c_max, k0, alpha.
    When enabled, the model filters its own input IDCT(DCT(z) * M_t) with its per-sample t and
    embeds patches in the SF form; the loss target and the x -> v conversion use the unfiltered z.
  label_dropout (to the null class), ema_decay (JiT: [0.9999, 0.9996], the first is sampled),
  sample: sampler ('heun' | 'euler_flow'), nfe (Heun: 2 steps - 1, so 99 is JiT's 50 steps),
    guidance (CFG scale on velocities) and guidance_interval ((t_lo, t_hi), JiT: (0.1, 1.0)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dctjax.codec import spectral
from dctjax.diffusion.generate import initial_noise
from dctjax.diffusion.guidance import guided_model_fn
from dctjax.diffusion.objectives import FLOW_PREDICTIONS, flow_loss, x_to_velocity
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import FlowSchedule
from dctjax.families import base

FLOW_SAMPLERS = ("heun", "euler_flow")
SF_DEFAULTS = dict(
    enabled=False, schedule="linear", window_size=None, fixed_scale=None,
    kappa=30.0, c_min=0.05, c_max=1.0, k0=None, alpha=2.0,
)  # fmt: skip


def spectral_forcing_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The `spectral_forcing` model argument from `config.flow.spectral_forcing` (None when off).

    Checked here, before any compilation: unknown fields and bad values raise ValueError."""
    given = dict(config.flow.get("spectral_forcing") or {})
    unknown = sorted(set(given) - set(SF_DEFAULTS))
    if unknown:
        raise ValueError(
            f"flow.spectral_forcing has unknown field(s) {unknown}; valid: {sorted(SF_DEFAULTS)}."
        )
    sf = {**SF_DEFAULTS, **given}
    if not sf.pop("enabled"):
        return None
    res = int(config.resolution)
    if sf["window_size"] is not None and res % int(sf["window_size"]):
        raise ValueError(
            f"flow.spectral_forcing.window_size={sf['window_size']} does not divide the resolution "
            f"{res}; use a divisor (e.g. the patch size) or None for the full-image DCT."
        )
    # the operator's own checks (schedule name, contour k0, c_min <= c_max, kappa > 0)
    spectral.sf_mask(
        0.5, sf["window_size"] or res, **{k: v for k, v in sf.items() if k != "window_size"}
    )
    return sf


class Flow(base.Family):
    name = "flow"

    def make_process(self, config: ml_collections.ConfigDict) -> FlowSchedule:
        f = config.flow
        if f.get("pred_param", "x") not in FLOW_PREDICTIONS:
            raise ValueError(f"flow.pred_param={f.pred_param!r}; use one of {FLOW_PREDICTIONS}.")
        if not float(f.get("p_std", 0.8)) > 0:
            raise ValueError(f"flow.p_std must be > 0, got {f.p_std}.")
        return FlowSchedule(float(f.get("noise_scale", 1.0)), float(f.get("t_eps", 0.05)))

    def model_kwargs(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        kwargs = super().model_kwargs(config)
        if "spectral_forcing" in kwargs:
            raise ValueError(
                "set Spectral Forcing with config.flow.spectral_forcing, not model_kwargs."
            )
        kwargs["spectral_forcing"] = spectral_forcing_kwargs(config)
        return kwargs

    def make_training(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, data: base.DataAccess
    ) -> base.Training:
        f = config.flow
        p_drop = base.label_dropout(config, model)
        rep, conditional = model.representation, model.num_classes > 0
        tx, lr_schedule = self.optimizer(config)

        def loss_fn(params, batch, key):
            x = rep.encode(batch["image"])
            labels = batch["label"] if conditional else None
            labels = base.drop_labels(labels, jax.random.fold_in(key, 1), p_drop, model.null_label)
            net = model.module(params)
            dropout_key = jax.random.fold_in(key, 2)

            def model_fn(z, t, y=None):
                return net(z, t, y, dropout_key=dropout_key)

            loss, _ = flow_loss(
                model_fn, x, key, model.process,
                p_mean=float(f.p_mean), p_std=float(f.p_std),
                pred_param=f.pred_param, labels=labels,
            )  # fmt: skip
            return loss, {}

        return base.Training(loss_fn, tx, lr_schedule, base.ema_decays(config))

    def sample_options(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, **overrides: Any
    ) -> dict[str, Any]:
        s = config.sample
        interval = s.get("guidance_interval")
        opts = dict(
            sampler=s.sampler, nfe=int(s.nfe), guidance=s.get("guidance"),
            guidance_interval=None if interval is None else tuple(float(v) for v in interval),
        )  # fmt: skip
        opts.update({k: v for k, v in overrides.items() if v is not None})
        if opts["sampler"] not in FLOW_SAMPLERS:
            get_sampler(opts["sampler"])  # unknown names: the registry's message
            raise ValueError(
                f"sampler {opts['sampler']!r} is a VP-diffusion sampler; a flow model samples "
                f"with one of {FLOW_SAMPLERS}."
            )
        if int(opts["nfe"]) < 1:
            raise ValueError(f"nfe must be >= 1, got {opts['nfe']}.")
        unknown = sorted(set(opts) - {"sampler", "nfe", "guidance", "guidance_interval"})
        if unknown:
            raise ValueError(f"the flow samplers take no option(s) {unknown}.")
        base.check_guidance(model, opts["guidance"])
        if opts["guidance_interval"] is not None:
            lo, hi = opts["guidance_interval"]
            if not 0.0 <= lo < hi:
                raise ValueError(
                    f"guidance_interval must be (t_lo, t_hi) with 0 <= t_lo < t_hi, got {(lo, hi)}."
                )
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
        schedule = model.process
        net = model.module(params)
        pred_param = model.config.flow.pred_param

        if pred_param == "x":
            v_net = x_to_velocity(net, schedule)
        else:

            def v_net(z, t, y=None):
                return net(z, t, y).astype(jnp.float32)

        if options["guidance"] is not None:
            if labels is None:
                raise ValueError("classifier-free guidance needs class labels.")
            model_fn = guided_model_fn(
                v_net, labels, null_label=model.null_label, guidance=options["guidance"],
                interval=options["guidance_interval"],
            )  # fmt: skip
        else:

            def model_fn(z, t):
                return v_net(z, t, labels)

        z0 = schedule.noise_scale * initial_noise(key, indices, model.representation.shape)
        x = get_sampler(options["sampler"])(model_fn, schedule, z0, int(options["nfe"]))
        return model.representation.decode(x)

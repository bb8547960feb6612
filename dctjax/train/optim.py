"""The optimisers: AdamW with a linear warm-up, then a constant LR (the DCTdiff reference's, the
default) or a cosine decay to 0 (`lr_decay='cosine'`, the DCTransformer's), and norm helpers.

Reference (spec/dctdiff.md section 10): AdamW b1=0.99, b2=0.99, eps=1e-8, decoupled weight decay
0.03 on *all* parameters (the reference never uses its `no_weight_decay()`), lr = base * min(t/5000, 1)
with t = 0 at the first update (so the first update uses lr = 0), no decay, no gradient clipping.
`optax.adamw` is the PyTorch form p <- p * (1 - lr * wd) - lr * adam(g).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

DEFAULTS: dict[str, Any] = {
    "lr": None,  # required, unless blr is given
    "blr": None,  # base lr per 256 examples (JiT): lr = blr * batch_size / 256
    "warmup_steps": 5000,
    "b1": 0.99,
    "b2": 0.99,
    "eps": 1e-8,
    "weight_decay": 0.03,
    "wd_exclude_1d": False,  # True: no decay on biases, norms, 1-D embeddings
    "grad_clip_norm": None,  # None: no clipping (the reference)
    "lr_decay": "constant",  # after the warm-up: 'constant' or 'cosine' (to 0 at decay_steps)
    "decay_steps": None,  # cosine: the step where the LR reaches 0 (the run's total steps)
}
LR_DECAYS = ("constant", "cosine")
# Keys that commonly sit in the same config block and are read elsewhere (state.ema_update).
IGNORED = ("ema_decay",)


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"Expected a mapping or ConfigDict, got {type(config).__name__}.")


def resolve_config(config: Any = None, **overrides: Any) -> dict[str, Any]:
    """DEFAULTS updated with `config` then `overrides`; ValueError on unknown keys or missing lr."""
    given = {**_as_dict(config), **overrides}
    unknown = sorted(set(given) - set(DEFAULTS) - set(IGNORED))
    if unknown:
        raise ValueError(
            f"Unknown optimiser option(s) {unknown}; valid: {', '.join(DEFAULTS)} "
            f"(ignored here: {', '.join(IGNORED)})."
        )
    out = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
    if out["lr"] is not None and out["blr"] is not None:
        raise ValueError(
            "Give the optimiser either 'lr' or 'blr' (lr = blr * batch / 256), not both."
        )
    if out["lr"] is None and out["blr"] is None:
        raise ValueError(
            "The optimiser config needs a base learning rate 'lr' (or 'blr', per 256 examples)."
        )
    if out["warmup_steps"] < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {out['warmup_steps']}.")
    if out["lr_decay"] not in LR_DECAYS:
        raise ValueError(f"lr_decay={out['lr_decay']!r}; use one of {LR_DECAYS}.")
    if out["lr_decay"] == "cosine" and not (out["decay_steps"] or 0) > out["warmup_steps"]:
        raise ValueError(
            f"lr_decay='cosine' needs decay_steps (the run's total steps) > warmup_steps="
            f"{out['warmup_steps']}, got decay_steps={out['decay_steps']}."
        )
    return out


def warmup_constant(lr: float, warmup_steps: int) -> optax.Schedule:
    """lr * min(step / warmup_steps, 1): 0 at step 0, then constant."""
    if warmup_steps == 0:
        return optax.constant_schedule(lr)
    return optax.linear_schedule(0.0, lr, warmup_steps)


def warmup_cosine(lr: float, warmup_steps: int, decay_steps: int) -> optax.Schedule:
    """lr * step / warmup_steps during the warm-up, then lr * (1 + cos(pi * u)) / 2 with
    u = (step - warmup_steps) / (decay_steps - warmup_steps), reaching 0 at decay_steps."""
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, decay_steps, end_value=0.0)


def _ndim_above_1(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(
    config: Any = None, *, batch_size: int | None = None, **overrides: Any
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(tx, lr_schedule) from a config block (mapping/ConfigDict) and/or keyword overrides.

    Keys (defaults = the DCTdiff reference): lr (required), warmup_steps=5000, b1=0.99, b2=0.99,
    eps=1e-8, weight_decay=0.03, wd_exclude_1d=False, grad_clip_norm=None, lr_decay='constant'
    (or 'cosine' to 0 at decay_steps). `ema_decay` is accepted
    and ignored; any other key is an error. `lr_schedule(step)` gives the LR of the update that
    turns `step` into `step + 1` (log it as the step's LR). With `blr` instead of `lr`, the LR is
    blr * batch_size / 256 (JiT's rule), so `batch_size` is needed.
    """
    c = resolve_config(config, **overrides)
    lr = c["lr"]
    if lr is None:
        if not batch_size:
            raise ValueError("optimiser option 'blr' needs the global batch_size.")
        lr = float(c["blr"]) * int(batch_size) / 256
    if c["lr_decay"] == "cosine":
        schedule = warmup_cosine(float(lr), int(c["warmup_steps"]), int(c["decay_steps"]))
    else:
        schedule = warmup_constant(float(lr), int(c["warmup_steps"]))
    tx = optax.adamw(
        schedule,
        b1=c["b1"],
        b2=c["b2"],
        eps=c["eps"],
        weight_decay=c["weight_decay"],
        mask=_ndim_above_1 if c["wd_exclude_1d"] else None,
    )
    if c["grad_clip_norm"] is not None:
        tx = optax.chain(optax.clip_by_global_norm(float(c["grad_clip_norm"])), tx)
    return tx, schedule


def global_norm(tree: Any) -> jax.Array:
    """L2 norm over all leaves, accumulated in float32."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))

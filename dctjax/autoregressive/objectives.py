"""DCTransformer likelihood of a decoder slice (spec §3.6): per-slot negative log-likelihoods of the
three factors p(c) p(p | c) p(v | c, p), the training loss and bits per image subpixel.

Per target slot: -log p(channel), always; -log p(position) and -log p(value) only when the target
is an element (not STOP). Only the last N_c slots with a target carry a loss (`loss_mask`,
`position_loss_mask`, `value_loss_mask` of `chunking.make_chunk`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

TERMS = ("channel", "position", "value")
LN2 = math.log(2.0)


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target]: logits (..., K) float, targets (...) int -> (...) float32."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


LOSS_FIELDS = (
    "target_channel", "target_position", "target_value",
    "loss_mask", "position_loss_mask", "value_loss_mask",
)  # fmt: skip


def loss_slots(batch: Mapping[str, jax.Array], from_slot: int) -> dict[str, jax.Array]:
    """The targets and loss masks (`LOSS_FIELDS`, (N, T)) of slots from_slot.. only, to pair with
    the logits of `DCTransformer(..., from_slot=from_slot)`; the loss masks must be False before."""
    return {k: batch[k][:, from_slot:] for k in LOSS_FIELDS}


def slot_nll(
    logits: tuple[jax.Array, jax.Array, jax.Array], batch: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """Masked per-slot NLL in nats, {channel, position, value} -> (N, T) float32 (0 off the masks)."""
    masks = (batch["loss_mask"], batch["position_loss_mask"], batch["value_loss_mask"])
    targets = (batch["target_channel"], batch["target_position"], batch["target_value"])
    return {
        term: jnp.where(mask, token_nll(lg, tgt), 0.0)
        for term, lg, tgt, mask in zip(TERMS, logits, targets, masks, strict=True)
    }


def chunk_loss(
    logits: tuple[jax.Array, jax.Array, jax.Array], batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss: summed NLL of the three terms averaged over the batch's target slots
    (nats per element), and the per-example NLL sums {term: (N,)} of this slice."""
    nll = slot_nll(logits, batch)
    per_example = {term: jnp.sum(x, axis=-1) for term, x in nll.items()}
    num_targets = jnp.sum(batch["loss_mask"])
    total = sum(jnp.sum(x) for x in per_example.values())
    return total / jnp.maximum(num_targets, 1), per_example


def bits_per_subpixel(nll_nats: jax.Array, image_shape: tuple[int, int]) -> jax.Array:
    """NLL in nats of (part of) an image's sequence -> its bits per image subpixel, / (ln 2 * 3HW)."""
    height, width = image_shape
    return nll_nats / (LN2 * 3 * height * width)

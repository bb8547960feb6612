"""Exact bits per image subpixel of held-out images under a DCTransformer, chunk by chunk (spec §3.6).

Every chunk of every sequence is scored (no chunk sampling, no length filtering), so the sum of
the chunks' NLL is the sequence's NLL, -log p(sequence) = sum_l -log p(c_l) p(p_l|c_l) p(v_l|c_l,p_l),
and bpd = NLL / (ln 2 * 3 H W). For colorization only the chroma chunks are scored (the luma part
is given), as the model is trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.autoregressive import chunking, objectives

CHUNK_FIELDS = (
    "input_channel", "input_position", "input_value", "input_mask", "target_channel",
    "target_position", "target_value", "loss_mask", "position_loss_mask", "value_loss_mask",
    "encoder_image", "chunk_index", "num_chunks",
)  # fmt: skip


def sequence_chunks(representation: Any, image: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every training chunk (`chunking.make_chunk`) of one uint8 (H, W, 3) image, in order."""
    rep = representation
    seq = rep.host_encode(image)
    start = chunking.find_chroma_start(seq, rep.block_size) if rep.colorization else None
    n = chunking.num_chunks(int(seq.length) - (start or 0), rep.chunk_size)
    return [
        chunking.make_chunk(
            seq, i, rep.block_size, rep.grid_shape, rep.clip, rep.chunk_size, rep.overlap, start
        )
        for i in range(1, n + 1)
    ]


def chunk_batches(
    images: Sequence[np.ndarray], labels: Sequence[int] | None, representation: Any, batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """All chunks of `images` in batches of `batch_size`: (batch, image index (B,), valid (B,)).

    The last batch is filled with copies of its first chunk marked invalid (static shapes)."""
    items = []
    for idx, image in enumerate(images):
        for chunk in sequence_chunks(representation, image):
            chunk["label"] = np.int32(0 if labels is None else labels[idx])
            items.append((idx, chunk))
    for lo in range(0, len(items), batch_size):
        part = items[lo : lo + batch_size]
        valid = np.arange(batch_size) < len(part)
        part = part + [part[0]] * (batch_size - len(part))
        batch = {k: np.stack([c[k] for _, c in part]) for k in (*CHUNK_FIELDS, "label")}
        yield batch, np.array([i for i, _ in part], np.int64), valid


class BitsPerSubpixel:
    """Held-out likelihood: `evaluator(params, step)` -> {'bpd', 'bpd_channel', 'bpd_position',
    'bpd_value', 'bpd_chunk_1', ...} (mean over the images; bpd_chunk_i over the images with an
    i-th chunk, the bits per subpixel that chunk contributes).

    nll_fn(params, batch) -> (B, 3) float32 NLL sums (channel, position, value) per chunk, jitted
    by the caller with the shardings it needs. The chunks are built once, here.
    """

    def __init__(
        self,
        nll_fn: Callable[[Any, dict[str, jax.Array]], jax.Array],
        representation: Any,
        images: Sequence[np.ndarray],
        labels: Sequence[int] | None,
        batch_size: int,
        put: Callable[[dict[str, np.ndarray]], Any] = lambda b: b,
    ):
        if not len(images):
            raise ValueError("the bits-per-subpixel evaluation needs at least one image.")
        self.nll_fn, self.put = nll_fn, put
        self.num_images = len(images)
        self.image_shape = tuple(np.shape(images[0])[:2])
        self.batches = list(chunk_batches(images, labels, representation, batch_size))
        self.num_chunks = sum(int(v.sum()) for _, _, v in self.batches)

    def __call__(self, params: Any, step: int | None = None) -> dict[str, float]:
        per_image = np.zeros((self.num_images, 3))
        per_chunk: dict[int, list[float]] = {}
        for batch, image_index, valid in self.batches:
            nll = np.asarray(jax.device_get(self.nll_fn(params, self.put(batch))), np.float64)
            nll, index = nll[valid], image_index[valid]
            np.add.at(per_image, index, nll)
            for i, total in zip(batch["chunk_index"][valid], nll.sum(-1), strict=True):
                per_chunk.setdefault(int(i), []).append(float(total))
        bpd = np.asarray(objectives.bits_per_subpixel(per_image, self.image_shape))
        out = {"bpd": float(bpd.sum(-1).mean())}
        for j, term in enumerate(objectives.TERMS):
            out[f"bpd_{term}"] = float(bpd[:, j].mean())
        for i, totals in sorted(per_chunk.items()):
            chunk_bpd = objectives.bits_per_subpixel(np.asarray(totals), self.image_shape)
            out[f"bpd_chunk_{i}"] = float(np.mean(chunk_bpd))
        if step is not None:
            logging.info("step %s: held-out bits per subpixel %s", step, out)
        return out


def make_nll_fn(model: Any) -> Callable[[Any, dict[str, jax.Array]], jax.Array]:
    """(params, batch) -> (B, 3) NLL sums of each chunk, for a `TrainedModel` of the family."""
    loss_slot_logits = model.family.loss_slot_logits

    def nll_fn(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
        nll = objectives.slot_nll(*loss_slot_logits(model, params, batch, None))
        return jnp.stack([jnp.sum(nll[t], axis=-1) for t in objectives.TERMS], axis=-1)

    return nll_fn

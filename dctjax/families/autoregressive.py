"""The `autoregressive` family: the DCTransformer on sparse DCT sequences, trained chunk by chunk
(spec dctransformer.md §3-§4, §7).

The pipeline's host transform (`representations.SparseDCT.training_example`) encodes each image,
applies sequence-length filtering and draws one chunk with weights max(i^-3, p_min); the family
trains on that decoder slice and the dense DCT image of everything before it.

Config fields it reads:
  representation_kwargs: block_size, quality, clip, order, chunk_size (N_c), overlap (O),
    max_length (L_max of the filtering), p_min, colorization (see `SparseDCT`).
  model_kwargs: the `dctransformer` model's arguments (size, dropout, downsample, ...).
  optim: Adam with a linear warm-up to `lr`, then cosine decay to 0 at the run's last step
    (`lr_decay='cosine'`; decay_steps is filled in from total_*), clip 1.0 (spec §4.5).
  total_tokens (or total_steps/_epochs/_examples): a step trains batch_size * chunk_size target
    slots, so tokens convert to a lower bound on the steps, as the paper's token counts.
  autoregressive.log_chunks: training metrics per chunk index 1..K-1 and K+ (default 4).
  eval: every*, split, num_images, batch_size: the held-out bits per subpixel (every chunk of
    num_images images of `split`), next to FID once sampling exists.
  ema_decay: 0.0 by default (no EMA: the sampled weights are the trained ones); [003] has none.

Training metrics (averaged over the logging interval): loss (nats per target element), bits per
element of each term (bpe_channel, bpe_position, bpe_value), the bits per image subpixel that the
drawn chunk contributes (bpd_chunk, and bpd_chunk_1 .. bpd_chunk_K+ by chunk index: each the
average over the examples with that index), tokens_per_step (the loop adds tokens_per_s).

Sampling (`sampling.sample_sequences`, chunked with KV caches): config.sample holds num,
temperature (1), top_k (0), top_p (1), masks (True), max_chunks (None: ceil(L_max / N_c) + 2) and
task (None; 'upsample' / 'colorize' with context images). Grids at sample_every, FID at eval.every
(eval.reference) and `launch/sample.py` / `launch/evaluate.py` sample through `sample_batch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dctjax.autoregressive import likelihood, objectives, sampling
from dctjax.codec import sparse
from dctjax.families import base
from dctjax.train import optim, schedule, sharding

DEFAULT_LOG_CHUNKS = 4


def _durations_set(node: Any, prefix: str) -> bool:
    return any(
        node.get(f"{prefix}{unit}") for unit in ("", "_steps", "_epochs", "_examples", "_tokens")
    )


class Autoregressive(base.Family):
    name = "autoregressive"

    # ---- the model ------------------------------------------------------------------------------
    def make_process(self, config: ml_collections.ConfigDict) -> None:
        return None  # no noise process: the model's own likelihood

    def model_inputs(
        self, config: ml_collections.ConfigDict, representation: Any
    ) -> dict[str, Any]:
        rep = representation
        check_chunking(rep)
        return dict(
            block_size=rep.block_size, grid_shape=rep.grid_shape, clip=rep.clip,
            num_slots=rep.overlap + rep.chunk_size,
        )  # fmt: skip

    def build(self, config: ml_collections.ConfigDict) -> base.TrainedModel:
        if config.representation != "sparse_dct":
            raise ValueError(
                f"family 'autoregressive' trains on representation 'sparse_dct', got "
                f"{config.representation!r}."
            )
        model = super().build(config)
        model.null_label = None  # no classifier-free guidance
        return model

    @staticmethod
    def forward(
        model: base.TrainedModel,
        params: Any,
        batch: Mapping[str, jax.Array],
        dropout_key: jax.Array | None,
        from_slot: int = 0,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The three logits (N, T - from_slot, K) of a batch of decoder slices (the fields of
        `batch_spec`), for slots from_slot.. (the loss and the evaluator pass the overlap O)."""
        net = model.module(params)
        return net(
            batch["encoder_image"], batch["input_channel"], batch["input_position"],
            batch["input_value"], batch["input_mask"], batch["target_channel"],
            batch["target_position"], batch["label"] if model.num_classes else None,
            batch["chunk_index"], dropout_key=dropout_key, from_slot=from_slot,
        )  # fmt: skip

    @classmethod
    def loss_slot_logits(
        cls,
        model: base.TrainedModel,
        params: Any,
        batch: Mapping[str, jax.Array],
        dropout_key: jax.Array | None,
    ) -> tuple[tuple[jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]:
        """The logits of the last N_c slots (the only ones with a loss) and their targets and loss
        masks (`objectives.loss_slots`), for `objectives.chunk_loss` / `slot_nll`."""
        o = model.representation.overlap
        logits = cls.forward(model, params, batch, dropout_key, o)
        return logits, objectives.loss_slots(batch, o)

    # ---- training -------------------------------------------------------------------------------
    def batch_spec(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel
    ) -> dict[str, tuple[tuple[int, ...], Any]]:
        rep = model.representation
        t = rep.overlap + rep.chunk_size
        gh, gw = rep.grid_shape
        ids = ("input_channel", "input_position", "input_value")
        targets = ("target_channel", "target_position", "target_value")
        masks = ("input_mask", "loss_mask", "position_loss_mask", "value_loss_mask")
        return {
            **{k: ((t,), jnp.int32) for k in (*ids, *targets)},
            **{k: ((t,), jnp.bool_) for k in masks},
            "encoder_image": ((gh, gw, 3 * rep.block_size**2), jnp.int32),
            "chunk_index": ((), jnp.int32),
            "label": ((), jnp.int32),
        }

    def tokens_per_example(self, config: ml_collections.ConfigDict) -> int | None:
        return int((config.get("representation_kwargs") or {}).get("chunk_size", 896))

    def total_steps(self, config: ml_collections.ConfigDict, data: base.DataAccess) -> int:
        epochs = config.get("total_epochs") is not None
        return schedule.steps_from(
            config, "total", batch_size=int(config.batch_size),
            num_examples=len(data.source) if epochs else None,
            tokens_per_example=self.tokens_per_example(config),
        )  # fmt: skip

    def make_training(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, data: base.DataAccess
    ) -> base.Training:
        rep = model.representation
        image_shape = (rep.resolution, rep.resolution)
        k = int((config.get("autoregressive") or {}).get("log_chunks", DEFAULT_LOG_CHUNKS))
        if k < 1:
            raise ValueError(f"autoregressive.log_chunks must be >= 1, got {k}.")
        o = dict(config.optim)
        if o.get("lr_decay") == "cosine" and not o.get("decay_steps"):
            o["decay_steps"] = self.total_steps(config, data)
        tx, lr_schedule = optim.make_optimizer(o, batch_size=int(config.batch_size))
        loss_slot_logits = self.loss_slot_logits

        def loss_fn(params, batch, key):
            loss, per_example = objectives.chunk_loss(*loss_slot_logits(model, params, batch, key))
            num_targets = jnp.sum(batch["loss_mask"]).astype(jnp.float32)
            total = sum(per_example.values())
            metrics = {
                f"bpe_{t}": jnp.sum(x) / (objectives.LN2 * jnp.maximum(num_targets, 1.0))
                for t, x in per_example.items()
            }
            metrics["bpd_chunk"] = jnp.mean(objectives.bits_per_subpixel(total, image_shape))
            metrics["tokens_per_step"] = num_targets
            bucket = jnp.minimum(batch["chunk_index"], k)
            for i in range(1, k + 1):
                sel = (bucket == i).astype(jnp.float32)
                bits = objectives.bits_per_subpixel(total, image_shape)
                metrics[f"_sum_bpd_chunk_{i}"] = jnp.sum(sel * bits)
                metrics[f"_count_chunk_{i}"] = jnp.sum(sel)
            return loss, metrics

        def finalize_metrics(scalars: dict[str, float]) -> dict[str, float]:
            out = {key: v for key, v in scalars.items() if not key.startswith("_")}
            for i in range(1, k + 1):
                count = scalars.pop(f"_count_chunk_{i}", 0.0)
                total = scalars.pop(f"_sum_bpd_chunk_{i}", 0.0)
                if count > 0:
                    out[f"bpd_chunk_{i}{'+' if i == k else ''}"] = total / count
            return out

        return base.Training(
            loss_fn, tx, lr_schedule, base.ema_decays(config), finalize_metrics=finalize_metrics
        )

    def evaluations(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, mesh: jax.sharding.Mesh
    ) -> list:
        e = config.get("eval") or ml_collections.ConfigDict()
        if not _durations_set(e, "every") or not int(e.get("num_images") or 0):
            return []
        from dctjax.train.loop import open_source  # the loop's source factory, another split

        split = e.get("split") or "test"
        eval_config = ml_collections.ConfigDict(config.to_dict())
        eval_config.dataset.split = split
        source = open_source(eval_config)
        n = min(int(e.num_images), len(source))
        items = [source[i] for i in range(n)]
        images = [np.asarray(x["image"]) for x in items]
        labels = [int(x["label"]) for x in items] if model.num_classes else None
        batch_size = sharding.round_to_devices(int(e.get("batch_size") or 8), mesh)
        batch_sh = sharding.batch_sharding(mesh)
        nll_fn = jax.jit(likelihood.make_nll_fn(model), out_shardings=sharding.replicated(mesh))
        return [
            likelihood.BitsPerSubpixel(
                nll_fn,
                model.representation,
                images,
                labels,
                batch_size,
                put=lambda b: jax.device_put(b, batch_sh),
            )  # fmt: skip
        ]

    def optimizer(self, config: ml_collections.ConfigDict) -> Any:
        raise NotImplementedError("the autoregressive family builds its optimiser in make_training")

    # ---- sampling -------------------------------------------------------------------------------
    context_tasks = ("upsample", "colorize")

    def sample_options(
        self, config: ml_collections.ConfigDict, model: base.TrainedModel, **overrides: Any
    ) -> dict[str, Any]:
        """config.sample's temperature, top_k, top_p, masks, max_chunks and task, updated with the
        non-None overrides. Diffusion's sampler / nfe / guidance do not apply (ValueError)."""
        s = config.get("sample") or {}
        opts = dict(
            temperature=float(s.get("temperature", 1.0)), top_k=int(s.get("top_k", 0) or 0),
            top_p=float(s.get("top_p", 1.0)), masks=bool(s.get("masks", True)),
            max_chunks=s.get("max_chunks"), task=s.get("task"),
        )  # fmt: skip
        given = {k: v for k, v in overrides.items() if v is not None}
        foreign = sorted(set(given) - set(opts))
        if foreign:
            raise ValueError(
                f"the autoregressive family (DCTransformer) samples element by element; "
                f"{foreign} do not apply. Its options: {sorted(opts)} (config.sample or "
                "--sampler_kwargs)."
            )
        opts.update(given)
        if isinstance(opts["temperature"], int) and not isinstance(opts["temperature"], bool):
            opts["temperature"] = float(opts["temperature"])
        sampling.check_sample_options(**{k: opts[k] for k in sampling.SAMPLE_OPTIONS})
        if opts["task"] is not None:
            sampling.check_task(model.representation, opts["task"])
        return opts

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
        """uint8 (B, R, R, 3): sampled sequences decoded; with options['task'] ('upsample',
        'colorize') the continuation of the context images' prefix (`sampling.context_prefix`)."""
        opts = dict(options)
        task = opts.pop("task", None)
        rep = model.representation
        prefix = forbid = None
        if task is not None:
            if context is None:
                raise ValueError(f"task={task!r} needs context images (the images to {task}).")
            prefix = sampling.context_prefix(rep, context, task)
            forbid = sampling.prefix_channels(rep, task)
        seqs = sampling.sample_sequences(
            model.module(params), rep, key, indices, labels, prefix=prefix,
            forbid_channels=forbid, **opts,
        )  # fmt: skip
        return rep.decode(seqs)

    def config_for_workdir(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        return config


def check_chunking(rep: Any) -> None:
    """Chunk, overlap and L_max must fit the codec's grid (ValueError names the field)."""
    if rep.overlap > rep.chunk_size:
        raise ValueError(
            f"overlap={rep.overlap} is longer than chunk_size={rep.chunk_size}; the overlap is the "
            "decoder's context before a chunk (the paper: 128 before 896)."
        )
    longest = sparse.max_sequence_length(rep.grid_shape, rep.block_size)
    if rep.max_length is not None and rep.max_length > longest:
        raise ValueError(
            f"max_length={rep.max_length} (L_max of the length filtering) exceeds the longest "
            f"possible sequence, {longest} elements + STOP at resolution {rep.resolution} with "
            f"block_size={rep.block_size}; use the 95th percentile of `launch/dct_stats.py`."
        )
    if rep.max_len is not None and rep.max_length is not None and rep.max_len < rep.max_length:
        raise ValueError(
            f"max_len={rep.max_len} (the static padded length) is shorter than max_length="
            f"{rep.max_length} (L_max): sequences the filtering keeps would be truncated; raise "
            "max_len or leave it None."
        )

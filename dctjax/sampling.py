"""Sampling from a training workdir: the weights, config and representation of one checkpoint.

    sampler = load_workdir_sampler("runs/quickstart")            # latest step, EMA weights
    images = sampler.sample(jax.random.key(0), 64, sampler="dpm_solver", nfe=20)   # uint8 NHWC

Works for every model family (`dctjax.families`): the family's `sample_options` checks the
options and its `sample_batch` draws one batch. Used by `launch/sample.py`, `launch/evaluate.py --workdir`, the FID evaluator of the trainer and the
Colab notebook. Samples are generated in fixed-size batches (one compilation) whose batch axis is
split over every device of a ('data', 'fsdp') mesh; the weights are replicated. Sample i starts from
noise drawn from fold_in(key, i), so a deterministic sampler gives the same i-th image for any batch
size or device count; stochastic samplers also depend on the batch split.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh
from orbax import checkpoint as ocp

from dctjax import families
from dctjax.families import TrainedModel
from dctjax.train import checkpoint, sharding

STATS_COPY = "dct_stats.json"  # where runs of earlier versions kept a copy of their stats JSON


def _progress(done: int, total: int, stream=sys.stderr) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\rsampling [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        stream.write("\n")
    stream.flush()


def load_config(step_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The training config saved with a checkpoint (as a ConfigDict)."""
    path = epath.Path(step_dir) / "config"
    if not path.exists():
        raise FileNotFoundError(
            f"{step_dir} holds no saved config; it was not written by dctjax's trainer."
        )
    d = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
    return ml_collections.ConfigDict(d)


def _fix_stats_path(config: ml_collections.ConfigDict, step_dir: epath.Path) -> None:
    """Runs of earlier versions saved the stats JSON's path, not its contents: a path that does not
    exist here falls back to the copy those runs kept in the workdir (step_dir is
    workdir/checkpoints/<step>). Runs of this version hold the statistics in their config."""
    kw = config.get("representation_kwargs") or {}
    stats = kw.get("stats") if hasattr(kw, "get") else None
    if isinstance(stats, str) and stats.endswith(".json") and not os.path.exists(stats):
        copy = step_dir.parent.parent / STATS_COPY
        if not copy.exists():
            raise FileNotFoundError(
                f"The run's DCT statistics file {stats} is missing and {copy} does not exist; pass "
                "--config.representation_kwargs.stats=PATH."
            )
        with config.unlocked():
            config.representation_kwargs.stats = os.fspath(copy)


@dataclasses.dataclass
class WorkdirSampler:
    """A trained model of any family, ready to sample. Build it with `load_workdir_sampler`, or
    `WorkdirSampler(model, mesh)` and `set_params` during training."""

    model: TrainedModel
    mesh: Mesh
    params: Any = None
    step: int = 0
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.model.config

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def null_label(self) -> int | None:
        return self.model.null_label

    @property
    def resolution(self) -> int:
        return int(self.config.resolution)

    def set_params(self, params: Any, step: int) -> None:
        """Samples from `params` (e.g. a train state's EMA weights, any sharding) from now on."""
        self.params = jax.device_put(params, sharding.replicated(self.mesh))
        self.step = step

    def default_labels(self, key: jax.Array, num: int) -> np.ndarray | None:
        """Labels for `num` samples of a class-conditional model, uniform over the classes (the
        reference draws from the training set's class frequencies; ImageNet's are near uniform)."""
        if not self.num_classes:
            return None
        rng = jax.random.fold_in(key, 0x1ABE1)
        return np.asarray(jax.random.randint(rng, (num,), 0, self.num_classes, jnp.int32))

    def _check_labels(self, labels: np.ndarray | None, num: int) -> None:
        if labels is None:
            return
        if not self.num_classes:
            raise ValueError("labels were given but the model is unconditional (num_classes=0).")
        if labels.shape != (num,):
            raise ValueError(f"labels must have shape ({num},), got {labels.shape}.")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}).")

    def _batch_fn(self, options: tuple, with_context: bool) -> Callable:
        cache_key = (options, with_context)
        if cache_key not in self._compiled:
            model, family = self.model, self.model.family
            repl = sharding.replicated(self.mesh)
            batch_sh = sharding.batch_sharding(self.mesh)

            def run(params, key, indices, labels, context):
                extra = {} if context is None else {"context": context}
                return family.sample_batch(
                    model, params, key, indices, labels, dict(options), **extra
                )

            label_sh = batch_sh if self.num_classes else None
            context_sh = batch_sh if with_context else None
            self._compiled[cache_key] = jax.jit(
                run,
                in_shardings=(repl, repl, batch_sh, label_sh, context_sh),
                out_shardings=batch_sh,
            )
        return self._compiled[cache_key]

    def _check_context(self, context: np.ndarray | None, num: int, task: Any) -> None:
        tasks = self.model.family.context_tasks
        if context is None and task is None:
            return
        if not tasks:
            raise ValueError(
                f"family {self.model.family.name!r} does not sample from context images."
            )
        if context is None or task is None:
            raise ValueError(
                f"context images and task={task!r} go together: pass both (task one of {tasks})."
            )
        r = self.resolution
        if context.shape != (num, r, r, 3) or context.dtype != np.uint8:
            raise ValueError(
                f"context must be uint8 ({num}, {r}, {r}, 3) images, got {context.dtype}"
                f"{tuple(context.shape)}; resize or crop them to the model's resolution."
            )

    def sample(
        self,
        key: jax.Array,
        num: int,
        labels: np.ndarray | int | None = None,
        *,
        batch_size: int | None = None,
        progress: bool = False,
        context: np.ndarray | None = None,
        **sampler_options: Any,
    ) -> np.ndarray:
        """`num` samples as uint8 (num, R, R, 3), on every process (multi-host: gathered).

        labels: (num,) ints, one int for all, or None (uniform random classes when conditional).
        sampler_options: the family's (diffusion and flow: sampler, nfe, guidance, ...); None or
          missing ones default to the run's `config.sample`. They are checked before compiling.
        batch_size: samples per compiled call (default: config.sample.num rounded up to a multiple
          of the device count); the last batch is padded and trimmed.
        context: uint8 (num, R, R, 3) images for a conditioning task (the autoregressive family's
          task='upsample' / 'colorize'): sample i continues context image i.
        """
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}.")
        opts = self.model.family.sample_options(self.config, self.model, **sampler_options)
        batch_size = sharding.round_to_devices(batch_size or int(self.config.sample.num), self.mesh)
        if labels is None:
            labels = self.default_labels(key, num)
        elif np.ndim(labels) == 0:
            labels = np.full((num,), int(labels), np.int32)
        labels = None if labels is None else np.asarray(labels, np.int32)
        self._check_labels(labels, num)
        if context is not None:
            context = np.asarray(context)
        self._check_context(context, num, opts.get("task"))
        fn = self._batch_fn(tuple(sorted(opts.items())), context is not None)
        out = []
        for b in range(-(-num // batch_size)):
            idx = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int32)
            lab = None if labels is None else labels[np.minimum(idx, num - 1)]
            ctx = None if context is None else context[np.minimum(idx, num - 1)]
            with jax.set_mesh(self.mesh):  # kernels not partitioned by XLA run per shard
                out.append(_to_host(fn(self.params, key, idx, lab, ctx)))
            if progress and jax.process_index() == 0:
                _progress(min((b + 1) * batch_size, num), num)
        return np.concatenate(out)[:num]

    def grid(self, params: Any, key: jax.Array, step: int, num: int, **options: Any) -> np.ndarray:
        """A grid of `num` samples from `params` drawn from fold_in(key, step), uint8 (H', W', 3).

        Class-conditional models get one class per grid row (0, 1, 2, ...)."""
        cols = int(np.ceil(np.sqrt(num)))
        labels = None
        if self.num_classes:
            labels = (np.arange(num, dtype=np.int32) // cols) % self.num_classes
        self.set_params(params, step)
        images = self.sample(jax.random.fold_in(key, step), num, labels, batch_size=num, **options)
        return image_grid(images)


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def load_workdir_sampler(
    workdir: str | os.PathLike,
    step: int | None = None,
    *,
    use_ema: bool = True,
    mesh: Mesh | None = None,
    overrides: dict[str, Any] | None = None,
) -> WorkdirSampler:
    """Loads one checkpoint of a run of any family for sampling (no optimiser is built).

    workdir: the training workdir (or its checkpoints directory, or one step's directory).
    step: which checkpoint (default: the latest complete one).
    use_ema: the EMA weights (default, as the papers sample) or the raw parameters.
    mesh: where to sample (default: a data-parallel mesh over all devices).
    overrides: config fields to change before building, e.g. {'dtype': 'float32'}.
    """
    step_dir = checkpoint.resolve_step_dir(workdir, step)
    config = load_config(step_dir)
    if overrides:
        with config.unlocked():
            for k, v in overrides.items():
                node, *rest = k.split(".")
                target = config
                for part in [node, *rest][:-1]:
                    target = target[part]
                leaf = [node, *rest][-1]
                if leaf in target:  # the new value may have another type (a path for a dict)
                    del target[leaf]
                target[leaf] = v
    _fix_stats_path(config, step_dir)
    model = families.build(config)
    mesh = mesh or sharding.make_mesh(-1, 1)
    repl = sharding.replicated(mesh)
    abstract = jax.eval_shape(model.init_fn, jax.random.key(0))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
    )
    name = "ema_params" if use_ema else "params"
    params = checkpoint.restore_weights(step_dir, {name: abstract})[name]
    step_num = int(step_dir.name.split("_")[-1]) if step is None else int(step)
    logging.info("Loaded %s of step %d from %s.", name, step_num, step_dir)
    return WorkdirSampler(model, mesh, params=params, step=step_num)


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*H, cols*W, 3) grid, row-major, padded with black."""
    n = images.shape[0]
    cols = int(cols or np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    pad = np.zeros((rows * cols - n, *images.shape[1:]), images.dtype)
    images = np.concatenate([images, pad]).reshape(rows, cols, *images.shape[1:])
    return np.concatenate(np.concatenate(images, axis=1), axis=1)

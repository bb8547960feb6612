"""Sampling from a training workdir: the weights, config and representation of one checkpoint.

    sampler = load_workdir_sampler("runs/quickstart")            # latest step, EMA weights
    images = sampler.sample(jax.random.key(0), 64, sampler="dpm_solver", nfe=20)   # uint8 NHWC

Used by `launch/sample.py`, `launch/evaluate.py --workdir`, the FID evaluator of the trainer and the
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
from flax import nnx
from jax.sharding import Mesh
from orbax import checkpoint as ocp

from dctjax.diffusion.generate import generate, initial_noise
from dctjax.train import checkpoint, sharding

STATS_COPY = "dct_stats.json"  # the trainer's copy of a stats JSON, next to the checkpoints


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
    """A stats JSON path that does not exist here (a run trained elsewhere) falls back to the copy
    the trainer keeps in the workdir (step_dir is workdir/checkpoints/<step>)."""
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
    """A trained diffusion model ready to sample. Build it with `load_workdir_sampler`."""

    config: ml_collections.ConfigDict
    setup: Any  # dctjax.train.diffusion_loop.Setup
    params: Any
    step: int
    mesh: Mesh
    num_classes: int
    null_label: int | None
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_setup(
        cls,
        config: ml_collections.ConfigDict,
        setup: Any,
        mesh: Mesh,
        params: Any = None,
        step: int = 0,
    ) -> WorkdirSampler:
        """A sampler for a trainer `Setup` (params set later with `set_params`)."""
        return cls(
            config=config, setup=setup, params=params, step=step, mesh=mesh,
            num_classes=setup.num_classes, null_label=setup.null_label,
        )  # fmt: skip

    def set_params(self, params: Any, step: int) -> None:
        """Samples from `params` (e.g. a train state's EMA weights, any sharding) from now on."""
        self.params = jax.device_put(params, sharding.replicated(self.mesh))
        self.step = step

    @property
    def resolution(self) -> int:
        return int(self.config.resolution)

    def default_labels(self, key: jax.Array, num: int) -> np.ndarray | None:
        """Labels for `num` samples of a class-conditional model, uniform over the classes (the
        reference draws from the training set's class frequencies; ImageNet's are near uniform)."""
        if not self.num_classes:
            return None
        rng = jax.random.fold_in(key, 0x1ABE1)
        return np.asarray(jax.random.randint(rng, (num,), 0, self.num_classes, jnp.int32))

    def _check(self, labels: np.ndarray | None, guidance: float | None, num: int) -> None:
        if labels is not None:
            if not self.num_classes:
                raise ValueError(
                    "labels were given but the model is unconditional (num_classes=0)."
                )
            if labels.shape != (num,):
                raise ValueError(f"labels must have shape ({num},), got {labels.shape}.")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}).")
        if guidance is not None:
            if self.null_label is None:
                raise ValueError(
                    "classifier-free guidance needs a model trained with a null class (a DiT with "
                    "num_classes > 0 and label dropout); this model has none."
                )

    def _batch_fn(self, sampler: str, nfe: int, guided: bool, kw: tuple) -> Callable:
        cache_key = (sampler, nfe, guided, kw)
        if cache_key not in self._compiled:
            self._compiled[cache_key] = self._make_batch_fn(sampler, nfe, guided, kw)
        return self._compiled[cache_key]

    def _make_batch_fn(self, sampler: str, nfe: int, guided: bool, kw: tuple) -> Callable:
        setup, config = self.setup, self.config
        repl = sharding.replicated(self.mesh)
        batch_sh = sharding.batch_sharding(self.mesh)

        def run(params, key, indices, labels, guidance):
            model = nnx.merge(setup.graphdef, params)
            x_T = initial_noise(key, indices, setup.representation.shape)
            return generate(
                model, setup.representation, setup.diffusion,
                jax.random.fold_in(key, indices[0]), indices.shape[0],
                sampler=sampler, nfe=nfe, labels=labels,
                prediction=config.diffusion.prediction,
                guidance=guidance if guided else None, null_label=self.null_label,
                x_T=x_T, **dict(kw),
            )  # fmt: skip

        label_sh = batch_sh if self.num_classes else None
        return jax.jit(
            run,
            in_shardings=(repl, repl, batch_sh, label_sh, repl),
            out_shardings=batch_sh,
        )

    def sample(
        self,
        key: jax.Array,
        num: int,
        *,
        sampler: str | None = None,
        nfe: int | None = None,
        labels: np.ndarray | int | None = None,
        guidance: float | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        **sampler_kwargs: Any,
    ) -> np.ndarray:
        """`num` samples as uint8 (num, R, R, 3), on every process (multi-host: gathered).

        sampler, nfe: default to the training config's `sample` settings.
        labels: (num,) ints, one int for all, or None (uniform random classes when conditional).
        guidance: classifier-free guidance scale (needs a null class); None: conditional only.
        batch_size: samples per compiled call (default: config.sample.num rounded up to a multiple
          of the device count); the last batch is padded and trimmed.
        """
        from dctjax.diffusion.samplers import get_sampler

        sampler = sampler or self.config.sample.sampler
        nfe = int(nfe or self.config.sample.nfe)
        get_sampler(sampler)
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}.")
        batch_size = sharding.round_to_devices(batch_size or int(self.config.sample.num), self.mesh)
        if labels is None:
            labels = self.default_labels(key, num)
        elif np.ndim(labels) == 0:
            labels = np.full((num,), int(labels), np.int32)
        labels = None if labels is None else np.asarray(labels, np.int32)
        self._check(labels, guidance, num)

        fn = self._batch_fn(
            sampler, nfe, guidance is not None, tuple(sorted(sampler_kwargs.items()))
        )
        out = []
        num_batches = -(-num // batch_size)
        for b in range(num_batches):
            idx = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int32)
            lab = None
            if labels is not None:
                lab = labels[np.minimum(idx, num - 1)]
            images = fn(self.params, key, idx, lab, jnp.float32(guidance or 0.0))
            out.append(_to_host(images))
            if progress and jax.process_index() == 0:
                _progress(min((b + 1) * batch_size, num), num)
        return np.concatenate(out)[:num]


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
    """Loads one checkpoint of a diffusion run for sampling.

    workdir: the training workdir (or its checkpoints directory, or one step's directory).
    step: which checkpoint (default: the latest complete one).
    use_ema: the EMA weights (default, as the papers sample) or the raw parameters.
    mesh: where to sample (default: a data-parallel mesh over all devices).
    overrides: config fields to change before building, e.g. {'dtype': 'float32'}.
    """
    from dctjax.train import diffusion_loop

    step_dir = checkpoint.resolve_step_dir(workdir, step)
    config = load_config(step_dir)
    if overrides:
        with config.unlocked():
            for k, v in overrides.items():
                node, *rest = k.split(".")
                target = config
                for part in [node, *rest][:-1]:
                    target = target[part]
                target[[node, *rest][-1]] = v
    _fix_stats_path(config, step_dir)
    setup = diffusion_loop.build(config, check_batch=False)
    mesh = mesh or sharding.make_mesh(-1, 1)
    repl = sharding.replicated(mesh)
    abstract = jax.eval_shape(setup.init_fn, jax.random.key(0))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
    )
    name = "ema_params" if use_ema else "params"
    params = checkpoint.restore_weights(step_dir, {name: abstract})[name]
    step_num = int(step_dir.name.split("_")[-1]) if step is None else int(step)
    logging.info("Loaded %s of step %d from %s.", name, step_num, step_dir)
    return WorkdirSampler.from_setup(config, setup, mesh, params=params, step=step_num)


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*H, cols*W, 3) grid, row-major, padded with black."""
    n = images.shape[0]
    cols = int(cols or np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    pad = np.zeros((rows * cols - n, *images.shape[1:]), images.dtype)
    images = np.concatenate([images, pad]).reshape(rows, cols, *images.shape[1:])
    return np.concatenate(np.concatenate(images, axis=1), axis=1)

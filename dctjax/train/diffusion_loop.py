"""The diffusion trainer (DCTdiff, the pixel U-ViT baseline): one readable function.

`train_and_evaluate(config, workdir)` in banner-marked sections: config checks, logging, mesh,
input, model and optimiser, shapes and shardings, the update step, resume, and the loop with its
periodic actions (metrics, sample grids, checkpoints, preemption). Everything that varies is in the
config (see configs/common.py) and the registries (representations, models, samplers).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from dctjax import representations
from dctjax.data import pipeline, sources
from dctjax.diffusion.generate import generate
from dctjax.diffusion.objectives import diffusion_loss, get_prediction
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import VPSchedule
from dctjax.models import make_model
from dctjax.train import checkpoint, metrics, optim, schedule, sharding
from dctjax.train import state as state_lib


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; the exit code asks to be requeued."""

    def __init__(self, step: int):
        super().__init__(checkpoint.PREEMPTED_EXIT_CODE)
        self.step = step


@dataclasses.dataclass
class Setup:
    """What the loop and `--compile_only` need, built from the config before any compilation."""

    representation: Any
    graphdef: Any
    init_fn: Any
    tx: Any
    lr_schedule: Any
    diffusion: VPSchedule
    loss_weights: Any
    conditional: bool


def build(config: ml_collections.ConfigDict) -> Setup:
    """Validates the config and builds the pure pieces. Raises ValueError naming the bad field."""
    rep = representations.from_config(config)
    num_classes = int(config.dataset.get("num_classes") or 0)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(config.dtype)
    if dtype is None:
        raise ValueError(f"dtype={config.dtype!r} is not valid; use 'float32' or 'bfloat16'.")
    model_kwargs = dict(config.model_kwargs)
    model_kwargs.setdefault("num_classes", num_classes)

    def new_model(key: jax.Array) -> nnx.Module:
        return make_model(
            config.model, rngs=nnx.Rngs(key), input_shape=rep.shape, dtype=dtype, **model_kwargs
        )

    abstract = nnx.eval_shape(lambda: new_model(jax.random.key(0)))
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError(
            f"model {config.model!r} has non-parameter state; the trainer expects none."
        )

    def init_fn(key: jax.Array) -> Any:
        return nnx.state(new_model(key), nnx.Param)

    get_sampler(config.sample.sampler)  # unknown sampler: error now, not at the first grid
    get_prediction(config.diffusion.prediction)
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by the {jax.device_count()} devices; "
            "use a multiple of the device count."
        )
    tx, lr_schedule = optim.make_optimizer(config.optim)
    d = config.diffusion
    weights = rep.loss_weights()
    return Setup(
        representation=rep,
        graphdef=graphdef,
        init_fn=init_fn,
        tx=tx,
        lr_schedule=lr_schedule,
        diffusion=VPSchedule(d.beta_min, d.beta_max, d.snr_scale),
        loss_weights=None if weights is None else jnp.asarray(weights),
        conditional=num_classes > 0,
    )


def make_train_step(setup: Setup, config: ml_collections.ConfigDict):
    """The pure update: (state, batch) -> (state, metrics). Randomness is fold_in(rng, step)."""
    rep, graphdef = setup.representation, setup.graphdef

    def train_step(st: state_lib.TrainState, batch: dict) -> tuple[state_lib.TrainState, dict]:
        x0 = rep.encode(batch["image"])
        labels = batch["label"] if setup.conditional else None

        def loss_fn(params):
            model = nnx.merge(graphdef, params)
            return diffusion_loss(
                model,
                x0,
                st.step_key(),
                setup.diffusion,
                weights=setup.loss_weights,
                prediction=config.diffusion.prediction,
                labels=labels,
            )

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
        new, norms = st.apply_gradients(grads, setup.tx, config.ema_decay)
        return new, dict(loss=loss, lr=setup.lr_schedule(st.step), **norms)

    return train_step


def _source(config: ml_collections.ConfigDict):
    ds = config.dataset
    kwargs = {"num_examples": ds.num_examples} if ds.get("num_examples") else {}
    try:
        return sources.make_source(
            ds.name, ds.split, data_dir=ds.data_dir, resolution=config.resolution, **kwargs
        )
    except sources.DatasetNotPreparedError as e:
        hint = ds.get("prepare_hint")
        raise sources.DatasetNotPreparedError(f"{e}\n{hint}" if hint else str(e)) from None


def sample_grid(setup: Setup, params: Any, config, key: jax.Array, step: int) -> np.ndarray:
    """A grid of `config.sample.num` samples from `params` (the EMA weights), uint8 (H', W', 3)."""
    s = config.sample
    n = int(s.num)
    labels = None
    if setup.conditional:
        labels = jnp.arange(n, dtype=jnp.int32) % int(config.dataset.num_classes)

    @jax.jit
    def run(params, key):
        model = nnx.merge(setup.graphdef, params)
        return generate(
            model, setup.representation, setup.diffusion, key, n,
            sampler=s.sampler, nfe=int(s.nfe), labels=labels,
            prediction=config.diffusion.prediction,
        )  # fmt: skip

    images = np.asarray(jax.device_get(run(params, jax.random.fold_in(key, step))))
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pad = np.zeros((rows * cols - n, *images.shape[1:]), np.uint8)
    images = np.concatenate([images, pad]).reshape(rows, cols, *images.shape[1:])
    return np.concatenate(np.concatenate(images, axis=1), axis=1)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, compile_only: bool = False
) -> Any:
    """Trains (resuming from `workdir` when it holds checkpoints) and returns the final state.

    With `compile_only`, lowers and compiles the step for the configured mesh and batch, logs XLA's
    memory analysis and FLOPs, and returns them as a dict without touching the data.
    """
    # ---- config checks (before any compilation) -------------------------------------------------
    setup = build(config)
    total_steps = schedule.steps_from(config, "total")

    # ---- logging and workdir --------------------------------------------------------------------
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0

    # ---- mesh -----------------------------------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)

    # ---- shapes, shardings and the update step --------------------------------------------------
    abstract_state = state_lib.abstract_train_state(
        setup.init_fn, setup.tx, config.seed, mesh, config.mesh.param_strategy
    )
    state_sh = sharding.tree_shardings(abstract_state)
    step_fn = jax.jit(
        make_train_step(setup, config),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, repl),
        donate_argnums=0,
    )
    res = config.resolution
    abstract_batch = {
        "image": jax.ShapeDtypeStruct(
            (config.batch_size, res, res, 3), jnp.uint8, sharding=batch_sh
        ),
        "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=batch_sh),
    }
    if compile_only:
        compiled = step_fn.lower(abstract_state, abstract_batch).compile()
        mem = compiled.memory_analysis()
        cost = compiled.cost_analysis() or {}
        report = dict(
            flops_per_step=float(cost.get("flops", 0.0)),
            gflops_per_image=float(cost.get("flops", 0.0)) / config.batch_size / 1e9,
        )
        for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                      "generated_code_size_in_bytes", "alias_size_in_bytes"):  # fmt: skip
            report[field] = int(getattr(mem, field, 0) or 0) if mem is not None else None
        logging.info("compile_only: %s", report)
        return report

    # ---- input ----------------------------------------------------------------------------------
    source = _source(config)
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        worker_count=config.input.worker_count,
        random_flip=config.input.random_flip,
    )
    iterator = iter(dataset)

    # ---- resume ---------------------------------------------------------------------------------
    writer = metrics.make_writer(workdir, is_main)
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, config=config)
    restored = ckpt.restore_latest(abstract_state, iterator)
    if restored is not None:
        st, start = restored
        logging.info("Resumed from step %d.", start)
    else:
        st, start = (
            state_lib.create_train_state(
                setup.init_fn, setup.tx, config.seed, mesh, config.mesh.param_strategy
            ),
            0,
        )
        if config.get("init_from"):
            st = checkpoint.init_from(config.init_from, st)
        if is_main:
            from clu import parameter_overview

            parameter_overview.log_parameter_overview(st.params.to_pure_dict())
    sample_key = jax.random.key(config.seed + 1)
    hooks = []
    if is_main and metrics.clu_writers_available():
        from clu import periodic_actions

        hooks.append(periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer))

    # ---- train loop -----------------------------------------------------------------------------
    sums, count, t0, last_log = None, 0, time.perf_counter(), start
    step = start
    try:
        while step < total_steps:
            host_batch = next(iterator)
            batch = pipeline.make_global_batch(
                {"image": host_batch["image"], "label": host_batch["label"]}, batch_sh
            )
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                st, m = step_fn(st, batch)
            step += 1
            for hook in hooks:
                hook(step)
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            count += 1
            if schedule.is_periodic(step, config.log_every, total_steps):
                fetched = jax.device_get(sums)
                metrics.check_finite(fetched, step, first_step=last_log + 1)
                dt = time.perf_counter() - t0
                scalars = {k: float(v) / count for k, v in fetched.items()}
                scalars["steps_per_s"] = count / dt
                scalars["images_per_s"] = count * config.batch_size / dt
                writer.write_scalars(step, scalars)
                sums, count, t0, last_log = None, 0, time.perf_counter(), step
            preempted = ckpt.reached_preemption(step)
            if preempted or schedule.is_periodic(step, config.checkpoint_every, total_steps):
                if sums is not None:  # never save a state that went non-finite
                    metrics.check_finite(jax.device_get(sums), step, first_step=last_log + 1)
                ckpt.save(step, st, iterator)
                if preempted:
                    ckpt.wait_until_finished()
                    logging.warning("Preempted at step %d: checkpoint saved, exiting.", step)
                    raise Preempted(step)
            if schedule.is_periodic(step, config.sample_every, total_steps):
                grid = sample_grid(setup, st.ema_params, config, sample_key, step)
                writer.write_images(step, {"samples": grid[None]})
                if is_main:
                    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
                    Image.fromarray(grid).save(os.path.join(workdir, "samples", f"{step:08d}.png"))
    finally:
        writer.flush()
        ckpt.close()
        if hasattr(iterator, "close"):
            iterator.close()
    return st

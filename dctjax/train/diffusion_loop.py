"""The diffusion trainer (DCTdiff, the pixel U-ViT baseline): one readable function.

`train_and_evaluate(config, workdir)` in banner-marked sections: config checks, logging, mesh,
input, model and optimiser, shapes and shardings, the update step, resume, and the loop with its
periodic actions (metrics, sample grids, checkpoints, preemption). Everything that varies is in the
config (see configs/common.py) and the registries (representations, models, samplers).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from dctjax import representations
from dctjax.data import pipeline, sources
from dctjax.diffusion.objectives import diffusion_loss, get_prediction
from dctjax.diffusion.samplers import get_sampler
from dctjax.diffusion.schedules import VPSchedule
from dctjax.models import layers, make_model
from dctjax.sampling import STATS_COPY, WorkdirSampler, image_grid
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
    num_classes: int = 0
    null_label: int | None = None  # the null class of a CFG-capable model
    label_dropout: float = 0.0  # probability of training on the null class


def build(config: ml_collections.ConfigDict, *, check_batch: bool = True) -> Setup:
    """Validates the config and builds the pure pieces. Raises ValueError naming the bad field.

    check_batch: check that batch_size splits over the devices (off when only sampling).
    """
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
    if hasattr(abstract, "num_heads"):  # attention='cudnn' where it cannot run: error now
        head_dim = abstract.embed_dim // abstract.num_heads
        layers.attention_implementation(model_kwargs.get("attention", "auto"), dtype, head_dim)

    def init_fn(key: jax.Array) -> Any:
        return nnx.state(new_model(key), nnx.Param)

    get_sampler(config.sample.sampler)  # unknown sampler: error now, not at the first grid
    label_dropout = float(config.get("label_dropout") or 0.0)
    null_label = num_classes if num_classes and getattr(abstract, "null_class", False) else None
    if label_dropout and null_label is None:
        raise ValueError(
            f"label_dropout={label_dropout} needs a class-conditional model with a null class "
            "(dataset.num_classes > 0 and a model with null_class, e.g. 'dit')."
        )
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
    get_prediction(config.diffusion.prediction)
    if check_batch and config.batch_size % jax.device_count():
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
        num_classes=num_classes,
        null_label=null_label,
        label_dropout=label_dropout,
    )


def make_train_step(setup: Setup, config: ml_collections.ConfigDict, *, log_norms: bool = False):
    """The pure update: (state, batch) -> (state, metrics). Randomness is fold_in(rng, step).

    metrics: loss, lr and grad_norm; with `log_norms` also param_norm and update_norm (the loop
    runs that variant on its logging steps only, see `TrainState.apply_gradients`).
    """
    rep, graphdef = setup.representation, setup.graphdef
    label_dropout = setup.label_dropout

    def train_step(st: state_lib.TrainState, batch: dict) -> tuple[state_lib.TrainState, dict]:
        x0 = rep.encode(batch["image"])
        labels = batch["label"] if setup.conditional else None
        if labels is not None and label_dropout > 0:  # to the null class, for CFG (spec §9.3)
            drop = jax.random.bernoulli(
                jax.random.fold_in(st.step_key(), 1), label_dropout, labels.shape
            )
            labels = jnp.where(drop, setup.num_classes, labels)

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
        new, norms = st.apply_gradients(grads, setup.tx, config.ema_decay, log_norms)
        return new, dict(loss=loss, lr=setup.lr_schedule(st.step), **norms)

    return train_step


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


def sample_grid(sampler: WorkdirSampler, params: Any, key: jax.Array, step: int) -> np.ndarray:
    """A grid of `config.sample.num` samples from `params` (the EMA weights), uint8 (H', W', 3).

    Class-conditional models get one class per grid row (0, 1, 2, ...); `config.sample.guidance`
    (optional) applies classifier-free guidance.
    """
    s = sampler.config.sample
    n = int(s.num)
    cols = int(np.ceil(np.sqrt(n)))
    labels = None
    if sampler.num_classes:
        labels = (np.arange(n, dtype=np.int32) // cols) % sampler.num_classes
    sampler.set_params(params, step)
    images = sampler.sample(
        jax.random.fold_in(key, step), n, labels=labels, guidance=s.get("guidance"), batch_size=n
    )
    return image_grid(images)


def _keep_stats_copy(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Copies a stats JSON next to the checkpoints so the run samples on another machine too."""
    stats = (config.get("representation_kwargs") or {}).get("stats")
    if isinstance(stats, str) and stats.endswith(".json") and os.path.exists(stats):
        shutil.copyfile(stats, os.path.join(workdir, STATS_COPY))


def _eval_due(e: ml_collections.ConfigDict, step: int, total_steps: int) -> bool:
    return step >= int(e.get("start") or 0) and schedule.is_periodic(step, e.every, total_steps)


def make_fid_evaluation(
    config: ml_collections.ConfigDict, setup: Setup, mesh: jax.sharding.Mesh
) -> Callable[[Any, int], dict[str, float]] | None:
    """The periodic FID evaluation of `config.eval` (spec §10): (ema_params, step) -> metrics.

    None when `eval.every` is 0 or no reference statistics are configured. The reference file and
    the Inception weights are loaded here, before the train step compiles, so a missing file fails
    the run at start-up.
    """
    e = config.get("eval")
    if not e or not e.get("every"):
        return None
    if not e.get("reference"):
        logging.warning(
            "FID evaluation is off: set config.eval.reference to statistics written by "
            "`python launch/evaluate.py --compute_ref --config=CONFIG --out=ref.npz`."
        )
        return None
    from dctjax.eval.evaluators import FidEvaluator
    from dctjax.eval.inception import load_inception
    from dctjax.eval.metrics import load_reference

    if not os.path.exists(e.reference):
        raise FileNotFoundError(
            f"config.eval.reference={e.reference} does not exist; write it with "
            f"`python launch/evaluate.py --compute_ref --config=CONFIG --out={e.reference}`."
        )
    reference = load_reference(e.reference)
    batch_size = sharding.round_to_devices(e.batch_size, mesh)
    extractor = load_inception(e.get("inception_weights"), batch_size=batch_size, mesh=mesh)
    evaluator = FidEvaluator(
        extractor, reference, int(e.num_samples), batch_size, e.get("jpeg_quality")
    )
    sampler = WorkdirSampler.from_setup(config, setup, mesh)
    key = jax.random.key(int(config.seed) + 2)

    def evaluate(ema_params: Any, step: int) -> dict[str, float]:
        sampler.set_params(ema_params, step)
        sample_fn = functools.partial(
            sampler.sample,
            sampler=e.get("sampler") or config.sample.sampler,
            nfe=int(e.get("nfe") or config.sample.nfe),
            batch_size=batch_size,
        )
        metrics_ = evaluator.evaluate(lambda k, n: sample_fn(k, n), key)
        logging.info("step %d: %s (settings %s)", step, metrics_, evaluator.settings)
        return metrics_

    return evaluate


def _memory_report(compiled: Any) -> dict[str, int | None]:
    """XLA's memory analysis of a compiled step: sizes in bytes (None where unavailable)."""
    mem = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes", "alias_size_in_bytes")  # fmt: skip
    return {f: None if mem is None else int(getattr(mem, f, 0) or 0) for f in fields}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, compile_only: bool = False
) -> Any:
    """Trains (resuming from `workdir` when it holds checkpoints) and returns the final state.

    With `compile_only`, lowers and compiles the step (and its logging-step variant, whose
    temporaries are reported too) for the configured mesh and batch, logs XLA's
    memory analysis and FLOPs, and returns them as a dict without touching the data.
    """
    # ---- config checks (before any compilation) -------------------------------------------------
    setup = build(config)
    total_steps = schedule.steps_from(config, "total")
    weighting = config.diffusion.get("loss_weighting") or "representation"
    powers = {"inverse_variance": 1.0, "inverse_std": 0.5}
    if weighting != "representation" and weighting not in powers:
        raise ValueError(
            f"diffusion.loss_weighting={weighting!r}; use 'representation' (EBFR for DCT tokens), "
            "'inverse_std' or 'inverse_variance'."
        )
    source = None  # read only when needed: compile_only never touches the data
    if weighting in powers and not compile_only:
        source = _source(config)
        weights = inverse_variance_weights(setup.representation, source, power=powers[weighting])
        setup = dataclasses.replace(setup, loss_weights=jnp.asarray(weights))

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
    step_fn, log_step_fn = (
        jax.jit(
            make_train_step(setup, config, log_norms=log_norms),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, repl),
            donate_argnums=0,
        )
        for log_norms in (False, True)
    )  # the second adds param/update norms; it runs (and compiles) on logging steps only
    res = config.resolution
    abstract_batch = {
        "image": jax.ShapeDtypeStruct(
            (config.batch_size, res, res, 3), jnp.uint8, sharding=batch_sh
        ),
        "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=batch_sh),
    }
    if compile_only:
        compiled = step_fn.lower(abstract_state, abstract_batch).compile()
        cost = compiled.cost_analysis() or {}
        report = dict(
            flops_per_step=float(cost.get("flops", 0.0)),
            gflops_per_image=float(cost.get("flops", 0.0)) / config.batch_size / 1e9,
            **_memory_report(compiled),
        )
        # the logging steps' variant materialises the update: it needs the most temporary memory
        log_step = _memory_report(log_step_fn.lower(abstract_state, abstract_batch).compile())
        report["log_step_temp_size_in_bytes"] = log_step["temp_size_in_bytes"]
        logging.info("compile_only: %s", report)
        return report

    # ---- evaluation (reference statistics and Inception weights are read now) -------------------
    fid_evaluation = make_fid_evaluation(config, setup, mesh)

    # ---- input ----------------------------------------------------------------------------------
    if is_main:
        _keep_stats_copy(config, workdir)
    if source is None:
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
    ckpt = checkpoint.Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        config=config,
        best_metric="fid" if fid_evaluation else None,
    )
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

            parameter_overview.log_parameter_overview(nnx.to_pure_dict(st.params))
    sample_key = jax.random.key(config.seed + 1)
    grid_sampler = WorkdirSampler.from_setup(config, setup, mesh)
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
            log_now = schedule.is_periodic(step + 1, config.log_every, total_steps)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                st, m = (log_step_fn if log_now else step_fn)(st, batch)
            step += 1
            for hook in hooks:
                hook(step)
            log_norms = {k: m.pop(k) for k in state_lib.LOG_STEP_NORMS if k in m}
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            count += 1
            if log_now:
                fetched = jax.device_get(sums)
                metrics.check_finite(fetched, step, first_step=last_log + 1)
                dt = time.perf_counter() - t0
                scalars = {k: float(v) / count for k, v in fetched.items()}
                scalars.update({k: float(v) for k, v in jax.device_get(log_norms).items()})
                scalars["steps_per_s"] = count / dt
                scalars["images_per_s"] = count * config.batch_size / dt
                writer.write_scalars(step, scalars)
                sums, count, t0, last_log = None, 0, time.perf_counter(), step
            eval_metrics = None
            if fid_evaluation and _eval_due(config.eval, step, total_steps):
                eval_metrics = fid_evaluation(st.ema_params, step)
                writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            preempted = ckpt.reached_preemption(step)
            periodic = schedule.is_periodic(step, config.checkpoint_every, total_steps)
            if preempted or periodic or eval_metrics is not None:
                if sums is not None:  # never save a state that went non-finite
                    metrics.check_finite(jax.device_get(sums), step, first_step=last_log + 1)
                ckpt.save(step, st, iterator, metrics=eval_metrics)
                if preempted:
                    ckpt.wait_until_finished()
                    logging.warning("Preempted at step %d: checkpoint saved, exiting.", step)
                    raise Preempted(step)
            if schedule.is_periodic(step, config.sample_every, total_steps):
                grid = sample_grid(grid_sampler, st.ema_params, sample_key, step)
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

"""The one train loop, for every model family: one readable function in banner-marked sections.

`train_and_evaluate(config, workdir)`: config checks, mesh, shapes and the update step, input,
resume, and the loop with its periodic actions (metrics, sample grids, evaluators, checkpoints,
preemption). Nothing here depends on the family: `config.family` (default 'diffusion') picks a
`dctjax.families.Family`, which supplies the model, the loss of one batch, the batch layout and the
sampler. Adding a family adds files and changes no line of this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from PIL import Image

from dctjax import families
from dctjax.data import pipeline, sources
from dctjax.errors import user_errors
from dctjax.families import DataAccess, TrainedModel, Training
from dctjax.sampling import WorkdirSampler
from dctjax.train import checkpoint, metrics, schedule, sharding
from dctjax.train import state as state_lib


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; the exit code asks to be requeued."""

    def __init__(self, step: int):
        super().__init__(checkpoint.PREEMPTED_EXIT_CODE)
        self.step = step


@dataclasses.dataclass(frozen=True)
class Durations:
    """Every duration of a run in steps (each config field may be given in steps, epochs or
    examples, or tokens where the family counts them: `total_steps` / `total_epochs` /
    `total_examples` / `total_tokens`, `log_every` / `log_every_epochs` / ...,
    `checkpoint_every*`, `sample_every*`, `eval.every*`)."""

    total: int
    log_every: int
    checkpoint_every: int
    sample_every: int
    eval_every: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, data: DataAccess) -> Durations:
        """The config's durations; the dataset's size is read only for a duration in epochs."""
        tokens = families.get_family(config).tokens_per_example(config)

        def steps(node: Any, prefix: str, **default: Any) -> int:
            epochs = node.get(f"{prefix}_epochs") is not None
            return schedule.steps_from(
                node, prefix, batch_size=int(config.batch_size),
                num_examples=len(data.source) if epochs else None, tokens_per_example=tokens,
                **default,
            )  # fmt: skip

        e = config.get("eval") or ml_collections.ConfigDict()
        return cls(
            total=steps(config, "total"),
            log_every=steps(config, "log_every", default=0),
            checkpoint_every=steps(config, "checkpoint_every", default=0),
            sample_every=steps(config, "sample_every", default=0),
            eval_every=steps(e, "every", default=0),
        )


def build(
    config: ml_collections.ConfigDict, data: DataAccess | None = None
) -> tuple[TrainedModel, Training]:
    """The config's model and what training it needs, checked before any compilation.

    `data` (default: the config's training source, opened lazily) is read only by families that
    measure something on it (e.g. diffusion's inverse-variance loss weights)."""
    data = data or DataAccess(lambda: open_source(config))
    model = families.build(config)
    model.family.sample_options(config, model)  # an unknown sampler: error now, not at a grid
    return model, model.family.make_training(config, model, data)


def check_batch_size(config: ml_collections.ConfigDict) -> None:
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by the {jax.device_count()} devices; "
            "use a multiple of the device count."
        )


def make_train_step(
    training: Training, *, log_norms: bool = False
) -> Callable[[state_lib.TrainState, dict], tuple[state_lib.TrainState, dict]]:
    """The pure update: (state, batch) -> (state, metrics). Randomness is fold_in(rng, step).

    metrics: loss, the family's metrics, lr and grad_norm; with `log_norms` also param_norm and
    update_norm (the loop runs that variant on its logging steps only).
    """

    def train_step(st: state_lib.TrainState, batch: dict) -> tuple[state_lib.TrainState, dict]:
        def loss_fn(params):
            extra = (st.step,) if training.loss_uses_step else ()
            return training.loss_fn(params, batch, st.step_key(), *extra)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
        new, norms = st.apply_gradients(grads, training.tx, training.ema_decays, log_norms)
        return new, dict(loss=loss, **aux, lr=training.lr_schedule(st.step), **norms)

    return train_step


def open_source(config: ml_collections.ConfigDict) -> Any:
    """The training split's random-access source; a missing dataset names how to prepare it."""
    ds = config.dataset
    kwargs = {"num_examples": ds.num_examples} if ds.get("num_examples") else {}
    try:
        return sources.make_source(
            ds.name, ds.split, data_dir=ds.data_dir, resolution=config.resolution, **kwargs
        )
    except sources.DatasetNotPreparedError as e:
        hint = ds.get("prepare_hint")
        raise sources.DatasetNotPreparedError(f"{e}\n{hint}" if hint else str(e)) from None


def make_fid_evaluation(
    config: ml_collections.ConfigDict, sampler: WorkdirSampler
) -> Callable[[Any, int], dict[str, float]] | None:
    """The periodic FID evaluation of `config.eval`: (ema_params, step) -> metrics, for any family.

    None when `eval.every` is 0 or no reference statistics are configured. The reference file and
    the Inception weights are loaded here, before the train step compiles, so a missing file fails
    the run at start-up.
    """
    e = config.get("eval")
    if not e or not (e.get("every") or e.get("every_epochs") or e.get("every_examples")):
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
    mesh, model = sampler.mesh, sampler.model
    batch_size = sharding.round_to_devices(e.batch_size, mesh)
    extractor = load_inception(e.get("inception_weights"), batch_size=batch_size, mesh=mesh)
    evaluator = FidEvaluator(
        extractor, reference, int(e.num_samples), batch_size, e.get("jpeg_quality")
    )
    options = dict(sampler=e.get("sampler"), nfe=e.get("nfe"))
    model.family.sample_options(config, model, **options)  # bad options: error now
    key = jax.random.key(int(config.seed) + 2)

    def evaluate(ema_params: Any, step: int) -> dict[str, float]:
        sampler.set_params(ema_params, step)
        metrics_ = evaluator.evaluate(
            lambda k, n: sampler.sample(k, n, batch_size=batch_size, **options), key
        )
        logging.info("step %d: %s (settings %s)", step, metrics_, evaluator.settings)
        return metrics_

    return evaluate


def memory_report(compiled: Any) -> dict[str, int | None]:
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
    temporaries are reported too) for the configured mesh and batch, logs XLA's memory analysis
    and FLOPs, and returns them as a dict without reading the data (unless a duration is given in
    epochs, which needs the dataset's size).

    Everything runs with the mesh set (`jax.set_mesh`), so kernels that XLA cannot partition by
    itself (the Pallas TPU attention) are traced per shard.
    """
    with user_errors():
        mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    with jax.set_mesh(mesh):
        return _train_and_evaluate(config, workdir, mesh, compile_only)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh, compile_only: bool
) -> Any:
    # ---- config checks (before any compilation) -------------------------------------------------
    data = DataAccess(lambda: open_source(config))
    with user_errors():
        model, training = build(config, data)
        family = model.family
        check_batch_size(config)
        durations = Durations.from_config(config, data)

    # ---- workdir and shardings ------------------------------------------------------------------
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)

    # ---- shapes, shardings and the update step --------------------------------------------------
    init_args = (model.init_fn, training.tx, config.seed, mesh, config.mesh.param_strategy)
    num_emas = len(training.ema_decays)
    abstract_state = state_lib.abstract_train_state(*init_args, num_emas=num_emas)
    state_sh = sharding.tree_shardings(abstract_state)
    step_fn, log_step_fn = (
        jax.jit(
            make_train_step(training, log_norms=log_norms),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, repl),
            donate_argnums=0,
        )
        for log_norms in (False, True)
    )  # the second adds param/update norms; it runs (and compiles) on logging steps only
    batch_spec = family.batch_spec(config, model)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((config.batch_size, *shape), dtype, sharding=batch_sh)
        for k, (shape, dtype) in batch_spec.items()
    }
    if compile_only:
        compiled = step_fn.lower(abstract_state, abstract_batch).compile()
        cost = compiled.cost_analysis() or {}
        report = dict(
            flops_per_step=float(cost.get("flops", 0.0)),
            gflops_per_image=float(cost.get("flops", 0.0)) / config.batch_size / 1e9,
            **memory_report(compiled),
        )
        # the logging steps' variant materialises the update: it needs the most temporary memory
        log_step = memory_report(log_step_fn.lower(abstract_state, abstract_batch).compile())
        report["log_step_temp_size_in_bytes"] = log_step["temp_size_in_bytes"]
        logging.info("compile_only: %s", report)
        return report

    # ---- evaluators (reference statistics, Inception weights and eval data are read now) --------
    sampler = WorkdirSampler(model, mesh)  # the grids' and the evaluators'
    with user_errors():
        fid_evaluation = make_fid_evaluation(config, sampler)
        evaluations = [fid_evaluation] if fid_evaluation else []
        evaluations += family.evaluations(config, model, mesh)

    # ---- input ----------------------------------------------------------------------------------
    with user_errors():
        source = data.source
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        worker_count=config.input.worker_count,
        random_flip=config.input.random_flip,
        representation=model.representation,  # a host-side transform (sparse_dct) runs here
    )
    iterator = iter(dataset)

    # ---- resume ---------------------------------------------------------------------------------
    writer = metrics.make_writer(workdir, is_main)
    ckpt = checkpoint.Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        config=family.config_for_workdir(config),  # self-contained: statistics resolved
        best_metric="fid" if fid_evaluation else None,
    )
    restored = ckpt.restore_latest(abstract_state, iterator)
    if restored is not None:
        st, start = restored
        logging.info("Resumed from step %d.", start)
    else:
        st, start = state_lib.create_train_state(*init_args, num_emas=num_emas), 0
        if config.get("init_from"):
            st = checkpoint.init_from(config.init_from, st)
        if is_main:
            from clu import parameter_overview

            parameter_overview.log_parameter_overview(nnx.to_pure_dict(st.params))
    sample_key = jax.random.key(config.seed + 1)
    hooks = []
    if is_main and metrics.clu_writers_available():
        from clu import periodic_actions

        hooks.append(
            periodic_actions.ReportProgress(num_train_steps=durations.total, writer=writer)
        )

    def due(every: int) -> bool:
        return schedule.is_periodic(step, every, durations.total)

    def checked_sums() -> dict[str, Any]:
        """The metrics summed since the last log, fetched; a NaN/Inf stops the run here."""
        fetched = jax.device_get(sums)
        metrics.check_finite(fetched, step, first_step=last_log + 1)
        return fetched

    # ---- train loop -----------------------------------------------------------------------------
    sums, count, t0, last_log = None, 0, time.perf_counter(), start
    step, host_batch, batch = start, None, None
    try:
        while step < durations.total:
            host_batch = next(iterator)
            batch = pipeline.make_global_batch({k: host_batch[k] for k in batch_spec}, batch_sh)
            log_now = schedule.is_periodic(step + 1, durations.log_every, durations.total)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                st, m = (log_step_fn if log_now else step_fn)(st, batch)
            step += 1
            for hook in hooks:
                hook(step)
            log_norms = {k: m.pop(k) for k in state_lib.LOG_STEP_NORMS if k in m}
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
            count += 1
            if log_now:
                dt = time.perf_counter() - t0
                scalars = {k: float(v) / count for k, v in checked_sums().items()}
                if training.finalize_metrics is not None:
                    scalars = training.finalize_metrics(scalars)
                scalars.update({k: float(v) for k, v in jax.device_get(log_norms).items()})
                scalars["steps_per_s"] = count / dt
                scalars["images_per_s"] = count * config.batch_size / dt
                if "tokens_per_step" in scalars:  # families that count loss-bearing tokens
                    scalars["tokens_per_s"] = scalars["tokens_per_step"] * count / dt
                writer.write_scalars(step, scalars)
                sums, count, t0, last_log = None, 0, time.perf_counter(), step
            eval_metrics = None
            if evaluations and step >= int(config.eval.get("start") or 0):
                if due(durations.eval_every):
                    eval_metrics = {}
                    for evaluate in evaluations:
                        eval_metrics.update(evaluate(st.ema_params, step))
                    writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            preempted = ckpt.reached_preemption(step)
            if preempted or due(durations.checkpoint_every) or eval_metrics is not None:
                if sums is not None:  # never save a state that went non-finite
                    checked_sums()
                ckpt.save(step, st, iterator, metrics=eval_metrics)
                if preempted:
                    ckpt.wait_until_finished()
                    logging.warning("Preempted at step %d: checkpoint saved, exiting.", step)
                    raise Preempted(step)
            if durations.sample_every and due(durations.sample_every):  # 0: no grids
                grid = sampler.grid(st.ema_params, sample_key, step, int(config.sample.num))
                writer.write_images(step, {"samples": grid[None]})
                if is_main:
                    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
                    Image.fromarray(grid).save(os.path.join(workdir, "samples", f"{step:08d}.png"))
    finally:
        # grain's batches live in shared memory until they are freed: an exception (preemption, the
        # NaN guard) keeps this frame alive until exit, so drop them here, not at interpreter
        # shutdown (where Python's resource tracker reports them as leaked segments)
        host_batch = batch = None  # noqa: F841
        writer.flush()
        ckpt.close()
        if hasattr(iterator, "close"):
            iterator.close()
    return st

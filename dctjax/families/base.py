"""What every model family supplies to the one train loop and the one sampler.

A family (`config.family`, default 'diffusion') is a small object with four jobs:

- `build(config) -> TrainedModel`: what a trained model *is*: representation, graphdef and init
  function, its process (schedule), classes and null label. Sampling a workdir needs only this:
  it never builds an optimiser or reads the data.
- `make_training(config, model, data) -> Training`: what training *needs*: the loss of one batch,
  the optimiser and lr schedule, the EMA decays. `data` gives lazy access to the training source
  (only families that measure something on the data read it).
- `batch_spec(config, model)`: the fields (and per-example shapes and dtypes) it takes from the
  pipeline's batches; the loop moves exactly those to the devices.
- `sample_batch(model, params, key, indices, labels, options) -> uint8 images`: one batch of
  samples, a pure function the sampler jits; `sample_options` resolves and checks the options
  (sampler name, nfe, guidance, ...) against the run's config before any compilation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from dctjax import representations
from dctjax.models import layers, make_model
from dctjax.train import optim

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]  # (params, batch, key[, step])
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class TrainedModel:
    """A model ready to be initialised, trained or sampled (no optimiser, no data)."""

    config: ml_collections.ConfigDict
    family: Family
    representation: Any
    graphdef: Any
    init_fn: Callable[[jax.Array], Any]  # key -> params (an nnx.State of the nnx.Param leaves)
    process: Any  # the family's process: VPSchedule, FlowSchedule, ...
    num_classes: int = 0
    null_label: int | None = None  # the null class of a CFG-capable model

    def module(self, params: Any) -> nnx.Module:
        return nnx.merge(self.graphdef, params)


@dataclasses.dataclass
class Training:
    """What the loop needs to train a `TrainedModel`.

    loss_fn(params, batch, key) -> (loss, metrics): the batch holds the fields of `batch_spec`
    (already on the devices); key is this step's key; metrics are float32 scalars averaged over
    the logging interval next to the loss.
    ema_decays: the first EMA is the one sampled from (`ema_params`); more decays are kept too.
    loss_uses_step: True when loss_fn takes a 4th argument, the update's step (int32 scalar), for
    losses that change with training time (e.g. a GAN term from a start step).
    finalize_metrics: maps the interval's averaged metrics (host floats) to the logged ones, e.g.
    ratios of two averaged sums; None logs them as they are.
    """

    loss_fn: LossFn
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    ema_decays: tuple[float, ...]
    finalize_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None
    loss_uses_step: bool = False


class DataAccess:
    """Lazy, cached access to the training source (read only by families that need it)."""

    def __init__(self, open_source: Callable[[], Any]):
        self._open = open_source
        self._source = None

    @property
    def source(self) -> Any:
        if self._source is None:
            self._source = self._open()
        return self._source


class Family:
    """Base class: the parts most families share. Subclasses set `name` and override as needed."""

    name: ClassVar[str] = ""
    # conditioning tasks whose samples continue context images (`sample_batch(context=...)`)
    context_tasks: ClassVar[tuple[str, ...]] = ()

    # ---- the model ------------------------------------------------------------------------------
    def make_process(self, config: ml_collections.ConfigDict) -> Any:
        raise NotImplementedError

    def model_kwargs(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        """Keyword arguments for `make_model` beyond input_shape, dtype and rngs."""
        kwargs = dict(config.model_kwargs)
        kwargs.setdefault("num_classes", num_classes(config))
        return kwargs

    def model_inputs(
        self, config: ml_collections.ConfigDict, representation: Any
    ) -> dict[str, Any]:
        """What the model takes from the representation (default: its per-example shape)."""
        del config
        return {"input_shape": representation.shape}

    def build(self, config: ml_collections.ConfigDict) -> TrainedModel:
        """Checks the config's model fields and builds the pure pieces (ValueError names a field)."""
        rep = representations.from_config(config)
        dtype = DTYPES.get(config.get("dtype", "float32"))
        if dtype is None:
            raise ValueError(f"dtype={config.dtype!r} is not valid; use 'float32' or 'bfloat16'.")
        kwargs = {**self.model_inputs(config, rep), **self.model_kwargs(config)}

        def new_model(key: jax.Array) -> nnx.Module:
            return make_model(config.model, rngs=nnx.Rngs(key), dtype=dtype, **kwargs)

        abstract = nnx.eval_shape(lambda: new_model(jax.random.key(0)))
        graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
        if jax.tree.leaves(rest):
            raise ValueError(
                f"model {config.model!r} has non-parameter state; the trainer expects none."
            )
        if hasattr(abstract, "num_heads"):  # attention='cudnn' where it cannot run: error now
            head_dim = abstract.embed_dim // abstract.num_heads
            layers.attention_implementation(kwargs.get("attention", "auto"), dtype, head_dim)

        def init_fn(key: jax.Array) -> Any:
            return nnx.state(new_model(key), nnx.Param)

        n = num_classes(config)
        return TrainedModel(
            config=config,
            family=self,
            representation=rep,
            graphdef=graphdef,
            init_fn=init_fn,
            process=self.make_process(config),
            num_classes=n,
            null_label=n if n and getattr(abstract, "null_class", False) else None,
        )

    # ---- training -------------------------------------------------------------------------------
    def batch_spec(
        self, config: ml_collections.ConfigDict, model: TrainedModel
    ) -> dict[str, tuple[tuple[int, ...], Any]]:
        """field -> (per-example shape, dtype) of the pipeline batches this family trains on."""
        res = int(config.resolution)
        return {"image": ((res, res, 3), jnp.uint8), "label": ((), jnp.int32)}

    def make_training(
        self, config: ml_collections.ConfigDict, model: TrainedModel, data: DataAccess
    ) -> Training:
        raise NotImplementedError

    def tokens_per_example(self, config: ml_collections.ConfigDict) -> int | None:
        """Loss-bearing tokens per training example, for durations in tokens (`total_tokens`);
        None when the family does not count tokens."""
        del config
        return None

    def evaluations(
        self, config: ml_collections.ConfigDict, model: TrainedModel, mesh: jax.sharding.Mesh
    ) -> list[Callable[[Any, int], dict[str, float]]]:
        """The family's own periodic evaluations, run with FID at `eval.every`: each is
        (ema_params, step) -> metrics. Built (and their data read) before the step compiles."""
        del config, model, mesh
        return []

    def optimizer(
        self, config: ml_collections.ConfigDict
    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
        return optim.make_optimizer(config.optim, batch_size=int(config.batch_size))

    # ---- sampling -------------------------------------------------------------------------------
    def sample_options(
        self, config: ml_collections.ConfigDict, model: TrainedModel, **overrides: Any
    ) -> dict[str, Any]:
        """The run's sampling settings updated with the non-None `overrides`, checked."""
        raise NotImplementedError

    def sample_batch(
        self,
        model: TrainedModel,
        params: Any,
        key: jax.Array,
        indices: jax.Array,
        labels: jax.Array | None,
        options: Mapping[str, Any],
        context: jax.Array | None = None,
    ) -> jax.Array:
        """uint8 images (B, H, W, 3) for the samples numbered `indices` (B,); jit-able. context:
        uint8 (B, H, W, 3) images that options['task'] (one of `context_tasks`) conditions on."""
        raise NotImplementedError

    def config_for_workdir(self, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """The config as saved with the checkpoints: self-contained (statistics resolved)."""
        return representations.resolve_config(config)


def num_classes(config: ml_collections.ConfigDict) -> int:
    return int(config.dataset.get("num_classes") or 0)


def label_dropout(config: ml_collections.ConfigDict, model: TrainedModel) -> float:
    """config.label_dropout, checked against the model (it needs a null class)."""
    p = float(config.get("label_dropout") or 0.0)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {p}.")
    if p and model.null_label is None:
        raise ValueError(
            f"label_dropout={p} needs a class-conditional model with a null class "
            "(dataset.num_classes > 0 and a model with null_class, e.g. 'dit' or 'jit')."
        )
    return p


def drop_labels(
    labels: jax.Array | None, key: jax.Array, p: float, null_label: int | None
) -> jax.Array | None:
    """Replaces each label by `null_label` with probability p (classifier-free guidance)."""
    if labels is None or not p:
        return labels
    drop = jax.random.bernoulli(key, p, labels.shape)
    return jnp.where(drop, null_label, labels)


def ema_decays(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """config.ema_decay as a tuple: a float, or a list whose first entry is sampled from."""
    d = config.get("ema_decay", 0.9999)
    decays = tuple(float(x) for x in (d if isinstance(d, list | tuple) else [d]))
    if not decays or any(not 0.0 <= x < 1.0 for x in decays):
        raise ValueError(f"ema_decay must be a float in [0, 1) or a list of them, got {d!r}.")
    return decays


def check_guidance(model: TrainedModel, guidance: float | None) -> None:
    if guidance is not None and model.null_label is None:
        raise ValueError(
            "classifier-free guidance needs a model trained with a null class (num_classes > 0 "
            "and label_dropout > 0); this model has none."
        )

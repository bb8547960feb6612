"""The three ways a model sees an image, chosen by name (`config.representation`).

A representation is a pair of pure functions `encode(images_uint8) -> x` and `decode(x) ->
images_uint8` plus the static facts a model needs (the shape of `x`, vocabulary sizes, loss
weights). The data pipeline yields uint8 images; `encode` runs jitted on device inside the train
step (pixels, dct_tokens) or on the host in the grain workers (sparse_dct, whose chunking is
per-example and random).

| name         | x                                                     | models                      |
|--------------|-------------------------------------------------------|-----------------------------|
| `pixels`     | float32 image in [-1, 1], (N, H, W, 3)                | pixel U-ViT, JiT + SF       |
| `dct_tokens` | float32 (N, (H/2B)(W/2B), 6*low_freqs), scaled by eta | DCTdiff                     |
| `sparse_dct` | (channel, position, value) + STOP, padded, with mask  | DCTransformer               |
| `latents`    | float32 (N, h, w, C): a frozen autoencoder's, scaled  | latent U-ViT / DiT          |
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from dctjax.autoregressive import chunking
from dctjax.codec import _checks, sparse, tokens
from dctjax.data.reference_stats import (
    ReferenceStats,
    load_stats,
    reference_stats,
    stats_from_dict,
)
from dctjax.data.stats import ebfr_weights
from dctjax.registry import Registry

_REGISTRY: Registry[type[Representation]] = Registry("representation")


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a representation to the registry under `name`."""

    def add(cls: type) -> type:
        cls.name = name
        return _REGISTRY.register(name, cls)

    return add


def registered() -> list[str]:
    return _REGISTRY.names()


def make_representation(name: str, **kwargs: Any) -> Representation:
    """Builds a representation by name; its arguments are checked here, before any compilation."""
    cls = _REGISTRY.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kwargs) - fields
    if unknown:
        raise ValueError(
            f"representation {name!r} takes no argument(s) {sorted(unknown)}; "
            f"its arguments are {sorted(fields)}."
        )
    return cls(**kwargs)


def from_config(config: Any) -> Representation:
    """`config.representation` names it; `config.representation_kwargs` (a dict) configures it;
    `config.resolution` is passed through."""
    kwargs = _to_dict(config.get("representation_kwargs", {}) or {})
    kwargs.setdefault("resolution", config.resolution)
    return make_representation(config.representation, **kwargs)


def _to_dict(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def resolve_config(config: Any) -> Any:
    """A copy of `config` whose statistics file (`representation_kwargs.stats` naming a JSON) is
    replaced by its contents, so a run's saved config needs no outside file to be sampled."""
    config = _resolve_measured(config)
    kw = config.get("representation_kwargs") or {}
    stats = kw.get("stats") if hasattr(kw, "get") else None
    if not (isinstance(stats, str) and stats.endswith(".json")):
        return config
    resolved = dataclasses.asdict(load_stats(stats))
    resolved["source"] = resolved.get("source") or stats
    d = config.to_dict()
    d["representation_kwargs"]["stats"] = resolved
    return type(config)(d)


def _resolve_measured(config: Any) -> Any:
    """A copy of `config` with what its representation measured on data (`resolved_kwargs`)."""
    cls = _REGISTRY.get(config.representation)
    if cls.resolved_kwargs is Representation.resolved_kwargs:
        return config
    extra = from_config(config).resolved_kwargs()
    if not extra:
        return config
    d = config.to_dict()
    d.setdefault("representation_kwargs", {}).update(extra)
    return type(config)(d)


@dataclasses.dataclass(frozen=True)
class Representation:
    """Base class: `resolution` is the square image size the pipeline yields."""

    name: ClassVar[str] = ""
    resolution: int

    def __post_init__(self):
        _checks.check_int_range(self.resolution, "resolution", 1, 1 << 16)

    def encode(self, images: jnp.ndarray) -> Any:
        raise NotImplementedError

    def decode(self, x: Any) -> jnp.ndarray:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example shape of the (dense) encoded array."""
        raise NotImplementedError

    def loss_weights(self) -> np.ndarray | None:
        """Per-feature loss weights broadcastable against `x`, or None for unit weights."""
        return None

    def resolved_kwargs(self) -> dict[str, Any]:
        """Arguments measured on data that a saved config should hold (none by default)."""
        return {}


@register("pixels")
@dataclasses.dataclass(frozen=True)
class Pixels(Representation):
    """uint8 -> float32 in [-1, 1]: x = u/127.5 - 1; decode rounds back to uint8."""

    def encode(self, images: jnp.ndarray) -> jnp.ndarray:
        _checks.check_images(images)
        return images.astype(jnp.float32) / 127.5 - 1.0

    def decode(self, x: jnp.ndarray) -> jnp.ndarray:
        return jnp.round(jnp.clip((x + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.resolution, self.resolution, 3)


@register("dct_tokens")
@dataclasses.dataclass(frozen=True)
class DCTTokens(Representation):
    """DCTdiff tokens. eta and the entropies come from `stats`: a reference dataset name such as
    'ffhq256', a JSON file from `launch/dct_stats.py`, that file's contents as a dict (how a run's
    saved config holds them), or a `ReferenceStats`. Without `stats`,
    pass `eta` and the loss weights are unit; `ebfr=False` also gives unit weights."""

    block_size: int = 4
    low_freqs: int | None = None  # None: the statistics' L, else B*B (no truncation)
    eta: float | None = None
    stats: str | dict | ReferenceStats | None = None
    ebfr: bool = True

    def __post_init__(self):
        super().__post_init__()
        b = _checks.check_block_size(self.block_size)
        if self.resolution % (2 * b):
            raise ValueError(
                f"resolution={self.resolution} is not divisible by 2*block_size={2 * b}; "
                f"use a resolution that is a multiple of {2 * b} or another block_size."
            )
        if hasattr(self.stats, "keys"):  # a run's saved config holds the statistics themselves
            object.__setattr__(self, "stats", stats_from_dict(self.stats))
        s = self._stats()
        if self.low_freqs is None:
            object.__setattr__(self, "low_freqs", b * b if s is None else s.low_freqs)
        _checks.check_int_range(self.low_freqs, "low_freqs", 1, b * b)
        if s is not None and s.block_size != b:
            raise ValueError(
                f"the statistics are for block_size={s.block_size} but block_size={b}; "
                "recompute them with launch/dct_stats.py for this block size."
            )
        if s is None and self.eta is None:
            raise ValueError(
                "dct_tokens needs eta: pass eta=..., or stats= a reference dataset name "
                f"({sorted(_reference_names())}) or a JSON file from launch/dct_stats.py."
            )
        _checks.check_positive(self.eta_value, "eta")

    def _stats(self) -> ReferenceStats | None:
        if self.stats is None or isinstance(self.stats, ReferenceStats):
            return self.stats
        if str(self.stats).endswith(".json"):
            return load_stats(self.stats)
        return reference_stats(self.stats)

    @property
    def eta_value(self) -> float:
        return float(self.eta) if self.eta is not None else self._stats().eta

    def encode(self, images: jnp.ndarray) -> jnp.ndarray:
        return tokens.images_to_tokens(images, self.block_size, self.low_freqs, self.eta_value)

    def decode(self, x: jnp.ndarray) -> jnp.ndarray:
        r = self.resolution
        return tokens.tokens_to_images(
            x, self.block_size, self.low_freqs, self.eta_value, image_size=(r, r)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        gh, gw = tokens.token_grid(self.resolution, self.resolution, self.block_size)
        return (gh * gw, tokens.token_dim(self.low_freqs))

    def loss_weights(self) -> np.ndarray | None:
        """EBFR weights (6L,) from the statistics' entropies, or None (unit) without them."""
        s = self._stats()
        if not self.ebfr or s is None:
            return None
        return ebfr_weights(
            s.entropy_y, s.entropy_cb, s.entropy_cr, self.block_size, self.low_freqs
        )


def _reference_names() -> list[str]:
    from dctjax.data.reference_stats import REFERENCE_STATS

    return list(REFERENCE_STATS)


@register("sparse_dct")
@dataclasses.dataclass(frozen=True)
class SparseDCT(Representation):
    """DCTransformer sparse sequences: quantized block DCT at `quality`, values clipped to
    [-clip, clip], sorted by `order`, padded to `max_len` (None: the worst case, every coefficient
    non-zero). Training uses chunks of `chunk_size` targets with `overlap` context elements and
    keeps an image with probability min(L'/max_length, 1) (None: no filtering). With
    `colorization`, chunks cover only the chroma part of 'luma_first' sequences, and no image is
    filtered out (spec §4.4)."""

    block_size: int = 8
    quality: int = 75
    clip: int = 1200
    max_len: int | None = None
    order: str = "interleaved"
    chunk_size: int = chunking.CHUNK_SIZE
    overlap: int = chunking.OVERLAP
    max_length: int | None = None
    p_min: float = chunking.P_MIN
    colorization: bool = False

    def __post_init__(self):
        super().__post_init__()
        b = _checks.check_block_size(self.block_size)
        _checks.check_int_range(self.quality, "quality", 1, 100)
        _checks.check_int_range(self.clip, "clip", 1, 1 << 20)
        if self.resolution % (2 * b):
            raise ValueError(
                f"resolution={self.resolution} is not divisible by 2*block_size={2 * b} (the "
                "half-resolution chroma planes tile into BxB blocks); change resolution or "
                "block_size."
            )
        if self.order not in sparse.ORDERS:
            raise ValueError(f"order={self.order!r} is not valid; use one of {sparse.ORDERS}.")
        _checks.check_int_range(self.chunk_size, "chunk_size", 1, 1 << 20)
        _checks.check_int_range(self.overlap, "overlap", 1, 1 << 20)
        if self.colorization and self.order != "luma_first":
            raise ValueError(
                f"colorization trains on the chroma part of order='luma_first' sequences; "
                f"got order={self.order!r}. Set order='luma_first'."
            )
        if self.max_len is not None:
            _checks.check_int_range(self.max_len, "max_len", 1, 1 << 30)
        if self.max_length is not None:
            _checks.check_int_range(self.max_length, "max_length", 1, 1 << 30)

    @property
    def grid_shape(self) -> tuple[int, int]:
        g = self.resolution // self.block_size
        return (g, g)

    @property
    def padded_length(self) -> int:
        """Static sequence length: `max_len`, or every coefficient non-zero plus STOP."""
        if self.max_len is not None:
            return self.max_len
        return sparse.max_sequence_length(self.grid_shape, self.block_size)

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Output vocabularies: channel (3B^2 + STOP), position (G_h*G_w), value (2*clip + 1)."""
        gh, gw = self.grid_shape
        return dict(
            channel=sparse.stop_channel(self.block_size) + 1,
            position=gh * gw,
            value=2 * self.clip + 1,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.padded_length,)

    def encode(self, images: jnp.ndarray) -> sparse.SparseSequence:
        return sparse.images_to_sequence(
            images, self.block_size, self.quality, self.clip, self.padded_length, self.order
        )

    def decode(self, x: sparse.SparseSequence) -> jnp.ndarray:
        return sparse.sequence_to_images(x, self.block_size, self.quality, self.grid_shape)

    def host_encode(self, image: np.ndarray) -> sparse.SparseSequence:
        """One uint8 (H, W, 3) image -> its unpadded sequence, in NumPy (for grain workers)."""
        dense = sparse.np_images_to_dct_image(image, self.block_size, self.quality, self.clip)
        return sparse.np_dct_image_to_sequence(dense, self.block_size, self.order)

    def training_example(self, image: np.ndarray, rng: chunking.RngLike) -> dict | None:
        """One uint8 image -> a chunked training example (see `chunking.make_chunk`), or None when
        sequence-length filtering drops it. `rng` is a Generator or a per-example (seed, index)."""
        rng = chunking.as_generator(rng)
        seq = self.host_encode(image)
        length = int(seq.length)
        filtering = self.max_length is not None and not self.colorization  # spec §4.4 Choice
        if filtering and not chunking.keep_example(length, self.max_length, rng):
            return None
        chroma_start = (
            chunking.find_chroma_start(seq, self.block_size) if self.colorization else None
        )
        return chunking.random_chunk(
            seq,
            rng,
            block_size=self.block_size,
            grid_shape=self.grid_shape,
            clip=self.clip,
            chunk_size=self.chunk_size,
            overlap=self.overlap,
            p_min=self.p_min,
            chroma_start=chroma_start,
        )


@functools.cache
def _autoencoder(workdir: str, step: int | None) -> tuple[Any, Any]:
    """(TrainedModel, params) of an autoencoder workdir, loaded once per process."""
    from dctjax.sampling import load_workdir_sampler  # the sampler imports this module

    sampler = load_workdir_sampler(workdir, step)
    if sampler.model.family.name != "autoencoder":
        raise ValueError(
            f"representation 'latents' needs an autoencoder workdir; {workdir} holds a "
            f"{sampler.model.family.name!r} run."
        )
    return sampler.model, sampler.params


@functools.cache
def _latent_moments(workdir: str, step: int | None, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the posterior means of the autoencoder's first `num` training
    images (its own config's dataset and split)."""
    import jax

    from dctjax.train.loop import open_source

    model, params = _autoencoder(workdir, step)
    source = open_source(model.config)
    n = min(int(num), len(source))
    rep = model.representation
    encode = jax.jit(lambda p, u: model.module(p).encode(rep.encode(u))[0])
    sums, sq, count = 0.0, 0.0, 0
    for i in range(0, n, 64):
        images = np.stack([np.asarray(source[j]["image"]) for j in range(i, min(i + 64, n))])
        z = np.asarray(encode(params, images), np.float64).reshape(-1, latent_shape(model)[-1])
        sums, sq, count = sums + z.sum(0), sq + (z**2).sum(0), count + z.shape[0]
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return mean, std


def latent_shape(model: Any) -> tuple[int, ...]:
    """(h, w, C) of an autoencoder model's latents."""
    import jax

    abstract = model.module(jax.eval_shape(model.init_fn, jax.random.key(0)))
    return tuple(int(v) for v in abstract.latent_shape)


@register("latents")
@dataclasses.dataclass(frozen=True)
class Latents(Representation):
    """A frozen autoencoder's latents (latent diffusion; DCTdiff's "UViT (latent)" baseline).

    x = (mean(E(u / 127.5 - 1)) - shift) * scale per channel, (N, h, w, C); decode runs the decoder
    on x / scale + shift. autoencoder: the autoencoder's training workdir; step: its checkpoint
    (None: the latest). shift, scale: per-channel (C,) values; None measures them on the first
    `stats_examples` images of the autoencoder's training data (mean and 1 / std of the posterior
    means, the per-channel form of latent diffusion's scale factor), and a run's saved config holds
    the measured values. The posterior mean is encoded (latent diffusion samples the posterior; the
    mean is deterministic and, at kl_weight 1e-6, equal to a sample up to ~1e-3).
    """

    autoencoder: str = ""
    step: int | None = None
    shift: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    stats_examples: int = 1024

    def __post_init__(self):
        super().__post_init__()
        if not self.autoencoder:
            raise ValueError(
                "representation 'latents' needs representation_kwargs.autoencoder=WORKDIR, an "
                "autoencoder run (configs/autoencoder_quickstart.py trains one on a CPU)."
            )
        for name in ("shift", "scale"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))
        model, _ = _autoencoder(str(self.autoencoder), self.step)
        if int(model.config.resolution) != self.resolution:
            raise ValueError(
                f"the autoencoder in {self.autoencoder} was trained at {model.config.resolution} "
                f"px, the run's resolution is {self.resolution}; set resolution to match."
            )
        c = latent_shape(model)[-1]
        for name in ("shift", "scale"):
            v = getattr(self, name)
            if v is not None and len(v) != c:
                raise ValueError(
                    f"representation_kwargs.{name} must have {c} values, got {len(v)}."
                )
        if self.shift is None or self.scale is None:  # measured now, never inside a trace
            mean, std = _latent_moments(str(self.autoencoder), self.step, int(self.stats_examples))
            if self.shift is None:
                object.__setattr__(self, "shift", tuple(float(v) for v in mean))
            if self.scale is None:
                object.__setattr__(self, "scale", tuple(float(v) for v in 1.0 / std))

    def _parts(self) -> tuple[Any, Any, jnp.ndarray, jnp.ndarray]:
        model, params = _autoencoder(str(self.autoencoder), self.step)
        return model, params, jnp.asarray(self.shift), jnp.asarray(self.scale)

    def encode(self, images: jnp.ndarray) -> jnp.ndarray:
        _checks.check_images(images)
        model, params, shift, scale = self._parts()
        mean, _ = model.module(params).encode(model.representation.encode(images))
        return (mean.astype(jnp.float32) - shift) * scale

    def decode(self, x: jnp.ndarray) -> jnp.ndarray:
        model, params, shift, scale = self._parts()
        return model.representation.decode(model.module(params).decode(x / scale + shift))

    @property
    def shape(self) -> tuple[int, ...]:
        return latent_shape(_autoencoder(str(self.autoencoder), self.step)[0])

    def resolved_kwargs(self) -> dict[str, Any]:
        return {"shift": list(self.shift), "scale": list(self.scale)}

"""Sampling throughput: images/s of every VP sampler at NFE 10, 20 and 50.

    python benchmarks/sampling.py [--json=sampling.json] [--full] [--batch=16] [--repeats=3]

Models (random weights; the cost does not depend on them): the quickstart DiT, and U-ViT S at the
paper's CIFAR-10 (64 DCT tokens) and CelebA-64 settings; `--full` adds U-ViT S and M at FFHQ-256 and
AFHQ-512, which are slow on a CPU. Each row times `WorkdirSampler.sample` (one compiled loop per
batch, decode included, images fetched to the host) after a warm-up call: median of `--repeats`.
The network dominates, so images/s x NFE should be roughly constant across samplers; the column
`ms_per_nfe_image` makes the per-step overhead of each solver visible.

DCTransformer (the autoregressive family), selected with `--dctransformer` (then only it runs):

    python benchmarks/sampling.py --dctransformer [--dct_size=S] [--dct_points=32/8,64/8] \
        [--dct_batch=4] [--dct_max_chunks=2,8,32] [--dct_uncached_elements=16] [--repeats=3] \
        [--json=benchmarks/results/sampling_dctransformer.json]

The paper's slice (896 targets + 128 overlap = 1,024 slots) and the lsun codec (quality 75, clip
1200) at each `R/B` of --dct_points, model --dct_size with random weights. `sample_sequences`
(jitted, compiled ahead of time, so no compile in the timings) is timed three ways, in turns
(`interleaved_median_seconds`, median of --repeats) after a one-step warm-up call:

  cached, chunk: the KV-cached sampler over one whole chunk (max_chunks=1, 896 elements a sample);
  cached, short / uncached, short: the KV-cached and the uncached sampler (every decoder re-run
      over the whole 1,024-slot slice for each element) over K elements a sample, K ~
      --dct_uncached_elements + 1 (the uncached one is slow; its cost per element does not depend
      on the element's slot, so a short run measures it).

A random model stops within a few elements (under the validity masks its near-uniform channel
draws soon reach the last channel, then STOP), so the timed weights make a deterministic walk:
the channel head's bias falls by 50 per rank of the sequence order (STOP last) and the position
head's by 50 per position, so each sample takes the lowest allowed channel and position (value:
any non-zero). Nothing stops a sample inside the chunk (the walk reaches STOP
only after every coefficient); for the short runs `forbid_channels` keeps a few chroma channels,
so STOP is forced after their positions (K elements, STOP included). The returned lengths are
checked. The cost per element does not depend on the weights. Two executables (cached and
uncached, max_chunks=1; forbid_channels is an argument) serve the three runs. --dct_chunk=N/O
replaces the 896/128 slice (tests).

Per row: elements (samples x elements a sample, from the returned lengths), seconds, elements/s,
ms per element (seconds / elements) and per step (one element of every sample), images/s
(elements/s over `image_length`, the median sequence length, STOP included, of the codec's
sequences of synthetic images at that resolution: what a full image would take), and `speedup`:
elements/s over the uncached row's at the same resolution (the issue's goal: >= 10 at 1,024
slots). The memory rows compile the cached sampler (no run) at --dct_max_chunks and report XLA's
memory analysis: temp memory should grow only by the sequence buffer (`seq_buffer_bytes`: three
int32 fields of batch x max_chunks x 896 elements), never by activations.
"""

from __future__ import annotations

import argparse
import math
import time

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks._timing import (  # noqa: E402
    interleaved_median_seconds,
    median_seconds,
    print_table,
    write_json,
)
from configs import (  # noqa: E402
    common,
    dctdiff_afhq512,
    dctdiff_celeba64,
    dctdiff_cifar10,
    dctdiff_ffhq256,
    quickstart,
)
from dctjax import families
from dctjax.autoregressive import sampling as ar_sampling
from dctjax.codec import sparse
from dctjax.data import sources
from dctjax.sampling import WorkdirSampler  # noqa: E402
from dctjax.train import loop, sharding  # noqa: E402

SAMPLERS = ("dpm_solver", "dpm_solver_pp", "ddim", "euler_ode", "euler_maruyama")
NFES = (10, 20, 50)


def models(full: bool) -> list[tuple[str, object]]:
    out = [("quickstart", quickstart.get_config())]
    settings = [("cifar10", dctdiff_cifar10, "S"), ("celeba64", dctdiff_celeba64, "S")]
    if full:
        settings += [
            ("ffhq256", dctdiff_ffhq256, "S"),
            ("ffhq256", dctdiff_ffhq256, "M"),
            ("afhq512", dctdiff_afhq512, "M"),
        ]
    for name, module, size in settings:
        c = module.get_config()
        c.model_kwargs.size = size
        out.append((f"{name} U-ViT-{size}", c))
    return out


def sampler_for(config, mesh) -> WorkdirSampler:
    model = families.build(config)
    params = jax.jit(model.init_fn, out_shardings=sharding.replicated(mesh))(jax.random.key(0))
    return WorkdirSampler(model, mesh, params=params)


# ---- DCTransformer (the autoregressive family) ------------------------------------------------

WALK_BIAS = 50.0  # logit step per rank / position: the walk takes the lowest allowed one


def dct_config(resolution: int, block_size: int, size: str, chunk: tuple[int, int] | None = None):
    """The lsun column's codec and slice (896 + 128 slots; `chunk` = (chunk_size, overlap)
    overrides it) at `resolution` with `block_size`, model `size`, on synthetic images."""
    c = common.dctransformer_config(name=f"dct_sampling_{resolution}", dataset="synthetic",
                                    column="lsun")  # fmt: skip
    c.dataset.update(name="synthetic", data_dir=None, num_examples=None)
    c.resolution = resolution
    c.representation_kwargs.update(block_size=block_size, max_length=None)
    if chunk is not None:
        c.representation_kwargs.update(chunk_size=chunk[0], overlap=chunk[1])
    c.model_kwargs.size = size
    return c


def walk_state(model, params, stop_at_once: bool = False):
    """`params` with the channel head's bias lowered by WALK_BIAS per rank of the sequence order
    and the position head's by WALK_BIAS per position: each sample takes the lowest allowed
    channel, then position (see the module docstring). `stop_at_once`: STOP first (warm-up)."""
    rep = model.representation
    net = model.module(jax.tree.map(lambda x: x, params))  # new Variables: `params` stays as is
    rank = jnp.asarray(ar_sampling.channel_rank(rep.block_size, rep.order), jnp.float32)
    bias = net.channel_head.bias[...] - WALK_BIAS * rank
    if stop_at_once:
        bias = bias.at[-1].set(1e4)
    net.channel_head.bias.set_value(bias)
    g = math.prod(rep.grid_shape)
    pos = net.position_head.bias
    pos.set_value(pos[...] - WALK_BIAS * jnp.arange(g, dtype=jnp.float32))
    return nnx.state(net)


def short_walk_channels(rep, elements: int) -> tuple[np.ndarray, int]:
    """forbid_channels keeping the first m chroma channels of the order (G / 4 even-even
    positions each), m the fewest giving >= `elements` elements; and K = m G / 4 + 1, the
    elements a sample then takes (STOP included)."""
    b2 = rep.block_size**2
    g = math.prod(rep.grid_shape)
    per = g // 4  # chroma: even-even cells only
    m = max(1, -(-elements // per))
    rank = ar_sampling.channel_rank(rep.block_size, rep.order)[: 3 * b2]
    chroma = [c for c in np.argsort(rank) if c >= b2][:m]
    forbid = np.ones(3 * b2, bool)
    forbid[chroma] = False
    return forbid, m * per + 1


def image_length(rep, num: int = 32) -> float:
    """Median sequence length (STOP included) of the codec's sequences of synthetic images."""
    src = sources.make_source("synthetic", "train", resolution=rep.resolution, num_examples=num)
    lengths = [int(rep.host_encode(np.asarray(src[i]["image"])).length) for i in range(num)]
    return float(np.median(lengths))


def compile_sampler(model, state, batch: int, **options):
    """`sample_sequences` jitted over (weights, indices, forbid_channels) and compiled for `batch`
    samples: forbid_channels is an argument, so one executable serves every channel set."""
    rep = model.representation

    def run(state, indices, forbid):
        return ar_sampling.sample_sequences(
            model.module(state), rep, jax.random.key(0), indices, forbid_channels=forbid,
            **options,
        )  # fmt: skip

    t0 = time.perf_counter()
    args = (state, jnp.arange(batch, dtype=jnp.int32), jnp.zeros(3 * rep.block_size**2, bool))
    compiled = jax.jit(run).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _num_params(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def dct_point(
    res: int,
    b: int,
    size: str,
    batch: int,
    repeats: int,
    max_chunks: list[int],
    short_elements: int = 16,
    chunk: tuple[int, int] | None = None,
) -> tuple[list[dict], list[dict]]:
    """The speed rows (cached over a chunk, cached and uncached over K elements) and the memory
    rows (the cached sampler at each of `max_chunks`) of one resolution / block size; see the
    module docstring. Executables are shared where the (cached, max_chunks) pair repeats."""
    c = dct_config(res, b, size, chunk)
    model = families.build(c)
    rep = model.representation
    params = jax.jit(model.init_fn)(jax.random.key(0))
    state, warm = walk_state(model, params), walk_state(model, params, stop_at_once=True)
    executables = {}

    def executable(cached: bool, chunks: int):
        if (cached, chunks) not in executables:
            executables[cached, chunks] = compile_sampler(
                model, state, batch, cached=cached, max_chunks=chunks
            )
        return executables[cached, chunks]

    gh, gw = rep.grid_shape
    common_fields = dict(
        model=f"dctransformer-{size}", resolution=res, block_size=b, grid=f"{gh}x{gw}",
        slots=rep.overlap + rep.chunk_size, batch=batch,
    )  # fmt: skip
    none = np.zeros(3 * b * b, bool)
    forbid, k = short_walk_channels(rep, short_elements)
    runs = {
        "cached, chunk": (True, none, rep.chunk_size),
        "cached, short": (True, forbid, k),
        "uncached, short": (False, forbid, k),
    }
    indices = jnp.arange(batch, dtype=jnp.int32)
    fns, got = {}, {}
    for name, (cached, channels, _) in runs.items():
        compiled, _ = executable(cached, 1)
        jax.block_until_ready(compiled(warm, indices, channels))  # warm-up: one step (STOP)

        def fn(compiled=compiled, channels=channels, name=name, got=got):
            got[name] = np.asarray(compiled(state, indices, channels).length)  # blocks

        fns[name] = fn
    seconds = interleaved_median_seconds(fns, repeats=repeats, warmup=0)
    lengths = {}
    for name, (_, _, expect) in runs.items():  # the elements of the timed runs
        if not (got[name] == expect).all():
            raise RuntimeError(f"{name}: lengths {got[name].tolist()}, the walk expects {expect}.")
        lengths[name] = int(got[name].sum())
    l_img = image_length(rep)
    base = lengths["uncached, short"] / seconds["uncached, short"]
    speed = []
    for name, (cached, _, per_sample) in runs.items():
        dt, n = seconds[name], lengths[name]
        speed.append(
            dict(
                **common_fields, params=_num_params(params), sampler=name, cached=cached,
                elements_per_sample=per_sample, elements=n, seconds=dt, elements_per_s=n / dt,
                ms_per_element=1e3 * dt / n, ms_per_step=1e3 * dt / per_sample,
                image_length=l_img, images_per_s=n / dt / l_img, speedup=n / dt / base,
                compile_s=executable(cached, 1)[1],
            )
        )  # fmt: skip
        print(speed[-1], flush=True)

    memory, first = [], None
    for m in max_chunks:
        compiled, compile_s = executable(True, m)
        mem = loop.memory_report(compiled)
        length = m * rep.chunk_size
        row = dict(
            **common_fields, max_seq_len=sparse.max_sequence_length(rep.grid_shape, b),
            max_chunks=m, buffer_length=length, seq_buffer_bytes=batch * length * 3 * 4,
            argument_bytes=mem["argument_size_in_bytes"],
            output_bytes=mem["output_size_in_bytes"], temp_bytes=mem["temp_size_in_bytes"],
            compile_s=compile_s,
        )  # fmt: skip
        first = first or row
        row["temp_ratio"] = row["temp_bytes"] / first["temp_bytes"]
        row["temp_delta_bytes"] = row["temp_bytes"] - first["temp_bytes"]
        row["buffer_delta_bytes"] = row["seq_buffer_bytes"] - first["seq_buffer_bytes"]
        delta = row["buffer_delta_bytes"]
        row["temp_delta_per_buffer_delta"] = row["temp_delta_bytes"] / delta if delta else None
        memory.append(row)
        print(row, flush=True)
    return speed, memory


def _mib(rows: list[dict]) -> list[dict]:
    """Rows for the printed table: byte counts in MiB."""
    return [
        {**r, **{k.removesuffix("_bytes") + "_mib": v / 2**20 for k, v in r.items()
                 if k.endswith("_bytes") and v is not None}}
        for r in rows
    ]  # fmt: skip


def parse_points(text: str) -> list[tuple[int, int]]:
    """'32/8,64/8' -> [(32, 8), (64, 8)]: resolution / block size (or chunk_size / overlap)."""
    return [tuple(int(v) for v in item.split("/")) for item in text.split(",")]


DCT_SPEED_PRINTED = [
    "model", "resolution", "block_size", "grid", "slots", "batch", "sampler",
    "elements_per_sample", "elements", "seconds", "elements_per_s", "ms_per_element",
    "ms_per_step", "image_length", "images_per_s", "speedup",
]  # fmt: skip
DCT_MEMORY_PRINTED = [
    "model", "resolution", "block_size", "grid", "max_seq_len", "batch", "max_chunks",
    "buffer_length", "seq_buffer_mib", "argument_mib", "output_mib", "temp_mib", "temp_ratio",
    "temp_delta_mib", "buffer_delta_mib", "temp_delta_per_buffer_delta",
]  # fmt: skip


def dct_main(args) -> dict:
    chunk = parse_points(args.dct_chunk)[0] if args.dct_chunk else None
    max_chunks = [int(v) for v in args.dct_max_chunks.split(",")]
    speed, memory = [], []
    for res, b in parse_points(args.dct_points):
        s, m = dct_point(
            res, b, args.dct_size, args.dct_batch, args.repeats, max_chunks,
            args.dct_uncached_elements, chunk,
        )  # fmt: skip
        speed += s
        memory += m
    print()
    print("DCTransformer sampling: cached vs uncached, per element (1 step = 1 element a sample)")
    print_table(speed, DCT_SPEED_PRINTED)
    print()
    print("DCTransformer sampling: XLA memory of the cached sampler vs max_chunks")
    print_table(_mib(memory), DCT_MEMORY_PRINTED)
    return {"dctransformer": speed, "dctransformer_memory": memory}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--full", action="store_true", help="also FFHQ-256 (S, M) and AFHQ-512 (M)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--nfes", default=",".join(map(str, NFES)))
    p.add_argument(
        "--models", default=None, help="comma list of name prefixes, e.g. quickstart,cifar10"
    )
    p.add_argument("--dctransformer", action="store_true", help="only the DCTransformer rows")
    p.add_argument("--dct_size", default="S", help="DCTransformer model size")
    p.add_argument("--dct_points", default="32/8,64/8", help="resolution/block_size, comma list")
    p.add_argument("--dct_batch", type=int, default=4)
    p.add_argument("--dct_max_chunks", default="2,8,32", help="memory rows: max_chunks values")
    p.add_argument("--dct_uncached_elements", type=int, default=16)
    p.add_argument(
        "--dct_chunk", default=None, help="chunk_size/overlap (default the paper's 896/128)"
    )
    args = p.parse_args(argv)
    jax.config.update("jax_threefry_partitionable", True)
    device = jax.devices()[0]
    info = {"device": device.device_kind, "platform": device.platform}
    if args.dctransformer:
        print(f"{jax.device_count()} x {device.device_kind} ({device.platform})")
        write_json(args.json, {**info, **dct_main(args)})
        return
    mesh = sharding.make_mesh()
    rows = []
    for name, config in models(args.full):
        if args.models and not any(name.startswith(m) for m in args.models.split(",")):
            continue
        s = sampler_for(config, mesh)
        for sampler in args.samplers.split(","):
            for nfe in (int(v) for v in args.nfes.split(",")):
                key = jax.random.key(0)

                def run(s=s, sampler=sampler, nfe=nfe, key=key):
                    return s.sample(
                        key, args.batch, sampler=sampler, nfe=nfe, batch_size=args.batch
                    )

                dt = median_seconds(run, repeats=args.repeats, warmup=1)
                rows.append(
                    dict(
                        model=name,
                        tokens=s.model.representation.shape[0]
                        if config.representation != "pixels"
                        else None,
                        sampler=sampler,
                        nfe=nfe,
                        batch=args.batch,
                        seconds=dt,
                        images_per_s=args.batch / dt,
                        ms_per_nfe_image=1e3 * dt / (nfe * args.batch),
                    )
                )
                print(rows[-1], flush=True)
    print()
    print(f"{jax.device_count()} x {device.device_kind} ({device.platform})")
    print_table(
        rows,
        [
            "model",
            "tokens",
            "sampler",
            "nfe",
            "batch",
            "seconds",
            "images_per_s",
            "ms_per_nfe_image",
        ],
    )
    write_json(args.json, {**info, "rows": rows})


if __name__ == "__main__":
    main()

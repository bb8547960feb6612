"""Train-step cost of U-ViT on the paper's DCT and pixel settings, and of JiT (+ Spectral Forcing).

    python benchmarks/train_step.py [--json=train_step.json] [--quick] [--time_all]
    python benchmarks/train_step.py --settings=jit_b16_256,jit_b32_256 --sizes=B --time_all

For each setting (CIFAR-10, CelebA-64, FFHQ-128, FFHQ-256, AFHQ-512) and each representation
(DCTdiff tokens, pixel U-ViT with the reference's patch size), with U-ViT S and M: the forward
GFLOPs per image and the train-step GFLOPs per image from XLA's cost analysis (compiled, not run),
compared with the paper's training-cost table (11 GFLOPs for S at 256 tokens, 133 for M at 1024).
The step is timed (median, images/s) where it is cheap enough for this machine (batch 8; all of
them with --time_all); on a GPU or TPU the FLOPs utilisation is printed too: XLA's train-step
FLOPs per second over the devices' dense bf16 peak (`PEAK_BF16_TFLOPS`, or --peak_tflops).

JiT rows (the flow family, `jit_b16_256` / `jit_b32_256`: JiT-B/16 and B/32 at 256 px, with SF)
also give the Spectral Forcing operator's cost as a share of the step: its FLOPs from XLA's cost
analysis (`sf_flops_share`) and, when timed, its time (`sf_time_share`, the jitted operator on the
same batch, timed alone, over the step). The SF paper reports about 0.5% of the compute.

The issue's GPU goal (U-ViT M, bf16, >= 45%) is, on one GPU:

    python benchmarks/train_step.py --settings=ffhq256 --sizes=M --variants=dct \
        --dtype=bfloat16 --batch=64 --time_all

DCTransformer rows (the autoregressive family; one example = one decoder slice of
T = overlap + chunk_size slots and the dense DCT image of the chunks before it):

    python benchmarks/train_step.py --settings=dct_quickstart,dct_s_1024   # timed on a CPU
    python benchmarks/train_step.py --settings=dct_lsun,dct_ffhq            # compile-only on a CPU
    python benchmarks/train_step.py --settings=dct_lsun --time_all --dtype=bfloat16   # a GPU

`dct_quickstart` is configs/dctransformer_quickstart.py (32 px, B=4, 96 + 32 slots, size S);
`dct_s_1024` is size S on the paper's slice (896 targets + 128 overlap) and the lsun codec (B=8,
quality 75, clip 1200) at 64 px; `dct_<column>` is a column of [003] Table 3 (the paper's model,
codec and resolution; --sizes overrides the model size). Timed steps run on real batches: synthetic
images through the representation's `training_example` (encoding, length filtering, chunk draw),
stacked per field. Reported: GFLOPs per chunk (XLA's train-step FLOPs / batch), the loss-bearing
target slots per chunk of that batch (`tokens_per_chunk`: sum(loss_mask) / batch, at most
chunk_size), tokens/s (those slots per second; `tokens_per_s_bound` counts batch * chunk_size),
MFU where the device's peak is known, and XLA's temp / argument memory of the step.

--memory_check=<column> compiles the loop's step (`train_and_evaluate(compile_only=True)`, both the
plain and the logging variant) at the per-device batch of the paper (Table 3 batch over 64 TPU
cores, --memory_batch) for several resolutions of that column (--memory_points, `R` or `R/B`),
and reports XLA's argument / temp memory next to the sequence's maximum length L_max
(`sparse.max_sequence_length`), the encoder's token count and the encoder-image input's size. The
batch holds one slice, not the sequence, so memory follows the chunk and the DCT grid, never L:
`R/2B` at 2R keeps the grid and grows L_max 4x; `2R` at the same B grows both the grid and L_max.

    python benchmarks/train_step.py --memory_check=lsun --memory_points=384,768/16,768
"""

from __future__ import annotations

import argparse
import importlib
import math
import tempfile
import time

from dctjax.host_memory import keep_freed_host_memory  # noqa: E402

keep_freed_host_memory()  # as launch/train.py does, before JAX allocates

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks._timing import median_seconds, print_table, write_json  # noqa: E402
from configs import (  # noqa: E402
    common,
    dctdiff_afhq512,
    dctdiff_celeba64,
    dctdiff_cifar10,
    dctdiff_ffhq128,
    dctdiff_ffhq256,
    dctransformer_quickstart,
    jit_b16_imagenet256,
    jit_b32_imagenet256,
)
from dctjax.codec import sparse, spectral  # noqa: E402
from dctjax.data import sources  # noqa: E402
from dctjax.families import flow  # noqa: E402
from dctjax.models.dctransformer import resolve_dctransformer_size  # noqa: E402
from dctjax.train import loop, sharding  # noqa: E402
from dctjax.train import state as state_lib  # noqa: E402

SETTINGS = {
    "cifar10": dctdiff_cifar10,
    "celeba64": dctdiff_celeba64,
    "ffhq128": dctdiff_ffhq128,
    "ffhq256": dctdiff_ffhq256,
    "afhq512": dctdiff_afhq512,
}
JIT_SETTINGS = {"jit_b16_256": jit_b16_imagenet256, "jit_b32_256": jit_b32_imagenet256}
DCT_COLUMNS = tuple(common.DCTRANSFORMER_TABLE3)  # [003] Table 3: lsun, ffhq, imagenet, ...
DCT_SETTINGS = ("dct_quickstart", "dct_s_1024", *(f"dct_{c}" for c in DCT_COLUMNS))
DCT_CHEAP = ("dct_quickstart", "dct_s_1024")  # timed by default (a CPU manages them)
PAPER_CORES = 64  # [003] trains on 64 TPU cores: the per-device batch is Table 3's over 64
PAPER_GFLOPS = {("S", 256): 11.0, ("M", 1024): 133.0}  # forward, [000] training-cost table
# Dense bf16 peak per device (vendor figures), matched against jax's device_kind.
PEAK_BF16_TFLOPS = {
    "h100": 989.0,
    "h200": 989.0,
    "a100": 312.0,
    "l4": 121.0,
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v5": 459.0,
    "tpu v6 lite": 918.0,
    "tpu v6e": 918.0,
}


def peak_tflops(device_kind: str) -> float | None:
    """The dense bf16 peak of one device of this kind, or None when unknown (e.g. CPU)."""
    kind = device_kind.lower()
    for name, tflops in PEAK_BF16_TFLOPS.items():
        if name in kind:
            return tflops
    return None


def _cost(compiled) -> float:
    cost = compiled.cost_analysis() or {}
    return float(cost.get("flops", 0.0))


def measure(name: str, c, batch: int, timed: bool, dtype: str, peak: float | None = None):
    """One row: forward and train-step GFLOPs per image, and (when timed) the step's time."""
    c.batch_size = batch
    c.dtype = dtype
    model, training = loop.build(c)
    mesh = sharding.make_mesh()
    abstract = state_lib.abstract_train_state(
        model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
    )
    bsh = sharding.batch_sharding(mesh)
    res = c.resolution
    spec = model.family.batch_spec(c, model)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((batch, *shape), dt, sharding=bsh)
        for k, (shape, dt) in spec.items()
    }
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
    compiled = step.lower(abstract, abstract_batch).compile()
    train_gflops = _cost(compiled) / batch / 1e9

    def forward(params, x, t):
        return nnx.merge(model.graphdef, params)(x, t)

    x = jax.ShapeDtypeStruct((batch, *model.representation.shape), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    fwd = jax.jit(forward).lower(abstract.params, x, t).compile()
    fwd_gflops = _cost(fwd) / batch / 1e9
    tokens = int(np.prod(model.representation.shape[:-1]))
    if c.representation == "pixels":
        tokens = (res // c.model_kwargs.patch_size) ** 2
    size = c.model_kwargs.size
    row = dict(
        setting=name,
        representation=c.representation,
        model=f"{c.model}-{size}",
        size=size,
        tokens=tokens,
        fwd_gflops_per_image=fwd_gflops,
        paper_gflops=PAPER_GFLOPS.get((size, tokens)),
        train_gflops_per_image=train_gflops,
        step_s=None,
        images_per_s=None,
        mfu=None,
    )
    sf = flow.spectral_forcing_kwargs(c) if c.get("family") == "flow" else None
    sf_fn = None
    if sf is not None:  # the operator alone, on the step's batch
        sf_fn = jax.jit(lambda z, t: spectral.spectral_forcing(z, t, **sf))
        z = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32, sharding=bsh)
        sf_fn = sf_fn.lower(z, jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=bsh)).compile()
        row["sf_flops_share"] = _cost(sf_fn) / batch / 1e9 / train_gflops
    if timed:
        st = state_lib.create_train_state(
            model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
        )
        rng = np.random.default_rng(0)
        batch_arrays = {
            "image": jax.device_put(rng.integers(0, 256, (batch, res, res, 3), np.uint8), bsh),
            "label": jax.device_put(np.zeros((batch,), np.int32), bsh),
        }
        batch_arrays = {k: batch_arrays[k] for k in spec}
        holder = [st]

        def run():
            holder[0], m = compiled(holder[0], batch_arrays)
            jax.block_until_ready(m)

        dt = median_seconds(run, repeats=5, warmup=2)
        row.update(step_s=dt, images_per_s=batch / dt)
        peak = peak or peak_tflops(jax.devices()[0].device_kind)
        if peak and jax.default_backend() != "cpu":
            row["mfu"] = train_gflops * batch / dt / (peak * 1e3 * jax.device_count())
        if sf_fn is not None:
            z = jax.device_put(rng.normal(size=(batch, res, res, 3)).astype(np.float32), bsh)
            t = jax.device_put(rng.uniform(size=(batch,)).astype(np.float32), bsh)
            sf_s = median_seconds(lambda: jax.block_until_ready(sf_fn(z, t)), repeats=9, warmup=2)
            row["sf_time_share"] = sf_s / dt
    return row


# ---- DCTransformer (the autoregressive family) ------------------------------------------------


def dct_config(name: str, size: str | None = None) -> ml_collections.ConfigDict:
    """The config of a `DCT_SETTINGS` row, on synthetic images; `size` overrides the model size."""
    if name == "dct_quickstart":
        c = dctransformer_quickstart.get_config()
    elif name == "dct_s_1024":  # size S on the paper's 896 + 128 slots, lsun's codec at 64 px
        c = common.dctransformer_config(name=name, dataset="synthetic", column="lsun")
        c.resolution = 64
        c.model_kwargs.size = "S"
    elif name.removeprefix("dct_") in DCT_COLUMNS:
        column = name.removeprefix("dct_")
        c = importlib.import_module(f"configs.dctransformer_{column}").get_config()
    else:
        raise ValueError(f"unknown DCTransformer setting {name!r}; choose from {DCT_SETTINGS}.")
    c.dataset.update(name="synthetic", data_dir=None, num_examples=None)
    if size:
        c.model_kwargs.size = size
    return c


def dct_batch(model, c: ml_collections.ConfigDict, batch: int, seed: int = 0) -> dict:
    """`batch` real training examples (decoder slices) of synthetic images, stacked per field.

    Each image goes through the representation's `training_example` (encoding, length filtering,
    the chunk draw); images that the filtering drops are skipped."""
    rep = model.representation
    spec = model.family.batch_spec(c, model)
    num = max(8 * batch, 64)
    src = sources.make_source("synthetic", "train", resolution=c.resolution, num_examples=num)
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(num):
        item = src[i]
        ex = rep.training_example(np.asarray(item["image"]), rng)
        if ex is not None:
            examples.append({**ex, "label": item["label"]})
        if len(examples) == batch:
            break
    if len(examples) < batch:
        raise RuntimeError(f"length filtering kept {len(examples)} of {num} images < {batch}.")
    return {
        k: np.stack([np.asarray(e[k], dtype=dt) for e in examples]) for k, (_, dt) in spec.items()
    }


def _num_params(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def measure_dct(
    name: str,
    c: ml_collections.ConfigDict,
    batch: int,
    timed: bool,
    dtype: str,
    peak: float | None = None,
) -> dict:
    """One DCTransformer row: train-step GFLOPs per chunk, XLA memory, and (when timed, on a real
    batch) the step's time, chunks/s and target tokens/s."""
    c.batch_size = batch
    c.dtype = dtype
    model, training = loop.build(c)
    rep = model.representation
    mesh = sharding.make_mesh()
    abstract = state_lib.abstract_train_state(
        model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
    )
    bsh = sharding.batch_sharding(mesh)
    spec = model.family.batch_spec(c, model)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((batch, *shape), dt, sharding=bsh)
        for k, (shape, dt) in spec.items()
    }
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(abstract, abstract_batch).compile()
    compile_s = time.perf_counter() - t0
    gflops = _cost(compiled) / batch / 1e9
    mem = loop.memory_report(compiled)
    gh, gw = rep.grid_shape
    row = dict(
        setting=name,
        family="autoregressive",
        representation=c.representation,
        model=f"{c.model}-{c.model_kwargs.size}",
        size=c.model_kwargs.size,
        resolution=rep.resolution,
        block_size=rep.block_size,
        grid=f"{gh}x{gw}",
        max_seq_len=sparse.max_sequence_length(rep.grid_shape, rep.block_size),
        slots=rep.overlap + rep.chunk_size,
        chunk_size=rep.chunk_size,
        params=_num_params(abstract.params),
        gflops_per_chunk=gflops,
        gflops_per_token=gflops / rep.chunk_size,  # per target slot of a full chunk
        compile_s=compile_s,
        temp_bytes=mem["temp_size_in_bytes"],
        argument_bytes=mem["argument_size_in_bytes"],
        tokens_per_chunk=None,
        step_s=None,
        chunks_per_s=None,
        tokens_per_s=None,
        tokens_per_s_bound=None,
        mfu=None,
    )
    if timed:
        st = state_lib.create_train_state(
            model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
        )
        host = dct_batch(model, c, batch)
        tokens = int(host["loss_mask"].sum())  # the loss-bearing target slots of this batch
        arrays = {k: jax.device_put(v, bsh) for k, v in host.items()}
        holder = [st]

        def run():
            holder[0], m = compiled(holder[0], arrays)
            jax.block_until_ready(m)

        dt = median_seconds(run, repeats=5, warmup=2)
        row.update(
            tokens_per_chunk=tokens / batch,
            step_s=dt,
            chunks_per_s=batch / dt,
            tokens_per_s=tokens / dt,
            tokens_per_s_bound=batch * rep.chunk_size / dt,
        )
        peak = peak or peak_tflops(jax.devices()[0].device_kind)
        if peak and jax.default_backend() != "cpu":
            row["mfu"] = gflops * batch / dt / (peak * 1e3 * jax.device_count())
    return row


def parse_memory_points(text: str, block_size: int) -> list[tuple[int, int]]:
    """'384,768/16' -> [(384, block_size), (768, 16)]: resolutions, each with an optional B."""
    points = []
    for item in text.split(","):
        res, _, b = item.strip().partition("/")
        points.append((int(res), int(b) if b else block_size))
    return points


def default_memory_points(column: str) -> list[tuple[int, int]]:
    """The column's (R, B), (2R, 2B) (the same grid, L_max x4) and (2R, B) (grid and L_max x4)."""
    t = common.DCTRANSFORMER_TABLE3[column]
    r, b = t["resolution"], t["block_size"]
    return [(r, b), *([(2 * r, 2 * b)] if 2 * b <= 32 else []), (2 * r, b)]


def loop_step_report(c: ml_collections.ConfigDict, via_loop: bool = True) -> dict:
    """The loop's compile-only report of `c`'s train step (FLOPs and XLA memory, per device).

    `via_loop`: `train_and_evaluate(compile_only=True)` itself (it also compiles the logging
    step); otherwise the same jitted step (shardings, donation, mesh) compiled once here, without
    the logging variant (`log_step_temp_size_in_bytes` None): half the compile time, for tests."""
    if via_loop:
        with tempfile.TemporaryDirectory() as workdir:
            return loop.train_and_evaluate(c, workdir, compile_only=True)
    model, training = loop.build(c)
    mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp)
    with jax.set_mesh(mesh):
        abstract = state_lib.abstract_train_state(
            model.init_fn, training.tx, c.seed, mesh, c.mesh.param_strategy,
            num_emas=len(training.ema_decays),
        )  # fmt: skip
        state_sh = sharding.tree_shardings(abstract)
        batch_sh = sharding.batch_sharding(mesh)
        step = jax.jit(
            loop.make_train_step(training),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, sharding.replicated(mesh)),
            donate_argnums=0,
        )
        abstract_batch = {
            k: jax.ShapeDtypeStruct((c.batch_size, *shape), dt, sharding=batch_sh)
            for k, (shape, dt) in model.family.batch_spec(c, model).items()
        }
        compiled = step.lower(abstract, abstract_batch).compile()
    flops = _cost(compiled)
    return dict(
        flops_per_step=flops,
        gflops_per_image=flops / c.batch_size / 1e9,
        **loop.memory_report(compiled),
        log_step_temp_size_in_bytes=None,
    )


def memory_check(
    column: str,
    points: list[tuple[int, int]],
    batch: int,
    *,
    size: str | None = None,
    remat: bool | None = None,
    chunk: tuple[int, int] | None = None,
    dtype: str = "float32",
    via_loop: bool = True,
) -> list[dict]:
    """XLA memory of the loop's compiled step (`loop_step_report`) for a Table 3 column at several
    (resolution, block size) points, against the sequence's maximum length L_max.

    `batch` is global; byte counts are per device (batch / device count examples each). Ratios
    (`*_ratio`) are to the first point. `chunk` = (chunk_size, overlap) overrides the slice
    (tests), `size` the model size, `remat` the model's rematerialisation."""
    rows = []
    per_device = max(batch // jax.device_count(), 1)
    for res, b in points:
        c = dct_config(f"dct_{column}", size)
        c.resolution = res
        c.representation_kwargs.update(block_size=b, max_length=None)
        if chunk is not None:
            c.representation_kwargs.update(chunk_size=chunk[0], overlap=chunk[1])
        if remat is not None:
            c.model_kwargs.remat = remat
        c.batch_size = batch
        c.dtype = dtype
        model, training = loop.build(c)
        rep = model.representation
        abstract = jax.eval_shape(model.init_fn, jax.random.key(0))
        t0 = time.perf_counter()
        report = loop_step_report(c, via_loop)
        gh, gw = rep.grid_shape
        slots = rep.overlap + rep.chunk_size
        kwargs = c.model_kwargs
        stride = resolve_dctransformer_size(kwargs.size, downsample=kwargs.get("downsample"))
        stride = stride["downsample"][1]
        rows.append(
            dict(
                column=column,
                model=f"{c.model}-{c.model_kwargs.size}",
                resolution=res,
                block_size=b,
                grid=f"{gh}x{gw}",
                max_seq_len=sparse.max_sequence_length(rep.grid_shape, b),
                slots=slots,
                encoder_tokens=-(-gh // stride) * -(-gw // stride),
                batch=batch,
                per_device_batch=per_device,
                remat=bool(c.model_kwargs.get("remat")),
                params=_num_params(abstract),
                encoder_image_bytes=per_device * gh * gw * 3 * b * b * 4,  # the int32 input
                position_logits_bytes=per_device * slots * gh * gw * 4,  # f32 (N, T, G_h G_w)
                argument_bytes=report["argument_size_in_bytes"],
                output_bytes=report["output_size_in_bytes"],
                temp_bytes=report["temp_size_in_bytes"],
                log_step_temp_bytes=report["log_step_temp_size_in_bytes"],
                gflops_per_chunk=report["gflops_per_image"],
                compile_s=time.perf_counter() - t0,
            )
        )
        print(rows[-1], flush=True)
    first = rows[0]
    for r in rows:
        for k in ("max_seq_len", "temp_bytes", "argument_bytes", "encoder_image_bytes"):
            r[f"{k.removesuffix('_bytes')}_ratio"] = r[k] / first[k] if first[k] else None
        for k in ("temp_bytes", "encoder_image_bytes"):  # growth next to the input's growth
            r[k.replace("_bytes", "_delta_bytes")] = r[k] - first[k]
    return rows


def _mib(rows: list[dict]) -> list[dict]:
    """Rows for the printed table: byte counts in MiB, parameters in millions."""
    out = []
    for r in rows:
        d = dict(r)
        for k, v in r.items():
            if k.endswith("_bytes"):
                d[k.removesuffix("_bytes") + "_mib"] = None if v is None else v / 2**20
        d["params_m"] = None if r.get("params") is None else r["params"] / 1e6
        out.append(d)
    return out


DCT_COLUMNS_PRINTED = [
    "setting", "model", "resolution", "block_size", "slots", "chunk_size", "params_m",
    "gflops_per_chunk", "tokens_per_chunk", "step_s", "chunks_per_s", "tokens_per_s",
    "tokens_per_s_bound", "mfu", "temp_mib", "argument_mib",
]  # fmt: skip
MEMORY_COLUMNS_PRINTED = [
    "column", "resolution", "block_size", "grid", "max_seq_len", "encoder_tokens",
    "per_device_batch", "params_m", "encoder_image_mib", "argument_mib", "temp_mib", "log_step_temp_mib",
    "max_seq_len_ratio", "temp_ratio", "argument_ratio", "temp_delta_mib",
    "encoder_image_delta_mib",
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="S only, CIFAR-10 and CelebA-64")
    p.add_argument("--time_all", action="store_true", help="also time the expensive settings")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--settings",
        default=None,
        help="comma-separated subset of " + ",".join([*SETTINGS, *JIT_SETTINGS, *DCT_SETTINGS]),
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated sizes (default U-ViT S,M; JiT B; DCT config's)",
    )
    p.add_argument("--variants", default="dct,pixel", help="dct, pixel or both")
    p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak for MFU")
    p.add_argument(
        "--memory_check", default=None, choices=DCT_COLUMNS, help="DCTransformer memory vs L"
    )
    p.add_argument(
        "--memory_points", default=None, help="R or R/B, comma-separated (default R, 2R/2B, 2R)"
    )
    p.add_argument(
        "--memory_batch", type=int, default=None, help="default: Table 3 batch / 64 TPU cores"
    )
    p.add_argument("--remat", action="store_true", help="DCTransformer: remat each stack")
    args = p.parse_args(argv)
    rows, memory_rows = [], []
    names = ["cifar10", "celeba64"] if args.quick else list(SETTINGS)
    names = args.settings.split(",") if args.settings else names
    if args.memory_check and not args.settings:
        names = []
    known = [*SETTINGS, *JIT_SETTINGS, *DCT_SETTINGS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {known}")
    variants = {"dct": "", "pixel": "pixel"}
    for name in names:
        if name in DCT_SETTINGS:  # DCTransformer: the config's size unless --sizes
            for size in args.sizes.split(",") if args.sizes else [None]:
                c = dct_config(name, size)
                c.model_kwargs.remat = args.remat
                timed = name in DCT_CHEAP or args.time_all
                rows.append(measure_dct(name, c, args.batch, timed, args.dtype, args.peak_tflops))
                print(rows[-1], flush=True)
            continue
        if name in JIT_SETTINGS:  # JiT sizes B, L, H, 700M; SF on (the configs' default)
            for size in args.sizes.split(",") if args.sizes else ["B"]:
                c = JIT_SETTINGS[name].get_config(f"size={size}")
                rows.append(
                    measure(name, c, args.batch, args.time_all, args.dtype, args.peak_tflops)
                )
                print(rows[-1], flush=True)
            continue
        for size in args.sizes.split(",") if args.sizes else (["S"] if args.quick else ["S", "M"]):
            for v in args.variants.split(","):
                cheap = name in ("cifar10", "celeba64") and size == "S"
                c = SETTINGS[name].get_config(variants[v])
                c.model_kwargs.size = size
                rows.append(
                    measure(
                        name, c, args.batch, cheap or args.time_all, args.dtype, args.peak_tflops
                    )
                )
                print(rows[-1], flush=True)
    if args.memory_check:
        column = args.memory_check
        table = common.DCTRANSFORMER_TABLE3[column]
        points = (
            parse_memory_points(args.memory_points, table["block_size"])
            if args.memory_points
            else default_memory_points(column)
        )
        batch = args.memory_batch or max(table["batch_size"] // PAPER_CORES, 1)
        size = args.sizes.split(",")[0] if args.sizes else None
        memory_rows = memory_check(
            column, points, batch, size=size, remat=args.remat, dtype=args.dtype
        )
    dct_rows = [r for r in rows if r.get("family") == "autoregressive"]
    other_rows = [r for r in rows if r.get("family") != "autoregressive"]
    if other_rows:
        print()
        print_table(
            other_rows,
            ["setting", "representation", "model", "tokens", "fwd_gflops_per_image",
             "paper_gflops", "train_gflops_per_image", "step_s", "images_per_s", "mfu",
             "sf_flops_share", "sf_time_share"],
        )  # fmt: skip
    if dct_rows:
        print()
        print_table(_mib(dct_rows), DCT_COLUMNS_PRINTED)
    if memory_rows:
        print()
        print_table(_mib(memory_rows), MEMORY_COLUMNS_PRINTED)
    payload = dict(
        machine=dict(
            backend=jax.default_backend(),
            device=jax.devices()[0].device_kind,
            devices=jax.device_count(),
            jax=jax.__version__,
        ),
        batch=args.batch,
        dtype=args.dtype,
        rows=rows,
    )
    if memory_rows:
        payload["memory_check"] = memory_rows
    write_json(args.json, payload)


if __name__ == "__main__":
    main()

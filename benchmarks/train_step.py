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
"""

from __future__ import annotations

import argparse

from dctjax.host_memory import keep_freed_host_memory  # noqa: E402

keep_freed_host_memory()  # as launch/train.py does, before JAX allocates

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks._timing import median_seconds, print_table, write_json  # noqa: E402
from configs import (  # noqa: E402
    dctdiff_afhq512,
    dctdiff_celeba64,
    dctdiff_cifar10,
    dctdiff_ffhq128,
    dctdiff_ffhq256,
    jit_b16_imagenet256,
    jit_b32_imagenet256,
)
from dctjax.codec import spectral  # noqa: E402
from dctjax.families import flow  # noqa: E402
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="S only, CIFAR-10 and CelebA-64")
    p.add_argument("--time_all", action="store_true", help="also time the expensive settings")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--settings", default=None, help="comma-separated subset of " + ",".join(SETTINGS)
    )
    p.add_argument("--sizes", default=None, help="comma-separated sizes (default U-ViT S,M; JiT B)")
    p.add_argument("--variants", default="dct,pixel", help="dct, pixel or both")
    p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak for MFU")
    args = p.parse_args()
    rows = []
    names = ["cifar10", "celeba64"] if args.quick else list(SETTINGS)
    names = args.settings.split(",") if args.settings else names
    unknown = sorted(set(names) - set(SETTINGS) - set(JIT_SETTINGS))
    if unknown:
        p.error(
            f"unknown settings {unknown}; choose from {sorted(SETTINGS) + sorted(JIT_SETTINGS)}"
        )
    variants = {"dct": "", "pixel": "pixel"}
    for name in names:
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
    print()
    print_table(
        rows,
        ["setting", "representation", "model", "tokens", "fwd_gflops_per_image", "paper_gflops",
         "train_gflops_per_image", "step_s", "images_per_s", "mfu", "sf_flops_share",
         "sf_time_share"],
    )  # fmt: skip
    write_json(
        args.json,
        dict(
            machine=dict(
                backend=jax.default_backend(),
                device=jax.devices()[0].device_kind,
                devices=jax.device_count(),
                jax=jax.__version__,
            ),
            batch=args.batch,
            dtype=args.dtype,
            rows=rows,
        ),
    )


if __name__ == "__main__":
    main()

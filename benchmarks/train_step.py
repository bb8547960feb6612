"""Train-step cost of U-ViT on the paper's DCT and pixel settings.

    python benchmarks/train_step.py [--json=train_step.json] [--quick] [--time_all]

For each setting (CIFAR-10, CelebA-64, FFHQ-128, FFHQ-256, AFHQ-512) and each representation
(DCTdiff tokens, pixel U-ViT with the reference's patch size), with U-ViT S and M: the forward
GFLOPs per image and the train-step GFLOPs per image from XLA's cost analysis (compiled, not run),
compared with the paper's training-cost table (11 GFLOPs for S at 256 tokens, 133 for M at 1024).
The step is timed (median, images/s) where it is cheap enough for this machine (batch 8; all of
them with --time_all); on a GPU or TPU the FLOPs utilisation is printed too: XLA's train-step
FLOPs per second over the devices' dense bf16 peak (`PEAK_BF16_TFLOPS`, or --peak_tflops).

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
)
from dctjax.train import loop, sharding  # noqa: E402
from dctjax.train import state as state_lib  # noqa: E402

SETTINGS = {
    "cifar10": dctdiff_cifar10,
    "celeba64": dctdiff_celeba64,
    "ffhq128": dctdiff_ffhq128,
    "ffhq256": dctdiff_ffhq256,
    "afhq512": dctdiff_afhq512,
}
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


def measure(
    name: str,
    module,
    variant: str,
    size: str,
    batch: int,
    timed: bool,
    dtype: str,
    peak: float | None = None,
):
    c = module.get_config(variant)
    c.model_kwargs.size = size
    c.batch_size = batch
    c.dtype = dtype
    model, training = loop.build(c)
    mesh = sharding.make_mesh()
    abstract = state_lib.abstract_train_state(
        model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
    )
    bsh = sharding.batch_sharding(mesh)
    res = c.resolution
    images = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.uint8, sharding=bsh)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=bsh)
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
    compiled = step.lower(abstract, {"image": images, "label": labels}).compile()
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
    row = dict(
        setting=name,
        representation=c.representation,
        size=size,
        tokens=tokens,
        fwd_gflops_per_image=fwd_gflops,
        paper_gflops=PAPER_GFLOPS.get((size, tokens)),
        train_gflops_per_image=train_gflops,
        step_s=None,
        images_per_s=None,
        mfu=None,
    )
    if timed:
        st = state_lib.create_train_state(
            model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
        )
        rng = np.random.default_rng(0)
        batch_arrays = {
            "image": jax.device_put(rng.integers(0, 256, (batch, res, res, 3), np.uint8), bsh),
            "label": jax.device_put(np.zeros((batch,), np.int32), bsh),
        }
        holder = [st]

        def run():
            holder[0], m = compiled(holder[0], batch_arrays)
            jax.block_until_ready(m)

        dt = median_seconds(run, repeats=5, warmup=2)
        row.update(step_s=dt, images_per_s=batch / dt)
        peak = peak or peak_tflops(jax.devices()[0].device_kind)
        if peak and jax.default_backend() != "cpu":
            row["mfu"] = train_gflops * batch / dt / (peak * 1e3 * jax.device_count())
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
    p.add_argument("--sizes", default=None, help="comma-separated U-ViT sizes (default S,M)")
    p.add_argument("--variants", default="dct,pixel", help="dct, pixel or both")
    p.add_argument("--peak_tflops", type=float, default=None, help="per-device peak for MFU")
    args = p.parse_args()
    rows = []
    names = ["cifar10", "celeba64"] if args.quick else list(SETTINGS)
    sizes = ["S"] if args.quick else ["S", "M"]
    names = args.settings.split(",") if args.settings else names
    sizes = args.sizes.split(",") if args.sizes else sizes
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
    variants = {"dct": "", "pixel": "pixel"}
    for name in names:
        for size in sizes:
            for v in args.variants.split(","):
                cheap = name in ("cifar10", "celeba64") and size == "S"
                rows.append(
                    measure(
                        name, SETTINGS[name], variants[v], size, args.batch,
                        timed=cheap or args.time_all, dtype=args.dtype, peak=args.peak_tflops,
                    )
                )  # fmt: skip
                print(rows[-1], flush=True)
    print()
    print_table(
        rows,
        ["setting", "representation", "size", "tokens", "fwd_gflops_per_image", "paper_gflops",
         "train_gflops_per_image", "step_s", "images_per_s", "mfu"],
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

"""Train-step cost of U-ViT on the paper's DCT and pixel settings.

    python benchmarks/train_step.py [--json=train_step.json] [--quick] [--time_all]

For each setting (CIFAR-10, CelebA-64, FFHQ-128, FFHQ-256, AFHQ-512) and each representation
(DCTdiff tokens, pixel U-ViT with the reference's patch size), with U-ViT S and M: the forward
GFLOPs per image and the train-step GFLOPs per image from XLA's cost analysis (compiled, not run),
compared with the paper's training-cost table (11 GFLOPs for S at 256 tokens, 133 for M at 1024).
The step is timed (median, images/s) where it is cheap enough for this machine (batch 8; all of
them with --time_all); on a GPU the model FLOPs utilisation is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
from dctjax.train import diffusion_loop, sharding  # noqa: E402
from dctjax.train import state as state_lib  # noqa: E402

SETTINGS = {
    "cifar10": dctdiff_cifar10,
    "celeba64": dctdiff_celeba64,
    "ffhq128": dctdiff_ffhq128,
    "ffhq256": dctdiff_ffhq256,
    "afhq512": dctdiff_afhq512,
}
PAPER_GFLOPS = {("S", 256): 11.0, ("M", 1024): 133.0}  # forward, [000] training-cost table
PEAK_TFLOPS = {"gpu": None, "tpu": None}  # set from the device kind when known
H100_BF16_TFLOPS = 989.0


def _cost(compiled) -> float:
    cost = compiled.cost_analysis() or {}
    return float(cost.get("flops", 0.0))


def measure(name: str, module, variant: str, size: str, batch: int, timed: bool, dtype: str):
    c = module.get_config(variant)
    c.model_kwargs.size = size
    c.batch_size = batch
    c.dtype = dtype
    setup = diffusion_loop.build(c)
    mesh = sharding.make_mesh()
    abstract = state_lib.abstract_train_state(setup.init_fn, setup.tx, 0, mesh)
    bsh = sharding.batch_sharding(mesh)
    res = c.resolution
    images = jax.ShapeDtypeStruct((batch, res, res, 3), jnp.uint8, sharding=bsh)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=bsh)
    step = jax.jit(diffusion_loop.make_train_step(setup, c), donate_argnums=0)
    compiled = step.lower(abstract, {"image": images, "label": labels}).compile()
    train_gflops = _cost(compiled) / batch / 1e9

    def forward(params, x, t):
        return nnx.merge(setup.graphdef, params)(x, t)

    x = jax.ShapeDtypeStruct((batch, *setup.representation.shape), jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.float32)
    fwd = jax.jit(forward).lower(abstract.params, x, t).compile()
    fwd_gflops = _cost(fwd) / batch / 1e9
    tokens = int(np.prod(setup.representation.shape[:-1]))
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
        st = state_lib.create_train_state(setup.init_fn, setup.tx, 0, mesh)
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
        kind = jax.devices()[0].device_kind.lower()
        if "h100" in kind or "h200" in kind:
            row["mfu"] = train_gflops * batch / dt / (H100_BF16_TFLOPS * 1e3)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="S only, CIFAR-10 and CelebA-64")
    p.add_argument("--time_all", action="store_true", help="also time the expensive settings")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    rows = []
    names = ["cifar10", "celeba64"] if args.quick else list(SETTINGS)
    sizes = ["S"] if args.quick else ["S", "M"]
    for name in names:
        for size in sizes:
            for variant in ("", "pixel"):
                cheap = name in ("cifar10", "celeba64") and size == "S"
                rows.append(
                    measure(
                        name, SETTINGS[name], variant, size, args.batch,
                        timed=cheap or args.time_all, dtype=args.dtype,
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

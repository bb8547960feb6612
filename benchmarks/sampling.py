"""Sampling throughput: images/s of every VP sampler at NFE 10, 20 and 50.

    python benchmarks/sampling.py [--json=sampling.json] [--full] [--batch=16] [--repeats=3]

Models (random weights; the cost does not depend on them): the quickstart DiT, and U-ViT S at the
paper's CIFAR-10 (64 DCT tokens) and CelebA-64 settings; `--full` adds U-ViT S and M at FFHQ-256 and
AFHQ-512, which are slow on a CPU. Each row times `WorkdirSampler.sample` (one compiled loop per
batch, decode included, images fetched to the host) after a warm-up call: median of `--repeats`.
The network dominates, so images/s x NFE should be roughly constant across samplers; the column
`ms_per_nfe_image` makes the per-step overhead of each solver visible.
"""

from __future__ import annotations

import argparse

import jax  # noqa: E402

from benchmarks._timing import median_seconds, print_table, write_json  # noqa: E402
from configs import (  # noqa: E402
    dctdiff_afhq512,
    dctdiff_celeba64,
    dctdiff_cifar10,
    dctdiff_ffhq256,
    quickstart,
)
from dctjax import families
from dctjax.sampling import WorkdirSampler  # noqa: E402
from dctjax.train import sharding  # noqa: E402

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


def main() -> None:
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
    args = p.parse_args()
    jax.config.update("jax_threefry_partitionable", True)
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
    device = jax.devices()[0]
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
    write_json(args.json, {"device": device.device_kind, "platform": device.platform, "rows": rows})


if __name__ == "__main__":
    main()

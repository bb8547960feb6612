"""dctjax's JiT train step (flow family) against a PyTorch step of the same JiT, side by side.

    pip install "torch==2.13.0+cpu"      # the CPU build; the script exits with a note without it
    python benchmarks/torch_jit_step.py [--json=torch_jit_step.json] [--settings=b32_256,s_64]
        [--batch=8] [--repeats=7] [--sf=1]

Settings: `b32_256` is JiT-B/32 at 256 px (configs/jit_b32_imagenet256.py, 64 patch tokens + 32
in-context tokens, 1000 classes); `b16_256` JiT-B/16 (256 tokens); `s_64` a small JiT-S/8 at 64 px
(64 tokens, 1000 classes), quick on a laptop. The PyTorch side is `benchmarks/torch_jit.py` (the transcription
of the reference the parity tests compare against), with the reference's training step: logit-normal
t, z = t x + (1 - t) eps, x-prediction with the v-loss (t_eps 0.05), label dropout 0.1, backward,
AdamW (0.9, 0.95, no weight decay) and the two EMA updates (0.9999, 0.9996). Spectral Forcing
(`--sf=1`, the default) runs on both sides in matrix form (the reference's), float32 throughout, in
eager mode as the reference runs. Each side runs in a process of its own and the two take turns
step by step (see benchmarks/torch_step.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from benchmarks._timing import malloc_label, worker_keeps_host_memory

KEEPS_HOST_MEMORY = worker_keeps_host_memory(sys.argv)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import interleaved_median_seconds, print_table, write_json  # noqa: E402
from benchmarks.torch_step import Worker, serve_steps  # noqa: E402
from configs import jit_b16_imagenet256, jit_b32_imagenet256  # noqa: E402
from dctjax.train import loop, sharding  # noqa: E402
from dctjax.train import state as state_lib  # noqa: E402

# name -> (config module, variant)
SETTINGS = {
    "b32_256": (jit_b32_imagenet256, ""),
    "b16_256": (jit_b16_imagenet256, ""),
    "s_64": (jit_b32_imagenet256, "size=S,patch=8,resolution=64"),
    "t_32": (jit_b32_imagenet256, "size=T,patch=8,resolution=32"),  # for the tests
}


def jit_config(name: str, batch: int, sf: bool):
    module, variant = SETTINGS[name]
    c = module.get_config(",".join(filter(None, [variant, "sf" if sf else "nosf"])))
    c.batch_size = batch
    return c


def jax_step(c):
    """(a blocking closure running one dctjax train step, the model's shape facts)."""
    model, training = loop.build(c)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    st = state_lib.create_train_state(
        model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
    )
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
    res, batch = c.resolution, c.batch_size
    rng = np.random.default_rng(0)
    batch_arrays = {
        "image": jax.device_put(rng.integers(0, 256, (batch, res, res, 3), np.uint8)),
        "label": jax.device_put(rng.integers(0, c.dataset.num_classes, (batch,), np.int32)),
    }
    holder = [st]

    def run():
        holder[0], m = step(holder[0], batch_arrays)
        jax.block_until_ready(m)

    net = model.module(st.params)
    facts = dict(
        resolution=res, patch=net.patch_size, embed_dim=net.embed_dim, depth=net.depth,
        heads=net.num_heads, bottleneck=net.bottleneck, in_context_start=net.in_context_start,
        num_classes=net.num_classes, params=int(sum(x.size for x in jax.tree.leaves(st.params))),
    )  # fmt: skip
    return run, facts


def torch_step(torch, f: dict, batch: int, sf: bool):
    """A blocking closure running one reference-style PyTorch JiT train step."""
    from benchmarks import torch_jit

    torch.manual_seed(0)
    model = torch_jit.JiT(
        input_size=(f["resolution"], f["resolution"]), patch_size=f["patch"],
        hidden_size=f["embed_dim"], depth=f["depth"], num_heads=f["heads"],
        num_classes=f["num_classes"], bottleneck_dim=f["bottleneck"],
        in_context_start=f["in_context_start"], sf={} if sf else None,
        sf_fn=torch_jit.torch_sf_filter,
    )  # fmt: skip
    params = list(model.parameters())
    emas = [[p.detach().clone() for p in params] for _ in (0.9999, 0.9996)]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    res = f["resolution"]
    x = torch.rand(batch, 3, res, res) * 2 - 1
    y = torch.randint(0, f["num_classes"], (batch,))

    def step():
        t = torch.sigmoid(torch.randn(batch) * 0.8 - 0.8)
        e = torch.randn_like(x)
        tb = t.view(-1, 1, 1, 1)
        z = tb * x + (1 - tb) * e
        drop = torch.rand(batch) < 0.1
        labels = torch.where(drop, torch.full_like(y, f["num_classes"]), y)
        x_hat = model(z, t, labels)
        d = (1 - tb).clamp_min(0.05)
        loss = (((x - z) / d - (x_hat - z) / d) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for ema, decay in zip(emas, (0.9999, 0.9996), strict=True):
                for e_, p in zip(ema, params, strict=True):
                    e_.mul_(decay).add_(p, alpha=1 - decay)
        return loss.item()

    step.params = sum(p.numel() for p in params)
    return step


def serve(args: argparse.Namespace) -> None:
    sf = bool(int(args.sf))
    if args.serve == "jax":
        run, facts = jax_step(jit_config(args.settings, int(args.batch), sf))
        facts["version"] = jax.__version__
    else:
        import json

        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        facts = json.loads(args.facts)
        run = torch_step(torch, facts, int(args.batch), sf)
        facts.update(version=torch.__version__, params=run.params)
    facts["keeps_host_memory"] = KEEPS_HOST_MEMORY
    serve_steps(run, facts)


def main() -> None:
    import json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--settings", default="b32_256,s_64")
    p.add_argument("--batch", default="8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sf", default="1", help="1: Spectral Forcing on both sides, 0: vanilla JiT")
    p.add_argument("--serve", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--facts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    if importlib.util.find_spec("torch") is None:
        print('PyTorch is not installed: pip install "torch==2.13.0+cpu" to run this comparison.')
        return
    rows, versions = [], {}
    for name in args.settings.split(","):
        for batch in args.batch.split(","):
            common = (f"--settings={name}", f"--batch={batch}", f"--sf={args.sf}")
            jax_side = Worker("--serve=jax", *common, script=__file__)
            facts = {k: v for k, v in jax_side.info.items() if k not in ("version",)}
            torch_side = Worker(
                "--serve=torch", *common, f"--facts={json.dumps(facts)}", script=__file__
            )
            try:
                t = interleaved_median_seconds(
                    {"jax": jax_side.step, "torch": torch_side.step}, args.repeats, warmup=2
                )
            finally:
                jax_side.close()
                torch_side.close()
            versions = {"jax": jax_side.info["version"], "torch": torch_side.info["version"]}
            torch_malloc = malloc_label(torch_side.info)
            rows.append(
                dict(setting=name, params_m=facts["params"] / 1e6, batch=int(batch),
                     sf=bool(int(args.sf)), dctjax_step_s=t["jax"], torch_step_s=t["torch"],
                     speedup=t["torch"] / t["jax"])
            )  # fmt: skip
            print(rows[-1], flush=True)
    print(
        f"\n{os.cpu_count()} CPU cores, jax {versions.get('jax')}, torch {versions.get('torch')} "
        f"(torch malloc: {torch_malloc})"
    )
    print_table(
        rows,
        ["setting", "params_m", "batch", "sf", "dctjax_step_s", "torch_step_s", "speedup"],
    )
    write_json(args.json, {"rows": rows, "torch_malloc": torch_malloc, **versions})


if __name__ == "__main__":
    main()

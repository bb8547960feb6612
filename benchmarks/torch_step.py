"""dctjax's train step against a PyTorch step of the same U-ViT, side by side on this machine.

    pip install "torch==2.13.0+cpu"      # the CPU build; the script exits with a note without it
    python benchmarks/torch_step.py [--json=torch_step.json] [--batch=8,32] [--sizes=S]

The PyTorch side is written here from the DCTdiff reference's architecture (spec dctdiff §7:
linear token embedding, sinusoidal time token, learned position embedding, pre-LN blocks with exact
GELU and no qkv bias, long skips through Linear(2D -> D), LayerNorm, linear head; attention through
`scaled_dot_product_attention`), with the reference's training step: eps-prediction MSE with
per-feature weights, backward, AdamW (0.99, 0.99, wd 0.03), EMA update. It runs in eager mode, as
the reference does (no torch.compile). Both sides use float32, the same batch and token shapes, and
all CPU cores; each row is the median of `--repeats` steps after warm-up, the two sides taking
turns step by step so that both see the same machine load. Both run with glibc's default malloc
settings (the process is shared, so `launch/train.py`'s `keep_freed_host_memory` is left out).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import interleaved_median_seconds, print_table, write_json  # noqa: E402
from configs import dctdiff_cifar10, dctdiff_ffhq128  # noqa: E402
from dctjax.models.uvit import UVIT_SIZES  # noqa: E402
from dctjax.train import diffusion_loop, sharding  # noqa: E402
from dctjax.train import state as state_lib  # noqa: E402

SETTINGS = {"cifar10": dctdiff_cifar10, "ffhq128": dctdiff_ffhq128}


def torch_uvit(torch, tokens: int, features: int, dim: int, depth: int, heads: int):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, skip: bool):
            super().__init__()
            self.skip = nn.Linear(2 * dim, dim) if skip else None
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.proj = nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x, skip=None):
            if self.skip is not None:
                x = self.skip(torch.cat([x, skip], -1))
            b, n, _ = x.shape
            q, k, v = (
                self.qkv(self.norm1(x)).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            )
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(a.transpose(1, 2).reshape(b, n, dim))
            return x + self.mlp(self.norm2(x))

    class UViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(features, dim)
            self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
            self.ins = nn.ModuleList([Block(False) for _ in range(depth // 2)])
            self.mid = Block(False)
            self.outs = nn.ModuleList([Block(True) for _ in range(depth // 2)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, features)

        def forward(self, x, t):
            half = dim // 2
            freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
            args = (999 * t)[:, None] * freqs[None]
            time = torch.cat([torch.cos(args), torch.sin(args)], -1)[:, None]
            x = torch.cat([time, self.embed(x)], 1) + self.pos
            skips = []
            for blk in self.ins:
                x = blk(x)
                skips.append(x)
            x = self.mid(x)
            for blk in self.outs:
                x = blk(x, skips.pop())
            return self.head(self.norm(x))[:, 1:]

    return UViT()


def torch_step(torch, tokens, features, dim, depth, heads, batch):
    """A blocking closure running one reference-style PyTorch train step."""
    torch.manual_seed(0)
    model = torch_uvit(torch, tokens, features, dim, depth, heads)
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.99, 0.99), weight_decay=0.03)
    weights = torch.rand(features) + 0.5
    x0 = torch.randn(batch, tokens, features)

    def step():
        t = torch.rand(batch)
        eps = torch.randn_like(x0)
        alpha = torch.exp(-0.25 * (19.9 * t**2) - 0.5 * 0.1 * t)[:, None, None]
        xt = alpha * x0 + torch.sqrt(1 - alpha**2) * eps
        loss = ((model(xt, t) - eps) ** 2 * weights).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters(), strict=True):
                e.mul_(0.9999).add_(p, alpha=1e-4)
        return loss.item()

    return step


def jax_step(module, size: str, batch: int):
    """(a blocking closure running one dctjax train step, the (tokens, features) shape)."""
    c = module.get_config()
    c.model_kwargs.size = size
    c.batch_size = batch
    setup = diffusion_loop.build(c, check_batch=False)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    st = state_lib.create_train_state(setup.init_fn, setup.tx, 0, mesh)
    step = jax.jit(diffusion_loop.make_train_step(setup, c), donate_argnums=0)
    res = c.resolution
    rng = np.random.default_rng(0)
    batch_arrays = {
        "image": jax.device_put(rng.integers(0, 256, (batch, res, res, 3), np.uint8)),
        "label": jax.device_put(np.zeros((batch,), np.int32)),
    }
    holder = [st]

    def run():
        holder[0], m = step(holder[0], batch_arrays)
        jax.block_until_ready(m)

    return run, setup.representation.shape


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--settings", default="cifar10")
    p.add_argument("--sizes", default="S")
    p.add_argument("--batch", default="8,32")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print('PyTorch is not installed: pip install "torch==2.13.0+cpu" to run this comparison.')
        return
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for name in args.settings.split(","):
        for size in args.sizes.split(","):
            dim, depth, heads = UVIT_SIZES[size]
            for batch in (int(b) for b in args.batch.split(",")):
                run_jax, (tokens, features) = jax_step(SETTINGS[name], size, batch)
                run_torch = torch_step(torch, tokens, features, dim, depth, heads, batch)
                t = interleaved_median_seconds(
                    {"jax": run_jax, "torch": run_torch}, args.repeats, warmup=2
                )
                jax_s, torch_s = t["jax"], t["torch"]
                rows.append(
                    dict(setting=name, size=size, tokens=tokens, features=features, batch=batch,
                         dctjax_step_s=jax_s, torch_step_s=torch_s, speedup=torch_s / jax_s)
                )  # fmt: skip
                print(rows[-1], flush=True)
    print(f"\n{os.cpu_count()} CPU cores, jax {jax.__version__}, torch {torch.__version__}")
    print_table(
        rows,
        [
            "setting",
            "size",
            "tokens",
            "features",
            "batch",
            "dctjax_step_s",
            "torch_step_s",
            "speedup",
        ],
    )
    write_json(args.json, {"rows": rows, "torch": torch.__version__, "jax": jax.__version__})


if __name__ == "__main__":
    main()

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
turns step by step so that both see the same machine load.

Each side runs in a process of its own (this script again, with `--serve=jax|torch`), which steps
when the parent asks over a pipe and otherwise sleeps. So neither side's thread pools nor
allocator state touch the other's, and each gets the process set-up its users get: the dctjax
side calls `keep_freed_host_memory()` first, as `launch/train.py` does, and PyTorch keeps glibc's
default malloc settings (DCTJAX_BENCH_TORCH_KEEP_HOST_MEMORY=1 gives it dctjax's settings too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys

from benchmarks._timing import worker_keeps_host_memory  # noqa: E402

# before JAX or torch allocate (see benchmarks/_timing.py)
KEEPS_HOST_MEMORY = worker_keeps_host_memory(sys.argv)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import (  # noqa: E402
    interleaved_median_seconds,
    malloc_label,
    print_table,
    write_json,
)
from configs import dctdiff_cifar10, dctdiff_ffhq128  # noqa: E402
from dctjax.models.uvit import UVIT_SIZES  # noqa: E402
from dctjax.train import loop, sharding  # noqa: E402
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
    model, training = loop.build(c)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    st = state_lib.create_train_state(model.init_fn, training.tx, 0, mesh)
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
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

    return run, model.representation.shape


def serve(args: argparse.Namespace) -> None:
    """Worker mode: builds one side's step, reports its shape on stdout, then runs one step per
    line read from stdin and answers each with a line, until stdin closes."""
    if args.serve == "jax":
        run, (tokens, features) = jax_step(SETTINGS[args.settings], args.sizes, int(args.batch))
        version = jax.__version__
    else:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        tokens, features = args.tokens, args.features
        dim, depth, heads = UVIT_SIZES[args.sizes]
        run = torch_step(torch, tokens, features, dim, depth, heads, int(args.batch))
        version = torch.__version__
    info = dict(
        tokens=tokens, features=features, version=version, keeps_host_memory=KEEPS_HOST_MEMORY
    )
    serve_steps(run, info)


def serve_steps(run, info: dict) -> None:
    """The worker's protocol: `info` as one JSON line, then one `run()` and a 'done' line for each
    line read from stdin, until stdin closes."""
    reply, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the pipe
    reply.write(json.dumps(info) + "\n")
    reply.flush()
    for _ in sys.stdin:
        run()
        reply.write("done\n")
        reply.flush()


class Worker:
    """One side's step in a process of its own: `step()` blocks until the worker has run one.

    The worker is `script` (default: this file) run with `argv`; it answers as `serve` does."""

    def __init__(self, *argv: str, script: str = __file__):
        cmd = [sys.executable, os.path.abspath(script), *argv]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self._answer())

    def _answer(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.proc.args[2:]} exited ({self.proc.wait()})")
        return line

    def step(self) -> None:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--settings", default="cifar10")
    p.add_argument("--sizes", default="S")
    p.add_argument("--batch", default="8,32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--serve", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--features", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    if importlib.util.find_spec("torch") is None:
        print('PyTorch is not installed: pip install "torch==2.13.0+cpu" to run this comparison.')
        return
    rows = []
    for name in args.settings.split(","):
        for size in args.sizes.split(","):
            for batch in args.batch.split(","):
                common = (f"--settings={name}", f"--sizes={size}", f"--batch={batch}")
                jax_side = Worker("--serve=jax", *common)
                tokens, features = jax_side.info["tokens"], jax_side.info["features"]
                torch_side = Worker(
                    "--serve=torch", *common, f"--tokens={tokens}", f"--features={features}"
                )
                try:
                    t = interleaved_median_seconds(
                        {"jax": jax_side.step, "torch": torch_side.step}, args.repeats, warmup=2
                    )
                finally:
                    jax_side.close()
                    torch_side.close()
                jax_s, torch_s = t["jax"], t["torch"]
                rows.append(
                    dict(setting=name, size=size, tokens=tokens, features=features,
                         batch=int(batch), dctjax_step_s=jax_s, torch_step_s=torch_s,
                         speedup=torch_s / jax_s)
                )  # fmt: skip
                print(rows[-1], flush=True)
    versions = {"jax": jax_side.info["version"], "torch": torch_side.info["version"]}
    torch_malloc = malloc_label(torch_side.info)
    print(
        f"\n{os.cpu_count()} CPU cores, jax {versions['jax']}, torch {versions['torch']} "
        f"(torch malloc: {torch_malloc})"
    )
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
    write_json(args.json, {"rows": rows, "torch_malloc": torch_malloc, **versions})


if __name__ == "__main__":
    main()

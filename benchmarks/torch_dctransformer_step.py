"""dctjax's DCTransformer train step (autoregressive family) against a PyTorch step, side by side.

    pip install "torch==2.13.0+cpu"      # the CPU build; the script exits with a note without it
    python benchmarks/torch_dctransformer_step.py [--json=out.json] [--settings=quickstart,s_1024]
        [--batch=16] [--repeats=5] [--parts=1] [--torch_threads=N] [--cpus=0,1]

Settings (each a config of the autoregressive family; the model is the 'S' size: hidden 256,
4 heads of 64, encoder / channel / position PAR specs [(1, 2)] x 2, value [(1, 2)] x 3, a
(2, 1) DCT-image conv):
  quickstart  configs/dctransformer_quickstart.py as is: 32 px synthetic images, block 4 (8x8
              luma grid, 64 encoder tokens), chunks of 96 targets + 32 overlap = 128 slots,
              batch 16.
  s_1024      the same 'S' model with the paper's slice, 896 targets + 128 overlap = 1024 slots:
              128 px synthetic images, block 8 (16x16 luma grid, 256 encoder tokens), clip 255, no
              length filtering. Those sequences hold 1,050-2,600 elements (median ~1,640), so a
              drawn chunk fills all 896 target slots except when it is the last one. Batch 8.
  t           'T' (hidden 64, 2 heads) at 32 px, block 4, 24 + 8 slots, batch 2: for the tests.

Both sides train on the same batch: `SparseDCT.training_example` (sequence-length filtering and
chunk selection as in training) on the first images of the 'synthetic' source, built once by
this process and read by both workers, from the same initial parameters (the dctjax worker writes
its initial state, the torch worker loads it), so both first-step losses are printed and agree. The dctjax side is `loop.build(config)` +
`loop.make_train_step` (one device, jit, donated state; Adam with warm-up + cosine LR and global
norm clip 1.0 via optax, plus the loss metrics and an EMA copy with decay 0 that the loop's step
computes). The PyTorch side is `benchmarks/torch_dctransformer.py` (the transcription the parity
tests compare against) with a hand-written step: forward, the summed three CE over the masked
slots / number of target slots, backward, `clip_grad_norm_(1.0)`, `torch.optim.Adam(0.9, 0.999,
eps 1e-8)`, a warm-up + cosine `LambdaLR`; float32, eager (no torch.compile), all CPU cores
(`--torch_threads` to change), attention through `scaled_dot_product_attention` with a boolean
mask. Each side runs in a process of its own and the two take turns step by step (see
benchmarks/torch_step.py); `--cpus` pins both workers to the given cores. Each row records the
1-minute load average: on a shared machine, other processes' load skews PyTorch's OpenMP threads
far more than XLA's pool (a 2-thread torch step several times slower), so compare rows measured
on an otherwise idle machine.

Latest figures: README, "DCTransformer against PyTorch" (2 cores, AVX-512: level to slightly
ahead at the quickstart's 128 slots, median 1.03x; 1.04-1.27x at 1,024 slots). Ratios move by up to ~10% from run to run on
a shared VM, so the README quotes several runs.

`--parts=1` also times, on both sides, the loss forward alone, forward + backward (no optimiser)
and one decoder self-attention (forward + backward of softmax(q k^T / 8 + mask) v at the setting's
(batch, heads, slots, 64) shape), to show where a difference comes from.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

from benchmarks._timing import malloc_label, worker_keeps_host_memory


def _pin_cpus(argv: list[str]) -> None:
    """A worker's `--cpus=0,1`: restrict this process to those cores before JAX / torch start
    their thread pools (both size them from the affinity mask)."""
    for a in argv:
        if a.startswith("--cpus=") and a != "--cpus=" and "--serve" in " ".join(argv):
            os.sched_setaffinity(0, {int(c) for c in a.split("=", 1)[1].split(",")})


_pin_cpus(sys.argv)
KEEPS_HOST_MEMORY = worker_keeps_host_memory(sys.argv)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import interleaved_median_seconds, print_table, write_json  # noqa: E402
from benchmarks.torch_step import Worker  # noqa: E402
from configs import dctransformer_quickstart  # noqa: E402

PARTS = ("step", "grad", "forward", "attention")

# name -> overrides of configs/dctransformer_quickstart.py ('t': LR warm-up of 2 steps, so that
# the tests' few steps move the parameters)
SETTINGS: dict[str, dict] = {
    "quickstart": {},
    "s_1024": dict(
        representation_kwargs=dict(
            block_size=8, clip=255, chunk_size=896, overlap=128, max_length=None
        ),
        resolution=128,
        batch_size=8,
    ),
    "t": dict(
        representation_kwargs=dict(chunk_size=24, overlap=8),
        model_kwargs=dict(size="T"),
        optim=dict(warmup_steps=2),
        batch_size=2,
    ),
}


def dct_config(name: str, batch: int | None = None):
    """The config of a setting (`SETTINGS`), batch overridden when given."""
    c = dctransformer_quickstart.get_config()
    for key, value in SETTINGS[name].items():
        if isinstance(value, dict):
            c[key].update(value)
        else:
            c[key] = value
    if batch:
        c.batch_size = int(batch)
    return c


def make_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """config.batch_size training examples (`SparseDCT.training_example`, the pipeline's host
    transform) of the first synthetic images at config.resolution, as stacked NumPy arrays."""
    from dctjax import representations
    from dctjax.data import sources

    rep = representations.from_config(config)
    n = int(config.batch_size)
    src = sources.make_source("synthetic", "train", resolution=config.resolution,
                              num_examples=max(64, 8 * n))  # fmt: skip
    rows, i = [], 0
    while len(rows) < n:
        item = src[i]
        ex = rep.training_example(np.asarray(item["image"]), (seed, i))
        i += 1
        if ex is not None:
            ex.pop("num_chunks")
            rows.append({**ex, "label": np.int32(item["label"])})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _architecture(config) -> dict:
    """The model's hyper-parameters, as the torch module takes them."""
    from dctjax.models.dctransformer import SPEC_NAMES, resolve_dctransformer_size

    rep = config.representation_kwargs
    mk = dict(config.model_kwargs)
    arch = resolve_dctransformer_size(
        mk.get("size"), **{k: mk.get(k) for k in ("hidden", "heads", "downsample", *SPEC_NAMES)}
    )
    g = config.resolution // rep.block_size
    return dict(
        block_size=rep.block_size, grid_shape=[g, g], clip=rep.clip,
        num_slots=rep.chunk_size + rep.overlap, hidden=arch["hidden"], heads=arch["heads"],
        **{k: [list(b) for b in arch[k]] for k in SPEC_NAMES}, downsample=list(arch["downsample"]),
        dropout=float(mk.get("dropout", 0.0)), input_scaling=mk.get("input_scaling", "log"),
        input_scale=float(mk.get("input_scale", 1024.0)),
        num_classes=int(config.dataset.num_classes or 0),
        value_pos_embedding=bool(mk.get("value_pos_embedding", False)),
        chunk_embeddings=int(mk.get("chunk_embeddings", 0)),
    )  # fmt: skip


def jax_parts(
    config, batch: dict[str, np.ndarray], params_file: str | None = None
) -> tuple[dict, dict]:
    """({part: blocking closure}, facts) for the dctjax side; the step returns its loss. Writes the
    initial parameters to `params_file` (flat '/'-joined NNX paths) when given."""
    import jax.numpy as jnp
    from flax import nnx

    from dctjax.models import dctransformer
    from dctjax.train import loop, sharding
    from dctjax.train import state as state_lib

    model, training = loop.build(config)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    st = state_lib.create_train_state(
        model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
    )
    if params_file:
        flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(st.params))[0]
        np.savez(params_file, **{_path_name(kp): np.asarray(x) for kp, x in flat})
    step = jax.jit(loop.make_train_step(training), donate_argnums=0)
    dev_batch = jax.device_put(batch)
    holder = [st]
    key = jax.random.key(1)

    def run_step():
        holder[0], m = step(holder[0], dev_batch)
        return float(m["loss"])

    loss_fn = jax.jit(lambda p, b: training.loss_fn(p, b, key)[0])
    grad_fn = jax.jit(jax.value_and_grad(lambda p, b: training.loss_fn(p, b, key)[0]))

    arch = _architecture(config)
    n, t, h = int(config.batch_size), arch["num_slots"], arch["heads"]
    rng = np.random.default_rng(0)
    q, k, v, ct = (jnp.asarray(rng.standard_normal((n, t, h, 64)), jnp.float32) for _ in range(4))
    key_valid = jnp.asarray(batch["input_mask"])

    def self_attention(q, k, v):  # the model's decoder self-attention (causal, PAD keys masked)
        if hasattr(dctransformer, "decoder_mask"):  # the first version: a dense mask argument
            return dctransformer.attention(q, k, v, dctransformer.decoder_mask(key_valid))
        return dctransformer.attention(q, k, v, key_valid, True)

    @jax.jit
    def attn_grad(q, k, v):
        return jax.vjp(self_attention, q, k, v)[1](ct)

    parts = {  # the state is donated by each step: read the current parameters at call time
        "step": run_step,
        "forward": lambda: jax.block_until_ready(loss_fn(holder[0].params, dev_batch)),
        "grad": lambda: jax.block_until_ready(grad_fn(holder[0].params, dev_batch)),
        "attention": lambda: jax.block_until_ready(attn_grad(q, k, v)),
    }
    o = training.lr_schedule
    facts = dict(
        arch=arch, params=int(sum(x.size for x in jax.tree.leaves(st.params))),
        lr=float(config.optim.lr), warmup_steps=int(config.optim.warmup_steps),
        decay_steps=int(config.total_steps), lr_at_10=float(o(10)),
    )  # fmt: skip
    return parts, facts


def _path_name(keypath) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keypath)


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    """'a/0/b' -> {'a': {0: {'b': ...}}} (digit keys are the NNX list indices)."""
    tree: dict = {}
    for name, x in flat.items():
        *heads, last = (int(k) if k.isdigit() else k for k in name.split("/"))
        node = tree
        for k in heads:
            node = node.setdefault(k, {})
        node[last] = x
    return tree


def torch_parts(
    torch, facts: dict, batch: dict[str, np.ndarray], params_file: str | None = None
) -> dict:
    """{part: blocking closure} for the PyTorch side (module `benchmarks.torch_dctransformer`),
    initialised from `params_file` (dctjax's initial parameters) when given; the step returns
    its loss."""
    import math

    from benchmarks import torch_dctransformer as ref

    torch.manual_seed(0)
    a = facts["arch"]
    model = ref.DCTransformer(
        **{**a, "grid_shape": tuple(a["grid_shape"]), "downsample": tuple(a["downsample"])}
    ).train()
    if params_file:
        ref.load_nnx_params(model, _unflatten(_load_batch(params_file)))
    params = list(model.parameters())
    lr, warm, total = facts["lr"], facts["warmup_steps"], facts["decay_steps"]

    def factor(s: int) -> float:
        if s < warm:
            return s / warm
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, total - warm) / (total - warm)))

    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    tb = {
        k: torch.from_numpy(v if v.dtype == bool else v.astype(np.int64)) for k, v in batch.items()
    }
    labels = tb["label"] if a["num_classes"] else None
    chunk = tb["chunk_index"] if a["chunk_embeddings"] else None
    fields = ("encoder_image", "input_channel", "input_position", "input_value", "input_mask",
              "target_channel", "target_position")  # fmt: skip

    def loss():
        return ref.chunk_loss(model(*(tb[k] for k in fields), labels, chunk), tb)

    def step():
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        return value.item()

    def forward():
        with torch.no_grad():
            return loss().item()

    def grad():
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        return value.item()

    n, t, h = tb["input_mask"].shape[0], a["num_slots"], a["heads"]
    q, k, v, ct = (torch.randn(n, h, t, 64) for _ in range(4))
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    mask = model.self_attention_mask(tb["input_mask"])

    def attention():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return torch.autograd.grad(out, (q, k, v), ct)

    parts = {"step": step, "forward": forward, "grad": grad, "attention": attention}
    parts["params"] = sum(p.numel() for p in params)
    parts["lr_at_10"] = factor(10) * lr
    return parts


def serve_parts(parts: dict, info: dict) -> None:
    """The worker's protocol: `info` as one JSON line, then for each line read from stdin (a part
    name; 'step' for `Worker.step`) one call of that part and a 'done LOSS' line ('done' for a
    part without a loss), until stdin closes."""
    reply, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the pipe
    reply.write(json.dumps(info) + "\n")
    reply.flush()
    for line in sys.stdin:
        out = parts[line.strip()]()
        reply.write(f"done {out!r}\n" if isinstance(out, float) else "done\n")
        reply.flush()


class PartsWorker(Worker):
    """A `Worker` that can also run the other parts (`PARTS`) by name."""

    def part(self, name: str) -> float | None:
        """Runs part `name`; its loss (step, grad, forward) or None."""
        self.proc.stdin.write(f"{name}\n")
        self.proc.stdin.flush()
        words = self._answer().split()
        return float(words[1]) if len(words) > 1 else None


def _load_batch(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def serve(args: argparse.Namespace) -> None:
    batch = _load_batch(args.batch_file)
    if args.serve == "jax":
        config = dct_config(args.settings, int(args.batch))
        parts, facts = jax_parts(config, batch, args.params_file)
        facts["version"] = jax.__version__
    else:
        import torch

        torch.set_num_threads(int(args.torch_threads) or len(os.sched_getaffinity(0)))
        facts = json.loads(args.facts)
        parts = torch_parts(torch, facts, batch, args.params_file)
        facts.update(
            version=torch.__version__, params=parts.pop("params"), lr_at_10=parts.pop("lr_at_10")
        )
    facts["keeps_host_memory"] = KEEPS_HOST_MEMORY
    serve_parts(parts, facts)


def start_workers(
    name: str, batch: int, batch_file: str, torch_threads: int = 0, cpus: str = ""
) -> tuple[PartsWorker, PartsWorker]:
    """The two sides of setting `name`, reading the batch from `batch_file` (an .npz); the torch
    side starts from the dctjax side's initial parameters (written next to it)."""
    params_file = os.path.splitext(batch_file)[0] + "_params.npz"
    common = (
        f"--settings={name}", f"--batch={batch}", f"--batch_file={batch_file}",
        f"--params_file={params_file}", f"--torch_threads={torch_threads}", f"--cpus={cpus}",
    )  # fmt: skip
    jax_side = PartsWorker("--serve=jax", *common, script=__file__)
    try:
        facts = {k: v for k, v in jax_side.info.items() if k != "version"}
        torch_side = PartsWorker(
            "--serve=torch", *common, f"--facts={json.dumps(facts)}", script=__file__
        )
    except BaseException:
        jax_side.close()
        raise
    return jax_side, torch_side


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--settings", default="quickstart,s_1024")
    p.add_argument("--batch", default=None, help="default: the setting's (16, 8, 2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parts", type=int, default=0, help="1: also forward / grad / attention")
    p.add_argument("--torch_threads", type=int, default=0, help="default: all allowed cores")
    p.add_argument("--cpus", default="", help="e.g. 1: pin both workers to these cores")
    p.add_argument("--serve", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--facts", help=argparse.SUPPRESS)
    p.add_argument("--batch_file", help=argparse.SUPPRESS)
    p.add_argument("--params_file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    if importlib.util.find_spec("torch") is None:
        print('PyTorch is not installed: pip install "torch==2.13.0+cpu" to run this comparison.')
        return
    rows, versions = [], {}
    parts = PARTS if args.parts else ("step",)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            c = dct_config(name, args.batch and int(args.batch))
            batch = make_batch(c)
            path = os.path.join(tmp, f"{name}.npz")
            np.savez(path, **batch)
            jax_side, torch_side = start_workers(
                name, c.batch_size, path, args.torch_threads, args.cpus
            )
            try:
                facts = jax_side.info
                if torch_side.info["params"] != facts["params"]:
                    raise RuntimeError(
                        f"{name}: torch has {torch_side.info['params']} parameters, "
                        f"dctjax {facts['params']}"
                    )
                if not np.isclose(torch_side.info["lr_at_10"], facts["lr_at_10"], rtol=1e-5):
                    raise RuntimeError(f"{name}: the two LR schedules differ at step 10")
                # the same initial parameters and batch: the first losses agree
                first = {"jax": jax_side.part("step"), "torch": torch_side.part("step")}
                print(
                    f"{name}: first-step loss dctjax {first['jax']:.6f}, torch {first['torch']:.6f}"
                )
                for part in parts:
                    t = interleaved_median_seconds(
                        {"jax": lambda p=part, w=jax_side: w.part(p),
                         "torch": lambda p=part, w=torch_side: w.part(p)},
                        args.repeats, warmup=2,
                    )  # fmt: skip
                    rows.append(
                        dict(setting=name, part=part, params_m=facts["params"] / 1e6,
                             batch=c.batch_size, slots=facts["arch"]["num_slots"],
                             targets=int(batch["loss_mask"].sum()), loss_0=first["jax"],
                             torch_loss_0=first["torch"], dctjax_s=t["jax"],
                             torch_s=t["torch"], torch_over_jax=t["torch"] / t["jax"],
                             load_1min=os.getloadavg()[0])
                    )  # fmt: skip
                    print(rows[-1], flush=True)
            finally:
                jax_side.close()
                torch_side.close()
            versions = {"jax": jax_side.info["version"], "torch": torch_side.info["version"]}
            torch_malloc = malloc_label(torch_side.info)
    cores = args.cpus or f"all {os.cpu_count()}"
    print(
        f"\nCPU cores: {cores}, jax {versions.get('jax')}, torch {versions.get('torch')} "
        f"(torch malloc: {torch_malloc})"
    )
    print_table(
        rows,
        ["setting", "part", "params_m", "batch", "slots", "targets", "loss_0", "torch_loss_0",
         "dctjax_s", "torch_s", "torch_over_jax", "load_1min"],
    )  # fmt: skip
    write_json(
        args.json,
        {
            "rows": rows,
            "cpus": args.cpus or "all",
            "torch_threads": args.torch_threads,
            "torch_malloc": torch_malloc,
            **versions,
        },
    )


if __name__ == "__main__":
    main()

"""The CPU kernel-gradient route (`layers.cpu_kernel_gradient`) against Eigen's, in whole train steps.

    python benchmarks/kernel_gradient.py [--settings=dct_quickstart,jit_b16_256] [--rounds=15]
        [--json=out.json]

For each setting this process compiles the same train step twice: 'eigen' with every kernel
gradient written as x2^T @ g2 (XLA's CPU backend hands that leading-dim contraction to Eigen), and
'routed' as dctjax runs it (with at least `CPU_KERNEL_GRAD_MIN_ROWS` rows, a transposed operand and
YNNPACK's row-major kernel). Both steps start from the same state and batch. They run in turns
(`_timing.interleaved_median_seconds`), not donated, so that machine-load drift hits both alike; the
table gives each median and their ratio. Effects of a few percent need ~15 rounds on a shared VM.

Settings (float32, one CPU device; rows = the flattened positions each Dense layer sees):
  dct_quickstart  configs/dctransformer_quickstart.py, batch 16 (2,048 decoder rows)
  dct_s_1024      the 'S' DCTransformer at 896 + 128 slots, batch 8 (8,192 rows)
  jit_b32_256     JiT-B/32 + SF at 256 px, batch 8 (768 rows: below the threshold, no change)
  jit_b16_256     JiT-B/16 + SF at 256 px, batch 8 (2,304 rows)
  uvit_cifar10    U-ViT-S DCTdiff CIFAR-10, batch 32
  dct_t           the 'T' DCTransformer at 24 + 8 slots, batch 2 (for the tests)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import numpy as np

from benchmarks._timing import interleaved_median_seconds, print_table, write_json
from dctjax.host_memory import keep_freed_host_memory
from dctjax.models import layers
from dctjax.train import loop, sharding
from dctjax.train import state as state_lib

SETTINGS = ("dct_quickstart", "dct_s_1024", "jit_b32_256", "jit_b16_256", "uvit_cifar10", "dct_t")


def setting_config_and_batch(name: str) -> tuple:
    """(config, host batch) of a setting."""
    if name.startswith("dct_"):
        from benchmarks import torch_dctransformer_step as dct

        c = dct.dct_config(name[len("dct_") :])
        return c, dct.make_batch(c)
    if name.startswith("jit_"):
        from benchmarks.torch_jit_step import jit_config

        c = jit_config(name[len("jit_") :], 8, True)
    elif name == "uvit_cifar10":
        from benchmarks.torch_step import SETTINGS as UVIT

        c = UVIT["cifar10"].get_config()
        c.model_kwargs.size, c.batch_size = "S", 32
    else:
        raise ValueError(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}.")
    rng = np.random.default_rng(0)
    n, res = int(c.batch_size), int(c.resolution)
    return c, {
        "image": rng.integers(0, 256, (n, res, res, 3), np.uint8),
        "label": np.zeros((n,), np.int32),
    }


def compiled_step(config, batch, min_rows: int) -> Callable[[], float]:
    """A blocking closure running the setting's train step compiled with the given threshold;
    it returns the step's loss."""
    saved = layers.CPU_KERNEL_GRAD_MIN_ROWS
    layers.CPU_KERNEL_GRAD_MIN_ROWS = min_rows  # read while tracing
    try:
        model, training = loop.build(config)
        mesh = sharding.make_mesh(devices=jax.devices()[:1])
        st = state_lib.create_train_state(
            model.init_fn, training.tx, 0, mesh, num_emas=len(training.ema_decays)
        )
        step = jax.jit(loop.make_train_step(training)).lower(st, batch).compile()
    finally:
        layers.CPU_KERNEL_GRAD_MIN_ROWS = saved
    return lambda: float(step(st, batch)[1]["loss"])


def measure(name: str, rounds: int) -> dict:
    """One table row: the medians of both routes over `rounds` alternating calls (after one
    warm-up call each)."""
    config, host_batch = setting_config_and_batch(name)
    batch = jax.device_put(host_batch)
    fns = {
        "routed": compiled_step(config, batch, layers.CPU_KERNEL_GRAD_MIN_ROWS),
        "eigen": compiled_step(config, batch, 2**62),
    }
    losses = {k: fn() for k, fn in fns.items()}  # warm-up; the same state and batch: same loss
    t = interleaved_median_seconds(fns, rounds, warmup=0)
    routed, eigen = t["routed"], t["eigen"]
    return dict(
        setting=name, batch=int(config.batch_size), rounds=rounds, loss_routed=losses["routed"],
        loss_eigen=losses["eigen"], routed_s=routed, eigen_s=eigen,
        routed_over_eigen=routed / eigen,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--settings", default="dct_quickstart,dct_s_1024,jit_b16_256,uvit_cifar10")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    keep_freed_host_memory()
    rows = []
    for name in names:
        rows.append(measure(name, args.rounds))
        print(rows[-1], flush=True)
    print(f"\njax {jax.__version__}, {jax.devices()[0].device_kind}, threshold "
          f"{layers.CPU_KERNEL_GRAD_MIN_ROWS} rows")  # fmt: skip
    print_table(
        rows,
        ["setting", "batch", "rounds", "loss_routed", "loss_eigen", "routed_s", "eigen_s",
         "routed_over_eigen"],
    )  # fmt: skip
    write_json(args.json, {"rows": rows, "jax": jax.__version__})


if __name__ == "__main__":
    main()

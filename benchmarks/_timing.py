"""Shared helpers for the benchmark scripts: medians of repeated timings and table/JSON output."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

from dctjax.host_memory import keep_freed_host_memory

TORCH_KEEPS_HOST_MEMORY = "DCTJAX_BENCH_TORCH_KEEP_HOST_MEMORY"


def worker_keeps_host_memory(argv: list[str]) -> bool:
    """The allocator set-up of a side-by-side worker, applied before JAX or torch allocate.

    The dctjax side (`--serve=jax`) keeps freed host memory, as `launch/train.py` does. The PyTorch
    side keeps glibc's defaults, as PyTorch users run it, unless DCTJAX_BENCH_TORCH_KEEP_HOST_MEMORY=1
    gives it the same settings (to check that a speed ratio is not only the allocator's).
    """
    if "--serve=jax" in argv or (
        "--serve=torch" in argv and os.environ.get(TORCH_KEEPS_HOST_MEMORY) == "1"
    ):
        return keep_freed_host_memory()
    return False


def malloc_label(worker_info: dict) -> str:
    """How a worker (its `info` with `keeps_host_memory`) set up malloc, for tables and JSON."""
    return "kept" if worker_info["keeps_host_memory"] else "glibc default"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` calls. `fn` must block."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_median_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each blocking `fn()`, timed in turns (a, b, a, b, ...).

    Taking turns exposes every contender to the same machine load, so ratios stay meaningful on
    a noisy or shared machine where back-to-back blocks of runs drift.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return "-" if v is None else str(v)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {path}")

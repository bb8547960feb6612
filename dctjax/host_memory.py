"""Host allocator settings for XLA's CPU runtime (Linux with glibc).

XLA's CPU runtime allocates all the temporaries of a compiled step as one block (377 MB for a
U-ViT-S train step at batch 8, 1.5 GB at batch 32). glibc serves a block that large with a fresh
`mmap` from a worker thread's arena and unmaps it when the step ends, so every step page-faults
on, and the kernel zeroes, the whole block again (0.8 s of system time per 4 s step at batch 32 on
a 2-core machine). `keep_freed_host_memory()` makes malloc use one arena, never `mmap`, and never
trim the heap, so the block is reused from step to step (4-9% faster CPU steps at batch 32,
neutral at batch 8, dctjax's step alone in alternating processes). The trim threshold is -1
(trimming off), not INT_MAX: a block over 2 GiB (JiT-B/16 at batch 8: 3.9 GB) is above INT_MAX,
so glibc gave it back at every step and the next step faulted in ~1M pages again (3 s of system
time, 10% of the step).

The settings are process-wide and only take effect for threads that have not allocated yet: call
it first thing in a launcher, before JAX runs anything. The cost is that freed memory stays with
the process (its resident size stays at its peak). `launch/train.py`,
`benchmarks/train_step.py` and the dctjax worker of `benchmarks/torch_step.py` call it; set
DCTJAX_KEEP_HOST_MEMORY=0 to opt out.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
M_MMAP_MAX = -4
M_ARENA_MAX = -8
ENV = "DCTJAX_KEEP_HOST_MEMORY"


def keep_freed_host_memory() -> bool:
    """Sets glibc malloc to keep and reuse freed memory (see the module docstring).

    Returns True when applied; False on other platforms or C libraries, or when DCTJAX_KEEP_HOST_MEMORY
    is "0".
    """
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)

"""keep_freed_host_memory: a freed large block is reused without new page faults (subprocess)."""

import os
import subprocess
import sys

import pytest

from dctjax import host_memory

PROBE = r"""
import ctypes, resource, sys
from dctjax.host_memory import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "1" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20

def touch_block():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)

touch_block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_block()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(apply: bool, env: dict | None = None) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if apply else "0"],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_block_is_reused_without_page_faults():
    pages = (256 << 20) // 4096
    applied, faults = _run(True)
    assert applied and faults < pages // 20  # the second block reuses the first one's pages
    _, default_faults = _run(False)
    assert default_faults > pages // 2  # glibc's default: a fresh mmap, faulted in again


BREAK_PROBE = r"""
import ctypes
from dctjax.host_memory import keep_freed_host_memory
applied = keep_freed_host_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.malloc.argtypes, libc.free.argtypes, libc.sbrk.argtypes = [ctypes.c_size_t], [ctypes.c_void_p], [ctypes.c_long]
p = libc.malloc(5 << 29)  # 2.5 GiB, never touched: only the program break moves
grown = libc.sbrk(0)
libc.free(p)
print(applied, p is not None and grown - libc.sbrk(0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_block_over_2_gib_is_kept():
    """A step's temporaries above INT_MAX bytes (JiT-B/16 at batch 8: 3.9 GB) stay with the heap.

    The trim threshold is disabled (-1), not set to INT_MAX: with INT_MAX glibc returned such a
    block to the kernel at every free and faulted it in again at the next step.
    """
    out = subprocess.run(
        [sys.executable, "-c", BREAK_PROBE], capture_output=True, text=True, check=True
    )
    applied, shrunk_by = out.stdout.split()
    assert applied == "True" and shrunk_by == "0"


def test_opt_out_by_environment(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "0")
    assert host_memory.keep_freed_host_memory() is False

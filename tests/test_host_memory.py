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


def test_opt_out_by_environment(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "0")
    assert host_memory.keep_freed_host_memory() is False

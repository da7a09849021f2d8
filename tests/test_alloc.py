"""The allocator settings of the generating tools: a 48 MB buffer, freed, stays in the heap for the
next temporary instead of being unmapped (glibc only; each case runs in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robustbench_augmix import _alloc

PROBE = """
import ctypes, sys
from robustbench_augmix import _alloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]

lib = _alloc._libc()
lib.malloc.restype, lib.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
lib.free.argtypes = [ctypes.c_void_p]
lib.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert _alloc.keep_freed_memory()
p = lib.malloc(48 << 20)
mapped = lib.mallinfo2().hblkhd >= 48 << 20
lib.free(p)
print(mapped, lib.mallinfo2().fordblks >= 48 << 20)
"""


def _has_mallinfo2() -> bool:
    lib = _alloc._libc()
    return lib is not None and hasattr(lib, "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33")
@pytest.mark.parametrize("mode,want", [("default", "True False"), ("tuned", "False True")])
def test_keep_freed_memory_keeps_large_buffers_in_the_heap(mode, want):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    assert out.stdout.split() == want.split()

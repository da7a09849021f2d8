"""Keep the process's resident memory flat over long runs (glibc only; a no-op elsewhere).

Model activations and corruption buffers of changing sizes fragment glibc's heap: freed memory stays
mapped, and a full CIFAR-10-C run on the CPU grew from 0.9 to 2.3 GB without holding more data.
``malloc_trim(0)`` after each (batch, cell) hands the free pages back; measured on 1,000 images x 15
cells: peak 0.87 GB instead of 1.05 GB at unchanged speed. (Pinning glibc's mmap threshold instead
kept memory flatter but made the run 65 % slower: every large buffer then page-faults anew.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    return fn


def release_free_memory() -> None:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim(0)``)."""
    fn = _trim()
    if fn is not None:
        fn(0)

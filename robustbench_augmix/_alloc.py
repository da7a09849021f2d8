"""Tune glibc's allocator for the two kinds of long runs we have (glibc only; a no-op elsewhere).

Evaluation: keep the process's resident memory flat.

Model activations and corruption buffers of changing sizes fragment glibc's heap: freed memory stays
mapped, and a full CIFAR-10-C run on the CPU grew from 0.9 to 2.3 GB without holding more data.
``malloc_trim(0)`` after each (batch, cell) hands the free pages back; measured on 1,000 images x 15
cells: peak 0.87 GB instead of 1.05 GB at unchanged speed. (Pinning glibc's mmap threshold instead
kept memory flatter but made the run 65 % slower: every large buffer then page-faults anew.)

Corruption generation: the opposite. A batch at 224 px makes a dozen temporaries of a few MB per
kernel; by default glibc maps each afresh and unmaps it on free, so every pass page-faults its
output in. Keeping freed memory in the heap (:func:`keep_freed_memory`) measured 20-35 % faster over
the 15 corruptions at 224 px on the 2-core development VM, for about 0.15 GB more resident memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.malloc_trim, lib.mallopt  # noqa: B018  (musl and other libcs lack them)
    except (OSError, AttributeError):
        return None
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return lib


def release_free_memory() -> None:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim(0)``)."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Serve buffers up to 256 MB from the heap and keep up to 1 GB of freed memory there, so that
    repeated temporaries reuse pages already mapped instead of page-faulting new ones. Process-wide:
    the command-line tools that generate corruptions call it; the library never does on import.
    Returns whether glibc accepted the settings (False on other platforms and libcs)."""
    lib = _libc()
    if lib is None:
        return False
    # mallopt returns 1 on success (all three must hold, or the defaults stay mixed with ours).
    return all([lib.mallopt(_M_MMAP_THRESHOLD, 256 << 20) == 1, lib.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1,
                lib.mallopt(_M_TOP_PAD, 64 << 20) == 1])

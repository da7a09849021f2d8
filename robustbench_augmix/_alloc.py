"""Tune glibc's allocator for our long runs (glibc only; a no-op elsewhere).

By default glibc maps every buffer above its mmap threshold (128 KB, growing to at most 32 MB) afresh
and unmaps it on free, so each pass of a kernel, and each forward pass, page-faults its large
temporaries and activations in again. :func:`keep_freed_memory` serves them from the heap and keeps
freed memory there; ``rb-corrupt``, ``rb-eval``, ``rb-train``, ``rb-demo`` and ``rb-bench`` call it at
start.

- Corruption generation: 20-35 % faster over the 15 corruptions at 224 px on the 2-core development
  VM, for about 0.15 GB more resident memory.
- Evaluation (CIFAR ResNet-18, 400 images x 76 cells, batch 200, 2 cores): 240 s -> 162 s, system time
  117 s -> 4 s, 49 M -> 0.5 M page faults, peak RSS 1.20 -> 1.40 GB; at 224 px 1.6x faster
  (``benchmarks/eval_allocator.py``, figures in docs/performance.md). Activations and corruption
  buffers of changing sizes fragment the heap (3.3 GB over a chunk of 2,000 images untrimmed), so the
  evaluation hands free pages back (:func:`release_free_memory`) every 64 forward passes (1.9 GB):
  trimming after every pass undid most of the gain (each pass faulted its pages in again).
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

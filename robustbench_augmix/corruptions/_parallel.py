"""CPU work split over images: parts of a batch run side by side on single-threaded worker threads.

torch's intra-op pool splits every operation over its threads and waits for all of them at its end; a batch of
small operations on a machine whose cores are shared then waits, operation after operation, for a thread whose
core another process holds. Parts of a batch on workers of one thread each have no such barrier: beside one busy
process per core the 15 corruptions at 224 px ran 2.0x slower (the fair share) against 2.5-3.6x with the
intra-op pool (docs/performance.md, shared cores). The output is the same: every image's draws come from its own
generator, and the kernels give the same result on any number of threads (tests/test_threads.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch

_POOLS: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child (a DataLoader worker) has none of the threads


def workers() -> int:
    """How many parts to run side by side: torch's thread count (chosen by ``_threads`` in the CLIs)."""
    return torch.get_num_threads()


def run_parts(fn: Callable[[int], None], starts: Iterable[int], n_workers: int | None = None) -> None:
    """``fn(s)`` for every start ``s``: in order on this thread when one worker is asked for, else on that many
    single-threaded workers. ``fn`` writes its own part of the result; the first error is raised."""
    n_workers = workers() if n_workers is None else n_workers
    starts = list(starts)
    if n_workers <= 1 or len(starts) <= 1:
        for s in starts:
            fn(s)
        return
    for f in [_pool(n_workers).submit(fn, s) for s in starts]:
        f.result()


def _pool(n: int) -> ThreadPoolExecutor:
    """A pool of ``n`` threads that run torch single-threaded, made once per size."""
    pool = _POOLS.get(n)
    if pool is None:
        main = torch.get_num_threads()
        pool = ThreadPoolExecutor(n, thread_name_prefix="rba-worker", initializer=_single_threaded)
        ready = threading.Barrier(n)
        list(pool.map(lambda _: ready.wait(), range(n)))  # every worker started (and set to 1 thread)
        # torch.set_num_threads also sets what new threads start with: give that back to the main thread's. A
        # thread that ran torch with several threads slowed the main thread's later work 3x (OpenMP then counts
        # more threads than cores and stops spinning; measured), hence 1 thread per worker, set before first use.
        torch.set_num_threads(main)
        _POOLS[n] = pool
    return pool


def _single_threaded() -> None:
    torch.get_num_threads()  # torch sets a thread's OpenMP threads at its first use: let that happen now
    torch.set_num_threads(1)

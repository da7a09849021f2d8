"""How many CPU threads the kernels and models use: the cores this process may actually run on.

``os.cpu_count()`` (and torch's default pool) counts the machine's cores. A process pinned by
``taskset``, a container or a cluster job with a CPU quota, or one of several shards that one launch starts
on the same machine has fewer; a thread pool larger than that makes threads wait for cores they never get
(OpenMP's active wait then spins them), and the run slows by an order of magnitude. Measured in
docs/performance.md (shared cores).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._common import InputError

# The console scripts also bound OpenMP's spin-wait (GOMP_SPINCOUNT=10000) before torch starts its pool
# (cli/__init__): a waiting thread soon sleeps instead of stealing the core its peer waits for.
SPIN_COUNT = "10000"
THREADS_HELP = ("CPU threads for torch (default: the cores this process may use, from its affinity mask and cgroup "
                "quota, divided among torchrun's local processes; or OMP_NUM_THREADS)")


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", proc_self: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (``quota / period``), or None when unlimited or
    unknown. cgroup v2 (``cpu.max``: ``"max 100000"`` or ``"150000 100000"``) on every level from the
    process's group up to the root, the tightest winning; else cgroup v1 (``cpu.cfs_quota_us`` and
    ``cpu.cfs_period_us``, quota -1 when unlimited)."""
    root = Path(root)
    limits = []
    try:
        groups = Path(proc_self).read_text().splitlines()
    except OSError:
        groups = []
    rel = next((g.split(":", 2)[2] for g in groups if g.startswith("0::")), "/")
    level = root / rel.lstrip("/")
    while True:
        try:
            quota, period = (level / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if level == root or root not in level.parents:
            break
        level = level.parent
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            period = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            limits.append(quota / period)
    return min(limits) if limits else None


def available_cores() -> int:
    """The cores this process may use: its affinity mask, capped by its cgroup CPU quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows have no affinity call
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """``(threads, why)``: ``requested`` (``--threads``) when given, else ``OMP_NUM_THREADS`` when set, else the
    available cores divided among the processes one launch starts on this machine (torchrun's
    ``LOCAL_WORLD_SIZE``)."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"--threads {requested}: give a positive number of CPU threads")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            if int(env) >= 1:
                return int(env), "OMP_NUM_THREADS"
        except ValueError:
            pass
    cores = available_cores()
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local), (f"{cores} available cores" + (f" / {local} local processes" if local > 1 else ""))


def apply_threads(requested: int | None = None) -> int:
    """Set torch's intra-op pool to :func:`choose_threads` and return the count."""
    import torch

    n, _ = choose_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

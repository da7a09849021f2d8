"""Two ``rb-corrupt --shard i/2`` processes side by side against one process doing all of it, on a CIFAR-10 test
split written here from the test photographs (the real one is not needed: the time does not depend on content).

    python benchmarks/shards.py --images 10000 --work /tmp/shards

Prints the wall time of each way, the ratio, the load average before and after, and whether the two ways wrote
the same bytes (every output file hashed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix == ".npy"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rba-shards"))
    ap.add_argument("--shards", type=int, default=2)
    a = ap.parse_args()
    from robustbench_augmix.bench import _photos
    from robustbench_augmix.data.sources import write_cifar

    shutil.rmtree(a.work, ignore_errors=True)
    data = a.work / "data"
    write_cifar(data, _photos(32, a.images), np.arange(a.images) % 10, "cifar10")
    base = [shutil.which("rb-corrupt") or "rb-corrupt", "--suite", "cifar10-c", "--data", str(data)]
    print("load before:", os.getloadavg())
    t0 = time.perf_counter()
    subprocess.run([*base, "--out", str(a.work / "one")], check=True, capture_output=True)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*base, "--out", str(a.work / "split"), "--shard", f"{i}/{a.shards}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(a.shards)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(p.stderr.read().decode()[-2000:])
    split = time.perf_counter() - t0
    print("load after:", os.getloadavg())
    same = _digest(a.work / "one") == _digest(a.work / "split")
    print(f"{a.images} images, CIFAR-10-C (15 x 5 cells): one process {one:.1f} s; {a.shards} shards side by side "
          f"{split:.1f} s ({split / one:.2f}x the time of one); same bytes: {same}")


if __name__ == "__main__":
    main()

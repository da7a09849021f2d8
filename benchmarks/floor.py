"""The memory-traffic floor of each corruption beside its measured time (issue #22: "where the limit is the memory
traffic of the minimum number of passes over the image, say so with the figure").

    python benchmarks/floor.py --json benchmarks/corruptions-cpu-2core.json

Measures on this machine, side by side in one run:
- copy bandwidth (``dst.copy_(src)``) on 1 and on 2 threads, for buffers in cache (4 MiB) and far beyond (512 MiB);
- the cost of one float32 pass over a 224-px image (an in-place multiply, in cache-sized parts, as the kernels run).

The floor of any corruption, uint8 in and out, is one read of the image and one write of the result: 2 x 3 x H x W
bytes. The table prints it as time at the 2-thread large-buffer bandwidth, and each corruption's time from an
``rb-bench corruptions --json`` file as a multiple of it and as a number of float32 passes' worth of work.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth(nbytes: int, threads: int) -> float:
    """GB/s of ``dst.copy_(src)`` counting the bytes read and written."""
    torch.set_num_threads(threads)
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    reps = max(3, min(200, (1 << 31) // nbytes))
    return 2 * nbytes / _best(lambda: dst.copy_(src), reps) / 1e9


def float_pass_ms(size: int, threads: int) -> float:
    """ms per image of one in-place float32 multiply over a batch of 64, in parts of 8 images (as ``apply``)."""
    torch.set_num_threads(threads)
    x = torch.rand(64, 3, size, size)
    parts = x.split(8)

    def run():
        for p in parts:
            p.mul_(1.0)

    return _best(run, 20) / 64 * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/corruptions-cpu-2core.json",
                    help="rows of rb-bench corruptions --json (uint8 io)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    main_threads = torch.get_num_threads()
    bw = {(mib, t): bandwidth(mib << 20, t) for mib in (4, 512) for t in (1, 2)}
    fp = {s: float_pass_ms(s, 2) for s in (224, 32)}
    torch.set_num_threads(main_threads)
    for (mib, t), v in bw.items():
        print(f"copy bandwidth, {mib:3d} MiB buffers, {t} thread{'s' if t > 1 else ''}: {v:5.1f} GB/s")
    with open(args.json) as f:
        rows = [r for r in json.load(f) if r.get("io", "uint8") == "uint8"]
    print("\n| corruption | size | ours ms | floor ms (u8 in + out at the 2-thread bandwidth) | ours / floor "
          "| float32 passes' worth |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["size"]
        floor = 2 * 3 * s * s / (bw[(512, 2)] * 1e9) * 1e3
        print(f"| {r['corruption']} | {s} | {r['ours_ms']:.3f} | {floor:.4f} | {r['ours_ms'] / floor:.0f}x "
              f"| {r['ours_ms'] / fp[s]:.0f} |")
    print(f"\none float32 pass (in place, parts of 8 images, 2 threads): {fp[224]:.4f} ms per 224-px image, "
          f"{fp[32]:.5f} ms per 32-px image")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

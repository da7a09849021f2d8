"""What drawing the random fields on the CPU (and moving them) would cost, against the GPU budget.

The corruptions draw large random fields on the batch's device (corruptions/_rng.py), so CPU and CUDA give
different streams and the device is part of every run identity. The alternative, every draw on the CPU
and moved, would make the output device-independent; this measures its price per 224-px image: the CPU
time of the fields each random corruption draws (one generator per image, as the engine does), beside
the 50 us per image that the GPU target of 20,000 images/s over the 15 leaves for everything.

    python benchmarks/rng_draws.py [--batch 64] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from robustbench_augmix.corruptions import REGISTRY, load_suite
from robustbench_augmix.corruptions._rng import Draws, image_seeds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    suite = load_suite("imagenet-c")
    n, s = args.batch, args.size
    print(f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads, batch {n}, {s} px")
    total = 0.0
    for name in suite.names():
        c = REGISTRY[name]
        if c.sample is None:
            continue
        params = suite.corruptions[name].params(3, suite)
        seeds = image_seeds(0, suite.id, name, 3, range(n))
        c.sample(Draws(seeds, "cpu"), s, s, params)  # warm-up
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            d = c.sample(Draws(seeds, "cpu"), s, s, params)
            best = min(best, time.perf_counter() - t0)
        mb = sum(v.numel() * v.element_size() for v in d.values() if isinstance(v, torch.Tensor)) / n / 2**20
        total += best / n
        print(f"{name:16s} {1e3 * best / n:7.3f} ms per image on the CPU, {mb:6.2f} MiB per image to move")
    print(f"sum over the random ones: {1e3 * total:.3f} ms per image = {total / 50e-6:.0f}x the 0.05 ms per image "
          "that 20,000 images/s leaves for the whole corruption")


if __name__ == "__main__":
    main()

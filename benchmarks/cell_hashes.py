"""Hash every (suite, corruption, severity) cell of the engine's output, uint8 and float io, to show that a
speed change leaves the output bit-identical: run it on two commits and diff the files.

    python benchmarks/cell_hashes.py > after.txt
    git worktree add /tmp/before <rev> && PYTHONPATH=/tmp/before python benchmarks/cell_hashes.py > before.txt
    diff before.txt after.txt && echo identical

Each suite's cells run on a batch of the test photographs at the suite's size (bench._photos), with the
same per-image seeds as rb-corrupt; the batch is larger than one CPU chunk, so the chunking is exercised.
"""

from __future__ import annotations

import hashlib
import sys

import torch

import robustbench_augmix
from robustbench_augmix.bench import _photos
from robustbench_augmix.corruptions import apply, image_seeds, load_suite

SUITES = (("imagenet-c", 224, 12), ("tinyimagenet-c", 64, 300), ("cifar10-c", 32, 500))


def main() -> None:
    print(f"# robustbench_augmix from {robustbench_augmix.__file__}", file=sys.stderr)
    for suite, size, n in SUITES:
        u8 = torch.from_numpy(_photos(size, n)).permute(0, 3, 1, 2).contiguous()
        f32 = u8.float() / 255
        s = load_suite(suite)
        for name in s.names(extra=True):
            for sev in range(1, 6):
                seeds = image_seeds(0, suite, name, sev, list(range(n)))
                a = apply(u8, name, sev, suite=suite, seeds=seeds, levels=True)
                b = apply(f32, name, sev, suite=suite, seeds=seeds)
                ha = hashlib.sha256(a.numpy().tobytes()).hexdigest()[:16]
                hb = hashlib.sha256(b.numpy().tobytes()).hexdigest()[:16]
                print(f"{suite} {name} {sev} uint8 {ha} float {hb}", flush=True)


if __name__ == "__main__":
    main()

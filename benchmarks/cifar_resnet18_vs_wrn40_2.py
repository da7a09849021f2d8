"""Inference time of a CIFAR ResNet-18 against WRN-40-2 at 32 px, side by side in one run.

The ResNet-18 is torchvision's resnet18 with a 3x3 stride-1 stem and no max-pool (11.2 M parameters,
0.56 GFLOPs at 32 px), the usual CIFAR variant; WRN-40-2 is ours (2.2 M, 0.33 GFLOPs). The ratio scales
the measured full CIFAR-10-C wall time of WRN-40-2 to a ResNet-18-sized model (docs/performance.md).

    python benchmarks/cifar_resnet18_vs_wrn40_2.py [--batch 200] [--rounds 4]

``build`` is the same network for ``rb-eval --model benchmarks/cifar_resnet18_vs_wrn40_2.py:build``, as the
full-suite wall time in docs/performance.md was measured.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from robustbench_augmix import Preprocess
from robustbench_augmix.models.cifar import wrn40_2


def cifar_resnet18(num_classes: int = 10) -> torch.nn.Module:
    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = torch.nn.Identity()
    return m


def build() -> torch.nn.Module:
    """``cifar_resnet18`` with seeded (untrained) weights, so that a stopped ``rb-eval`` run resumes; the
    wall time does not depend on the weights."""
    torch.manual_seed(0)
    m = cifar_resnet18()
    m.rba_preprocess = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    x = torch.rand(args.batch, 3, 32, 32)
    models = {"wrn40_2": wrn40_2(10).eval(), "resnet18": cifar_resnet18().eval()}
    best = dict.fromkeys(models, float("inf"))
    with torch.inference_mode():
        for _ in range(args.rounds):  # interleaved rounds, best of each
            for name, m in models.items():
                m(x)
                t = time.perf_counter()
                m(x)
                m(x)
                best[name] = min(best[name], (time.perf_counter() - t) / (2 * args.batch) * 1e3)
    for name, m in models.items():
        print(f"{name}: {sum(p.numel() for p in m.parameters()):,} parameters, {best[name]:.3f} ms/img")
    print(f"resnet18 / wrn40_2: {best['resnet18'] / best['wrn40_2']:.2f}x")


if __name__ == "__main__":
    main()

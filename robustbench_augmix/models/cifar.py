"""CIFAR architectures of the AugMix paper, written for this toolkit.

State-dict key names follow the AugMix release (``google-research/augmix third_party/WideResNet_pytorch``),
which RobustBench's ``Hendrycks2020AugMix_WRN`` also uses, so released checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _WideBasic(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 projection when the width or
    stride changes (the projection takes the pre-activated input, as in the WRN paper's code)."""

    def __init__(self, cin: int, cout: int, stride: int, drop: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.equal_in_out = cin == cout
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(a)))
        if self.drop > 0:
            out = F.dropout(out, p=self.drop, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(a))


class _Group(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, drop: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[_WideBasic(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop)
                                     for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-d-k (Zagoruyko & Komodakis 2016) for 32 px inputs: (N, 3, 32, 32) -> (N, num_classes) logits."""

    def __init__(self, depth: int = 40, widen: int = 2, num_classes: int = 10, drop: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.block1 = _Group(n, w[0], w[1], 1, drop)
        self.block2 = _Group(n, w[1], w[2], 2, drop)
        self.block3 = _Group(n, w[2], w[3], 2, drop)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        self.n_channels = w[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def wrn40_2(num_classes: int = 10) -> WideResNet:
    """WRN-40-2, the AugMix paper's default CIFAR network (``cifar.py``: ``WideResNet(40, nc, 2, 0.0)``)."""
    return WideResNet(40, 2, num_classes, 0.0)


BUILDERS = {"wrn40_2": wrn40_2}

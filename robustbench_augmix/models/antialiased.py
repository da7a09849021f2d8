"""Anti-aliased ResNet-50 ("MaxBlur pool", Zhang 2019, "Making Convolutional Networks Shift-Invariant
Again", arXiv 1904.11486): the AugMix paper's Table 2 baseline, in the module layout of the authors'
released weights (adobe/antialiased-cnns, ``antialiased_cnns/resnet.py``), so their state dicts load
strictly.

Every stride-2 step becomes a dense step and a blur-then-subsample (``BlurPool``): the stem's max pool is
``MaxPool2d(2, stride=1)`` then BlurPool; in the first block of stages 2-4 the 3x3 conv keeps stride 1
and BlurPool runs before the last 1x1 conv, and the shortcut is BlurPool then a stride-1 1x1 conv. The
blur is the binomial filter of ``filter_size`` taps (3: [1, 2, 1] outer itself, over 16), reflect-padded,
one depthwise conv with stride 2; it is a buffer (``filt``), as in the release.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlurPool", "resnet50"]


class BlurPool(nn.Module):
    """Binomial low-pass filter then subsampling, per channel: (N, C, H, W) -> (N, C, ceil(H / s), ceil(W / s))
    for odd ``filter_size`` (reflect padding of (filter_size - 1) / 2 on each side)."""

    def __init__(self, channels: int, filter_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        if not 1 <= filter_size <= 7:
            raise ValueError(f"filter_size must be 1..7, got {filter_size}")
        row = torch.tensor([math.comb(filter_size - 1, k) for k in range(filter_size)], dtype=torch.float32)
        filt = row[:, None] * row[None, :]
        self.register_buffer("filt", (filt / filt.sum()).expand(channels, 1, filter_size, filter_size).clone())
        self.pad = ((filter_size - 1) // 2, filter_size // 2) * 2  # left, right, top, bottom
        self.stride, self.filter_size = stride, filter_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.filter_size == 1:
            return x[:, :, :: self.stride, :: self.stride]
        return F.conv2d(F.pad(x, self.pad, mode="reflect"), self.filt, stride=self.stride, groups=x.shape[1])


def resnet50(num_classes: int = 1000, filter_size: int = 3) -> nn.Module:
    """torchvision's ResNet-50 (v1.5) with every downsampling anti-aliased, in the release's layout (the
    released weights: ``resnet50_lpf{2,3,4,5}``; the AugMix paper's "MaxBlur pool" row is a ResNet-50 of
    this kind)."""
    from torchvision.models import resnet50 as tv_resnet50

    m = tv_resnet50(weights=None, num_classes=num_classes)
    m.maxpool = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(64, filter_size, 2))
    for stage in (m.layer2, m.layer3, m.layer4):
        block = stage[0]
        block.conv2.stride = (1, 1)                              # the stride moves to the blur
        block.conv3 = nn.Sequential(BlurPool(block.conv3.in_channels, filter_size, 2), block.conv3)
        conv, bn = block.downsample
        conv.stride = (1, 1)
        block.downsample = nn.Sequential(BlurPool(conv.in_channels, filter_size, 2), conv, bn)
    return m

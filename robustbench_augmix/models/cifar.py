"""CIFAR architectures of the AugMix paper as its released code builds them, written for this toolkit.

Module names (and so state-dict keys) follow the AugMix release (``google-research/augmix``:
``third_party/WideResNet_pytorch``, ``models/cifar/allconv.py``, ``third_party/ResNeXt_DenseNet``), which
RobustBench's ``Hendrycks2020AugMix_*`` models also use, so released checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._common import InputError


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
            raise InputError(f"WRN depth must be 6n+4, got {depth}")
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
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def wrn40_2(num_classes: int = 10) -> WideResNet:
    """WRN-40-2, the AugMix paper's default CIFAR network (``cifar.py``: ``WideResNet(40, nc, 2, 0.0)``)."""
    return WideResNet(40, 2, num_classes, 0.0)


# ------------------------------------------------------------------------------------- AllConvNet
class _GELU(nn.Module):
    """The sigmoid approximation of GELU, ``x * sigmoid(1.702 x)``, that the AugMix AllConvNet uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(1.702 * x) * x


class AllConvNet(nn.Module):
    """All-CNN-C (Springenberg et al. 2015) as AugMix's ``allconv.py`` builds it: widths 96/192, BN + GELU
    after every conv, max-pool + dropout 0.5 between stages, then a 3x3 valid conv, two 1x1 convs that
    (as in the release) pad by 1 and so grow the map 6 -> 8 -> 10, and an 8x8 average pool (which reads
    the top-left 8x8 of that 10x10 map) before the linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3

        def conv(cout: int, k: int, pad: int) -> None:
            nonlocal cin
            layers.extend([nn.Conv2d(cin, cout, k, padding=pad), nn.BatchNorm2d(cout), _GELU()])
            cin = cout

        for width in (96, 192):
            for _ in range(3):
                conv(width, 3, 1)
            layers.extend([nn.MaxPool2d(2, 2), nn.Dropout(0.5)])
        conv(192, 3, 0)
        conv(192, 1, 1)
        conv(192, 1, 1)
        layers.append(nn.AvgPool2d(8))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(192, num_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# ------------------------------------------------------------------------------------- DenseNet
class _DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` maps, concatenated to the input (no bottleneck)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv1(F.relu(self.bn1(x)))], 1)


class _Transition(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNet(nn.Module):
    """DenseNet for CIFAR without bottlenecks or compression, as AugMix's ``densenet()`` builds it:
    growth 12, depth 40 (three blocks of 12 layers), reduction 1.0. That is DenseNet-40-12 of Huang et al.
    (Table 2, 1.0M parameters), not the DenseNet-BC (k=12, L=100) that some descriptions of the AugMix
    experiments name."""

    def __init__(self, growth: int = 12, depth: int = 40, num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 4) // 3
        ch = 2 * growth
        self.conv1 = nn.Conv2d(3, ch, 3, padding=1, bias=False)
        blocks = []
        for _ in range(3):
            blocks.append(nn.Sequential(*[_DenseLayer(ch + i * growth, growth) for i in range(n)]))
            ch += n * growth
        self.dense1, self.dense2, self.dense3 = blocks
        self.trans1 = _Transition(2 * growth + n * growth, 2 * growth + n * growth)
        self.trans2 = _Transition(2 * growth + 2 * n * growth, 2 * growth + 2 * n * growth)
        self.bn1 = nn.BatchNorm2d(ch)
        self.fc = nn.Linear(ch, num_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans2(self.dense2(self.trans1(self.dense1(self.conv1(x)))))
        out = F.relu(self.bn1(self.dense3(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ------------------------------------------------------------------------------------- ResNeXt
class _ResNeXtBlock(nn.Module):
    """Bottleneck of type C: 1x1 reduce, grouped 3x3, 1x1 expand (x4), post-activation residual."""

    def __init__(self, cin: int, planes: int, cardinality: int, base_width: int, stride: int) -> None:
        super().__init__()
        d = int(math.floor(planes * base_width / 64)) * cardinality
        self.conv_reduce = nn.Conv2d(cin, d, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, planes * 4, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_reduce(self.conv_reduce(x)))
        y = F.relu(self.bn(self.conv_conv(y)))
        y = self.bn_expand(self.conv_expand(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class CifarResNeXt(nn.Module):
    """ResNeXt-29 for CIFAR (Xie et al. 2017) with AugMix's settings: cardinality 4, base width 32."""

    def __init__(self, depth: int = 29, cardinality: int = 4, base_width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise InputError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_ResNeXtBlock(cin, planes, cardinality, base_width, stride if i == 0 else 1))
                cin = planes * 4
            stages.append(nn.Sequential(*blocks))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(1024, num_classes)
        _he_init(self)
        nn.init.kaiming_normal_(self.classifier.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _he_init(model: nn.Module) -> None:
    """He-normal over fan-out for convs, BN to identity, zero linear biases (the release's init)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def allconv(num_classes: int = 10) -> AllConvNet:
    """AllConvNet (``cifar.py -m allconv``)."""
    return AllConvNet(num_classes)


def densenet40_12(num_classes: int = 10) -> DenseNet:
    """DenseNet-40-12 (``cifar.py -m densenet``: ``densenet(12, 40)``, reduction 1.0, no bottleneck)."""
    return DenseNet(12, 40, num_classes)


def resnext29_4x32d(num_classes: int = 10) -> CifarResNeXt:
    """ResNeXt-29 with 4 groups of width 32 (``cifar.py -m resnext``: ``resnext29(nc, 4, 32)``)."""
    return CifarResNeXt(29, 4, 32, num_classes)


class SmallCNN(nn.Module):
    """Ours, for the offline demo (``rb-demo``): three conv-BN-ReLU stages of 32/64/128 channels with 2x2
    max-pooling, global average pooling and a linear classifier; 32 px in, about 0.29 M parameters."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def smallcnn(num_classes: int = 10) -> SmallCNN:
    """The demo's small CNN (not from the paper)."""
    return SmallCNN(num_classes)


BUILDERS = {"wrn40_2": wrn40_2, "allconv": allconv, "densenet40_12": densenet40_12,
            "resnext29_4x32d": resnext29_4x32d, "smallcnn": smallcnn}

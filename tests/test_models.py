"""The CIFAR architectures of the AugMix paper: forward passes, parameter counts against the published
and hand-computed ones, and the state-dict key names of the released checkpoints."""

from __future__ import annotations

import pytest
import torch

from robustbench_augmix.models import build
from robustbench_augmix.models.cifar import BUILDERS


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _resnext29_params(card=4, width=32, nc=10) -> int:
    """Closed form for ResNeXt-29 (Xie et al. 2017, CIFAR design): stem, 3 stages x 3 bottlenecks."""
    total = 3 * 64 * 9 + 2 * 64
    cin = 64
    for planes, _stride in ((64, 1), (128, 2), (256, 2)):
        for i in range(3):
            d = (planes * width // 64) * card
            total += cin * d + 2 * d + d * (d // card) * 9 + 2 * d + d * 4 * planes + 2 * 4 * planes
            if i == 0:
                total += cin * 4 * planes + 2 * 4 * planes
            cin = 4 * planes
    return total + 1024 * nc + nc


def _densenet_params(k=12, depth=40, nc=10) -> int:
    """Closed form for DenseNet-L-k without bottleneck or compression (Huang et al. 2017)."""
    n = (depth - 4) // 3
    ch, total = 2 * k, 3 * 2 * k * 9
    for b in range(3):
        for _ in range(n):
            total += 2 * ch + ch * k * 9
            ch += k
        if b < 2:
            total += 2 * ch + ch * ch
    return total + 2 * ch + ch * nc + nc


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_every_cifar_builder_runs(name, num_classes):
    m = build(f"cifar:{name}", num_classes=num_classes).eval()
    with torch.no_grad():
        out = m(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name, published_millions, exact", [
    ("wrn40_2", 2.2, 2_243_546),            # Zagoruyko & Komodakis 2016, Table 1 / 4: WRN-40-2, 2.2M
    ("densenet40_12", 1.0, _densenet_params()),  # Huang et al. 2017, Table 2: DenseNet (k=12), L=40, 1.0M
    ("allconv", 1.4, None),                  # Springenberg et al. 2015: All-CNN-C, 1.4M (BN adds ~4k)
    ("resnext29_4x32d", None, _resnext29_params()),
])
def test_parameter_counts(name, published_millions, exact):
    n = _params(BUILDERS[name](10))
    if published_millions is not None:  # the papers print one decimal, truncated (DenseNet-40-12: 1.06M -> "1.0M")
        assert int(n / 1e5) / 10 == published_millions
    if exact is not None:
        assert n == exact


@pytest.mark.parametrize("name, keys", [
    ("wrn40_2", ["conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.5.conv2.weight",
                 "bn1.running_var", "fc.weight"]),
    ("allconv", ["features.0.weight", "features.22.weight", "features.28.bias", "features.29.running_mean",
                 "classifier.weight"]),
    ("densenet40_12", ["conv1.weight", "dense1.11.conv1.weight", "trans2.conv1.weight", "bn1.weight", "fc.bias"]),
    ("resnext29_4x32d", ["conv_1_3x3.weight", "stage_1.0.downsample.0.weight", "stage_3.2.conv_conv.weight",
                         "bn_1.running_mean", "classifier.weight"]),
])
def test_state_dict_keys_match_the_release(name, keys):
    sd = BUILDERS[name](10).state_dict()
    assert all(k in sd for k in keys), [k for k in keys if k not in sd]


def test_unknown_builders_are_named():
    from robustbench_augmix.models import ModelError

    with pytest.raises(ModelError, match="wrn40_2"):
        build("cifar:wrn28")
    with pytest.raises(ModelError, match="timm:<name>"):
        build("keras:resnet")

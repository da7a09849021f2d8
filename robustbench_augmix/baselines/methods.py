"""The training methods as data: one row per method, naming its per-image policy, its views, its batch
operation, its loss and its constants, each constant cited. A recipe is (dataset, architecture, method,
schedule); ``recipes.toml`` crosses its architectures and datasets with these rows.

No torch here: ``rb-train --list`` reads this table without importing it.

Where the AugMix paper does not say which setting of a baseline it used, the row takes the original
method's published default and says so in ``source``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._common import InputError


@dataclass(frozen=True)
class Method:
    """One training method.

    ``policy``: a per-image augmentation after the base crop/flip (:mod:`.policies`), or ``""``.
    ``views``: ``"one"`` (one training image per sample), ``"augmix"`` (AugMix's mixed views, per the
    recipe's severity/width/depth), or ``"simple"`` (the clean image and two more independent draws of
    the base crop/flip: the paper's "JSD with simple augmentations" ablation).
    ``jsd``: the Jensen-Shannon consistency loss over the views (else cross-entropy).
    ``batch``: a batch operation on the normalised images on the training device (:mod:`.kernels`,
    :mod:`.adversarial`): ``"cutout"``, ``"mixup"``, ``"cutmix"``, ``"pgd"`` or ``""``.
    ``args``: the method's constants; a value that is a mapping is looked up by dataset (``"*"``: any other).
    """

    name: str
    label: str  # the column header of the paper's tables
    summary: str
    source: str
    policy: str = ""
    views: str = "one"
    jsd: bool = False
    batch: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def augmix(self) -> bool:
        return self.views == "augmix"

    def resolved_args(self, dataset: str) -> dict[str, Any]:
        """The constants for one dataset (per-dataset values picked)."""
        out = {}
        for k, v in self.args.items():
            if isinstance(v, Mapping):
                if dataset not in v and "*" not in v:
                    raise InputError(f"method {self.name} has no {k} for dataset {dataset!r} (known for "
                                     f"{', '.join(v)})")
                v = v.get(dataset, v.get("*"))
            out[k] = v
        return out


def _m(**kw) -> Method:
    kw["args"] = MappingProxyType({k: MappingProxyType(v) if isinstance(v, dict) else v
                                   for k, v in kw.get("args", {}).items()})
    return Method(**kw)


# The AugMix paper's Table 1 columns (section 4.1, "Baselines"), its ablations (section 4.4), and the
# automatic policies torchvision ships. Sources: DeVries & Taylor 2017 (arXiv 1708.04552) and its code
# uoguelph-mlrg/Cutout; Zhang et al. 2018 (arXiv 1710.09412) and facebookresearch/mixup-cifar10; Yun et al.
# 2019 (arXiv 1905.04899) and clovaai/CutMix-PyTorch; Cubuk et al. 2019 (AutoAugment, arXiv 1805.09501) and
# 2020 (RandAugment, arXiv 1909.13719); Müller & Hutter 2021 (TrivialAugment, arXiv 2103.10158); Madry et
# al. 2018 (arXiv 1706.06083) and MadryLab/cifar10_challenge config.json. The AugMix paper names these
# baselines but, in the sources we hold, not their settings: every constant below is the original's default.
METHOD_TABLE: tuple[Method, ...] = (
    _m(name="standard", label="Standard", summary="random crop and flip only",
       source="AugMix Table 1 'Standard': the recipe's base transform alone"),
    _m(name="cutout", label="Cutout", batch="cutout",
       summary="one square zeroed at a uniform centre, clipped at the borders, after Normalize",
       # length 16 on CIFAR-10, 8 on CIFAR-100: DeVries & Taylor, README / section 4.1; one hole (n_holes=1)
       args={"length": {"cifar10": 16, "cifar100": 8, "digits": 16, "*": 16}},
       source="DeVries & Taylor 2017; uoguelph-mlrg/Cutout util/cutout.py (centre uniform over the image, "
              "square clipped at the border, applied after Normalize). digits: ours, as CIFAR-10 at 32 px"),
    _m(name="mixup", label="Mixup", batch="mixup",
       summary="convex combination with a shuffled batch, lambda ~ Beta(a, a) per batch, labels mixed alike",
       # alpha 1 on CIFAR, 0.2 on ImageNet: Zhang et al. sections 3.1-3.2; mixup-cifar10 train.py --alpha 1
       args={"alpha": {"imagenet": 0.2, "*": 1.0}},
       source="Zhang et al. 2018; facebookresearch/mixup-cifar10 train.py mixup_data (one lambda per batch, "
              "a random permutation as partner, loss lambda CE(y_a) + (1 - lambda) CE(y_b))"),
    _m(name="cutmix", label="CutMix", batch="cutmix",
       summary="a box of area 1 - lambda pasted from a shuffled batch, labels weighted by the pasted area",
       # beta 1.0; cutmix_prob 0.5 (the README's CIFAR command) and 1.0 (its ImageNet command)
       args={"alpha": 1.0, "prob": {"imagenet": 1.0, "*": 0.5}},
       source="Yun et al. 2019; clovaai/CutMix-PyTorch train.py and README (--beta 1.0, --cutmix_prob 0.5 on "
              "CIFAR, 1.0 on ImageNet; rand_bbox, lambda re-computed from the box actually pasted)"),
    _m(name="autoaugment", label="AutoAugment*", policy="autoaugment",
       summary="the published AutoAugment policy (CIFAR-10's on CIFAR and digits, ImageNet's on ImageNet)",
       args={"policy": {"imagenet": "imagenet", "*": "cifar10"}},
       source="Cubuk et al. 2019; torchvision.transforms.v2.AutoAugment with its AutoAugmentPolicy tables. The "
              "paper's asterisk marks a variant whose exact change our sources do not record; this is the "
              "published policy unchanged"),
    _m(name="randaugment", label="RandAugment", policy="randaugment",
       summary="N random ops at magnitude M (torchvision's defaults N = 2, M = 9 of 31 bins)",
       args={"num_ops": 2, "magnitude": 9},
       source="Cubuk et al. 2020 (N = 2, M = 9: their ImageNet ResNet-50 setting); torchvision.transforms.v2."
              "RandAugment. The paper's 'Random AA' (Table 2)"),
    _m(name="trivialaugment", label="TrivialAugment", policy="trivialaugment",
       summary="one random op at a random magnitude (the wide space)",
       source="Müller & Hutter 2021; torchvision.transforms.v2.TrivialAugmentWide (31 magnitude bins)"),
    _m(name="adversarial", label="Adv. Training", batch="pgd",
       summary="PGD L-inf adversarial training: train on the PGD example of every image",
       # epsilon 8/255, step 2/255, 7 steps, random start: MadryLab/cifar10_challenge config.json
       args={"epsilon": 8 / 255, "step_size": 2 / 255, "steps": 7, "random_start": True},
       source="Madry et al. 2018; MadryLab/cifar10_challenge config.json (epsilon 8, a 2, k 7 in 0..255 units, "
              "random start, every training image replaced by its adversarial example)"),
    _m(name="augmix", label="AugMix", views="augmix", jsd=True,
       summary="AugMix views with the Jensen-Shannon consistency loss",
       source="Hendrycks, Mu et al. 2020; google-research/augmix cifar.py / imagenet.py"),
    _m(name="augmix-nojsd", label="AugMix (no JSD)", views="augmix",
       summary="ablation: cross-entropy on one AugMix view, no consistency loss",
       source="AugMix section 4.4 ablation; cifar.py --no-jsd"),
    _m(name="jsd-simple", label="JSD + crop/flip", views="simple", jsd=True,
       summary="ablation: the JSD loss over the clean image and two more random crop/flip draws, no AugMix",
       source="AugMix section 4.4 ablation (the consistency loss with simple augmentations)"),
)

METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in METHOD_TABLE})
if len(METHODS) != len(METHOD_TABLE):
    raise RuntimeError("duplicate method names in METHOD_TABLE")


def method_names() -> list[str]:
    """The names ``rb-train --method`` accepts, in the table's order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """A method by name; an unknown name lists the valid ones."""
    if name not in METHODS:
        near = difflib.get_close_matches(name, list(METHODS), n=2)
        raise InputError(f"unknown training method {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                         + f" (valid: {', '.join(METHODS)})")
    return METHODS[name]

"""Per-image augmentation policies from torchvision ``transforms.v2`` (AutoAugment with its published
CIFAR-10 and ImageNet policies, RandAugment, TrivialAugmentWide), each image's draw keyed.

torchvision's transforms draw from the global torch generator. :class:`KeyedPolicy` runs one inside
``torch.random.fork_rng`` seeded from the image's key, so the draw depends on (seed, epoch, index) only
(not on the worker, the batch or what ran before) and the caller's generator is left as it was.
Per image, not on the batch: on a batch, a v2 policy applies one sub-policy to every image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["KeyedPolicy", "build_policy"]


def build_policy(name: str, args: dict[str, Any]) -> Callable[[Image.Image], Image.Image]:
    """The torchvision transform of a method's ``policy`` with its constants (:mod:`.methods`)."""
    from torchvision.transforms import v2

    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy(args["policy"]))
    if name == "randaugment":
        return v2.RandAugment(num_ops=int(args["num_ops"]), magnitude=int(args["magnitude"]))
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"no policy {name!r}")


class KeyedPolicy:
    """``policy(img)`` with the torch generator seeded from ``key`` for that call only.

    Args:
        policy: a torchvision transform of a PIL image.
    Call with a uint8 (H, W, 3) array and an integer key; returns a uint8 (H, W, 3) array.
    """

    def __init__(self, policy: Callable[[Image.Image], Image.Image]) -> None:
        self.policy = policy

    def __call__(self, a: np.ndarray, key: int) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)
            out = self.policy(Image.fromarray(np.ascontiguousarray(a)))
        return np.asarray(out)

"""Dataset wrappers for the methods: the clean-plus-two-crops views of the "JSD with simple augmentations"
ablation, and the sample index that the per-image batch draws (Cutout) are keyed on."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image

__all__ = ["Indexed", "SimpleViews"]


class SimpleViews(torch.utils.data.Dataset):
    """``((clean, view_1, view_2), label)``: the training image and two more independent draws of the base
    transform of the same image (streams ``crop/1``, ``crop/2``), each through ``preprocess``; the same
    shape as :class:`~robustbench_augmix.augmix.AugMixDataset`'s JSD output, so the JSD loss applies
    unchanged. ``base`` is a :class:`~robustbench_augmix.data.training.TrainSet`."""

    def __init__(self, base, preprocess: Callable[[Image.Image], torch.Tensor], views: int = 2) -> None:
        self.base, self.preprocess, self.views = base, preprocess, views

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, y = self.base[i]
        extra = [self.base.view(i, f"crop/{k + 1}") for k in range(self.views)]
        return tuple(self.preprocess(Image.fromarray(a)) for a in (img, *extra)), y


class Indexed(torch.utils.data.Dataset):
    """``(*item, index)``: the wrapped dataset's item with its index appended."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        item = self.ds[i]
        return (*item, i)

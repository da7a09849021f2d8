"""AugMix mixing (cifar.py ``aug()`` l.152-181; imagenet.py l.197-227) and the dataset wrapper that
yields (clean, augmix_1, augmix_2) for the consistency loss, with randomness keyed on
(seed, epoch, sample index) so a resumed run continues the same stream whatever the worker count."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .ops import DEFAULT_OPS, EXTRA_OPS, apply_op, sample_op


def sample_key(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator for one sample's augmentation in one epoch."""
    h = hashlib.blake2b(f"rba/v1/augmix/{seed}/{epoch}/{index}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(h, "little"))


def augment_and_mix(img: Image.Image, rng: np.random.Generator, preprocess: Callable[[Image.Image], torch.Tensor],
                    severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
                    all_ops: bool = False) -> torch.Tensor:
    """One AugMix view of a PIL image.

    ``width`` chains of ``depth`` ops each (``depth <= 0``: 1-3, drawn per chain), chain weights
    ``w ~ Dirichlet(alpha)``, skip weight ``m ~ Beta(alpha, alpha)``; the mix is taken after
    ``preprocess`` (ToTensor + Normalize), in float: ``(1 - m) * pre(x) + m * sum_i w_i * pre(chain_i(x))``.

    Returns:
        The (3, H, W) float tensor ``preprocess`` produces.
    """
    ops = DEFAULT_OPS + (EXTRA_OPS if all_ops else ())
    ws = rng.dirichlet([alpha] * width).astype(np.float32)
    m = np.float32(rng.beta(alpha, alpha))
    clean = preprocess(img)
    mix = torch.zeros_like(clean)
    for i in range(width):
        d = depth if depth > 0 else int(rng.integers(1, 4))
        aug = img
        for _ in range(d):
            aug = apply_op(aug, sample_op(rng, ops, severity))
        mix += float(ws[i]) * preprocess(aug)
    return (1 - float(m)) * clean + float(m) * mix


class AugMixDataset(torch.utils.data.Dataset):
    """Wraps a dataset of (PIL image, label): yields ``((clean, aug1, aug2), label)`` with ``jsd=True``,
    else ``(aug, label)``. Call :meth:`set_epoch` each epoch (the key includes it)."""

    def __init__(self, base, preprocess: Callable[[Image.Image], torch.Tensor], *, seed: int = 0,
                 severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0, all_ops: bool = False,
                 jsd: bool = True) -> None:
        self.base, self.preprocess, self.seed = base, preprocess, seed
        self.kw = {"severity": severity, "width": width, "depth": depth, "alpha": alpha, "all_ops": all_ops}
        self.jsd, self.epoch = jsd, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, y = self.base[i]
        rng = sample_key(self.seed, self.epoch, i)
        if not self.jsd:
            return augment_and_mix(img, rng, self.preprocess, **self.kw), y
        views = (self.preprocess(img), augment_and_mix(img, rng, self.preprocess, **self.kw),
                 augment_and_mix(img, rng, self.preprocess, **self.kw))
        return views, y

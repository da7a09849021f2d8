"""AugMix mixing (cifar.py ``aug()`` l.152-181; imagenet.py l.197-227) and the dataset wrapper that
yields (clean, augmix_1, augmix_2) for the consistency loss, with randomness keyed on
(seed, epoch, sample index) so a resumed run continues the same stream whatever the worker count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .._common import InputError
from ..data.training import sample_key
from .batched import encode_draws
from .ops import DEFAULT_OPS, EXTRA_OPS, OPS, OpDraw, apply_op

__all__ = ["AugMixDataset", "MixDraw", "augment_and_mix", "draw_mix", "mix_pil", "sample_key"]


@dataclass(frozen=True)
class MixDraw:
    """All random choices of one AugMix view: chain weights ``ws`` (W,), skip weight ``m``, and per chain
    slot ``op`` (W, D) indices into ``OPS`` (-1: the chain is shorter), ``level`` (W, D) in
    [0.1, severity) and ``sign`` (W, D) of +-1."""

    ws: np.ndarray
    m: float
    op: np.ndarray
    level: np.ndarray
    sign: np.ndarray

    @property
    def chains(self) -> tuple[tuple[OpDraw, ...], ...]:
        rows = zip(self.op, self.level, self.sign, strict=True)
        return tuple(tuple(OpDraw(OPS[o], float(lv), int(sg)) for o, lv, sg in zip(*row, strict=True) if o >= 0)
                     for row in rows)


def draw_mix(rng: np.random.Generator, severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
             all_ops: bool = False) -> MixDraw:
    """Draw one view: ``ws ~ Dirichlet(alpha)``, ``m ~ Beta(alpha, alpha)``, each chain's depth
    (``depth <= 0``: uniform over 1-3, per chain), and for every op slot an op uniformly (with replacement,
    as ``np.random.choice``), a level ``U(0.1, severity)`` and a random sign, as the release draws them.
    The release makes one NumPy call per choice; here a view's uniforms come in one block, which gives the
    same distribution at a tenth of the cost."""
    n_ops = len(DEFAULT_OPS) + (len(EXTRA_OPS) if all_ops else 0)
    ws = rng.dirichlet([alpha] * width).astype(np.float32)
    m = float(np.float32(rng.beta(alpha, alpha)))
    max_depth = depth if depth > 0 else 3
    depths = np.full(width, depth) if depth > 0 else rng.integers(1, 4, size=width)
    u = rng.random((3, width, max_depth))
    op = np.minimum((u[0] * n_ops).astype(np.int64), n_ops - 1)
    op[np.arange(max_depth)[None, :] >= depths[:, None]] = -1
    level = 0.1 + (severity - 0.1) * u[1]  # numpy's uniform(low, high) is low + (high - low) * random()
    sign = np.where(u[2] > 0.5, -1, 1)
    return MixDraw(ws, m, op, level, sign)


def mix_pil(img: Image.Image, draw: MixDraw, preprocess: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """Apply a drawn view to a PIL image: ``(1 - m) * pre(x) + m * sum_i w_i * pre(chain_i(x))``, mixed
    after ``preprocess`` (ToTensor + Normalize) in float, as the release does."""
    clean = preprocess(img)
    mix = torch.zeros_like(clean)
    for w, chain in zip(draw.ws, draw.chains, strict=True):
        aug = img
        for op in chain:
            aug = apply_op(aug, op)
        mix += float(w) * preprocess(aug)
    return (1 - draw.m) * clean + draw.m * mix


def augment_and_mix(img: Image.Image, rng: np.random.Generator, preprocess: Callable[[Image.Image], torch.Tensor],
                    severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
                    all_ops: bool = False) -> torch.Tensor:
    """One AugMix view of a PIL image (the release's ``aug()``): :func:`draw_mix` then :func:`mix_pil`.

    Returns:
        The (3, H, W) float tensor ``preprocess`` produces.
    """
    return mix_pil(img, draw_mix(rng, severity, width, depth, alpha, all_ops), preprocess)


class AugMixDataset(torch.utils.data.Dataset):
    """Wraps a dataset of (PIL image, label) (e.g. :class:`~robustbench_augmix.data.training.TrainSet`).

    Per-image path (``batched=False``): yields ``((clean, aug1, aug2), label)`` with ``jsd=True``,
    ``(aug, label)`` with ``jsd=False``, ``(clean, label)`` with ``augmix=False``; tensors from
    ``preprocess``. Batched path (``batched=True``): yields ``(uint8 (3, H, W) tensor, draws, label)``,
    the draws encoded by :func:`~robustbench_augmix.augmix.batched.encode_draws`, for
    :func:`~robustbench_augmix.augmix.batched.augmix_batch` on the training device. Both paths take the
    same draws from (seed, epoch, index). Call :meth:`set_epoch` each epoch (the key includes it).
    """

    def __init__(self, base, preprocess: Callable[[Image.Image], torch.Tensor] | None = None, *, seed: int = 0,
                 severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0, all_ops: bool = False,
                 jsd: bool = True, augmix: bool = True, batched: bool = False) -> None:
        if not batched and preprocess is None:
            raise InputError("the per-image path needs preprocess (ToTensor + Normalize)")
        self.base, self.preprocess, self.seed = base, preprocess, seed
        self.kw = {"severity": severity, "width": width, "depth": depth, "alpha": alpha, "all_ops": all_ops}
        self.views = (2 if jsd else 1) if augmix else 0
        self.jsd, self.batched, self.epoch = jsd, batched, 0
        self.max_depth = depth if depth > 0 else 3

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def draws(self, i: int) -> list[MixDraw]:
        rng = sample_key(self.seed, self.epoch, i)
        return [draw_mix(rng, **self.kw) for _ in range(self.views)]

    def __getitem__(self, i: int):
        img, y = self.base[i]
        draws = self.draws(i)
        if self.batched:
            x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
            return x, encode_draws(draws, self.kw["width"], self.max_depth), y
        img = img if isinstance(img, Image.Image) else Image.fromarray(img)
        mixed = [mix_pil(img, d, self.preprocess) for d in draws]
        if self.views == 1:
            return mixed[0], y
        if self.views == 0:
            return self.preprocess(img), y
        return (self.preprocess(img), *mixed), y

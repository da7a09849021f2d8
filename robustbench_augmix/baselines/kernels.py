"""Batched kernels of the baseline methods over normalised ``(N, C, H, W)`` float batches, each with its
sampler apart: a sampler draws the parameters from a generator, the kernel is deterministic given them.

Cutout is drawn per image (its centre from the image's key); Mixup and CutMix are drawn per batch (one
lambda, one box and one partner permutation per batch, as Zhang et al. and Yun et al. define them), from
a generator the trainer keys on (seed, step, rank).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._common import InputError

__all__ = ["BoxMix", "cutmix", "cutout", "draw_cutmix", "draw_cutout", "draw_mixup", "mixup", "mixed_cross_entropy"]


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise InputError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------- cutout
def draw_cutout(rngs: Sequence[np.random.Generator], height: int, width: int) -> torch.Tensor:
    """One centre per image, uniform over the pixels (``np.random.randint(h)``, ``randint(w)`` in
    util/cutout.py): (N, 2) int64 ``(row, column)``."""
    return torch.tensor([[int(r.integers(height)), int(r.integers(width))] for r in rngs],
                        dtype=torch.int64).reshape(len(rngs), 2)


def cutout(x: torch.Tensor, centres: torch.Tensor, length: int) -> torch.Tensor:
    """Zero one ``length`` x ``length`` square per image: rows ``[cy - length//2, cy + length//2)`` and the
    same for columns, clipped at the borders (DeVries & Taylor's mask), all channels.

    Args:
        x: (N, C, H, W) float, normalised (Cutout zeroes after Normalize, i.e. paints the dataset mean).
        centres: (N, 2) int64 from :func:`draw_cutout`.
    Returns:
        A new (N, C, H, W) tensor; ``x`` is not written.
    """
    _check(x)
    n, _, h, w = x.shape
    c = centres.to(x.device)
    half = length // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_r = (rows[None] >= c[:, :1] - half) & (rows[None] < c[:, :1] + half)  # (N, H)
    in_c = (cols[None] >= c[:, 1:] - half) & (cols[None] < c[:, 1:] + half)  # (N, W)
    hole = (in_r[:, :, None] & in_c[:, None, :])[:, None]                    # (N, 1, H, W)
    return x.masked_fill(hole, 0.0)


# ------------------------------------------------------------------------------------- mixup, cutmix
@dataclass(frozen=True)
class BoxMix:
    """One batch's draw: the mixing weight ``lam`` of the batch's own images, the partner permutation
    ``perm`` (N,), and for CutMix the pasted box ``(top, left, bottom, right)`` (rows and columns,
    bottom/right exclusive; None for Mixup). For CutMix ``lam`` is 1 - (box area) / (H W), recomputed from
    the box actually pasted. ``lam == 1`` and no box: the batch is left as it is (CutMix skipped)."""

    lam: float
    perm: torch.Tensor
    box: tuple[int, int, int, int] | None = None


def draw_mixup(rng: np.random.Generator, n: int, alpha: float) -> BoxMix:
    """``lam ~ Beta(alpha, alpha)`` (``alpha <= 0``: 1, no mixing) and a uniform permutation, as mixup_data."""
    lam = float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0
    return BoxMix(lam, torch.from_numpy(rng.permutation(n)))


def draw_cutmix(rng: np.random.Generator, n: int, height: int, width: int, alpha: float, prob: float) -> BoxMix:
    """With probability ``prob``: ``lam ~ Beta(alpha, alpha)``, a box of side ``int(sqrt(1 - lam) * side)``
    centred at a uniform pixel and clipped to the image (CutMix-PyTorch ``rand_bbox``), then ``lam``
    recomputed from the clipped box; otherwise no box (``lam = 1``)."""
    if rng.random() >= prob:
        return BoxMix(1.0, torch.arange(n))
    lam = float(rng.beta(alpha, alpha))
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = int(np.clip(cy - ch // 2, 0, height)), int(np.clip(cy + ch // 2, 0, height))
    left, right = int(np.clip(cx - cw // 2, 0, width)), int(np.clip(cx + cw // 2, 0, width))
    area = (bottom - top) * (right - left)
    return BoxMix(1.0 - area / (height * width), torch.from_numpy(rng.permutation(n)), (top, left, bottom, right))


def mixup(x: torch.Tensor, draw: BoxMix) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]`` for a (N, C, H, W) batch; a new tensor."""
    _check(x)
    return torch.lerp(x[draw.perm.to(x.device)], x, draw.lam)


def cutmix(x: torch.Tensor, draw: BoxMix) -> torch.Tensor:
    """``x`` with ``draw.box`` replaced by the same box of ``x[perm]`` (all channels); a new tensor."""
    _check(x)
    out = x.clone()
    if draw.box is not None:
        t, left, b, r = draw.box
        out[:, :, t:b, left:r] = x[draw.perm.to(x.device), :, t:b, left:r]
    return out


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, draw: BoxMix) -> torch.Tensor:
    """``lam CE(logits, y) + (1 - lam) CE(logits, y[perm])``: the loss of both papers, equal to the
    cross-entropy against the labels mixed with the same weight."""
    loss = F.cross_entropy(logits, y)
    if draw.lam == 1.0:
        return loss
    return draw.lam * loss + (1.0 - draw.lam) * F.cross_entropy(logits, y[draw.perm.to(y.device)])

"""The Jensen-Shannon consistency loss of AugMix (cifar.py l.217-236, imagenet.py l.272-291)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._common import InputError


def jsd_loss(logits: torch.Tensor, target: torch.Tensor, lam: float = 12.0, splits: int = 3) -> torch.Tensor:
    """Cross-entropy on the clean view plus ``lam`` x JS(p_clean, p_aug1, ..., p_aug{splits-1}).

    Args:
        logits: ((splits * B), K) from one forward pass over ``cat([clean, aug1, aug2])``.
        target: (B,) class indices of the clean view.
        lam: the JS weight (12 in the paper's code, hard-coded there).
    Returns:
        A scalar: ``CE(clean) + lam * mean_i KL(p_i || M)`` with ``M = mean_i p_i`` clamped to
        [1e-7, 1] before the log, KL averaged over the batch (``batchmean``). Gradients flow through all
        views and through M, as in the release.
    """
    if logits.shape[0] % splits:
        raise InputError(f"logits hold {logits.shape[0]} rows, not a multiple of {splits} views")
    parts = logits.split(logits.shape[0] // splits)
    loss = F.cross_entropy(parts[0], target)
    probs = [F.softmax(p, dim=1) for p in parts]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
    js = sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / splits
    return loss + lam * js

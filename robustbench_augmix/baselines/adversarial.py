"""PGD adversarial examples in the L-inf ball (Madry et al. 2018), for adversarial training.

The attack works on pixel values in [0, 1]: ``delta`` starts uniform in [-eps, eps] (random start), takes
``steps`` signed-gradient steps of ``step_size`` on the cross-entropy, and after each step is projected
back onto the ball and onto the image range. Gradients are taken for ``delta`` only
(``torch.autograd.grad``), so the model's ``.grad`` is untouched, and batch-norm running statistics are
held still during the attack steps (the training step that follows updates them once, as for any batch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pgd_linf"]


@contextlib.contextmanager
def _still_norm_stats(model: torch.nn.Module):
    """Batch-norm layers keep normalising with batch statistics but stop updating their running ones."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved, strict=True):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


def pgd_linf(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, mean: Sequence[float],
             std: Sequence[float], epsilon: float, step_size: float, steps: int, random_start: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The PGD example of a normalised batch.

    Args:
        model: takes normalised (N, 3, H, W) input.
        x: (N, 3, H, W) float, normalised with ``mean`` / ``std`` (the ball is in [0, 1] pixel units).
        y: (N,) class indices.
        generator: a CPU generator for the random start (drawn on the CPU, then moved: the same on any
            device).
    Returns:
        The adversarial batch, normalised like ``x``, detached; ``|x_adv - x|`` is at most ``epsilon`` in
        pixel units and every pixel stays in [0, 1].
    """
    dev = x.device
    m = torch.tensor(mean, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
    x01 = (x.detach() * s + m).clamp_(0, 1)
    if random_start:
        delta = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(dev).mul_(2 * epsilon).sub_(epsilon)
    else:
        delta = torch.zeros_like(x01)
    delta = (x01 + delta).clamp_(0, 1).sub_(x01)
    with _still_norm_stats(model):
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((x01 + delta - m) / s).float(), y)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = delta.detach().add_(grad.sign(), alpha=step_size).clamp_(-epsilon, epsilon)
                delta = (x01 + delta).clamp_(0, 1).sub_(x01)
    return ((x01 + delta - m) / s).detach()

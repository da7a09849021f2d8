"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper), speckle."""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import stats

from ._ops import round_levels_u8
from ._registry import register


def _normal(d, h, w, p):
    return {"noise": d.normal(3, h, w)}


def _uniform(d, h, w, p):
    return {"u": d.uniform(3, h, w)}


@register("gaussian_noise", "noise", sample=_normal)
def gaussian_noise(x, p, draws):
    """``x + N(0, scale)`` per pixel and channel (IN l. 249-253)."""
    return (x + p.scale * draws["noise"]).clamp(0, 1)


@register("speckle_noise", "noise", sample=_normal)
def speckle_noise(x, p, draws):
    """``x + x * N(0, scale)`` per pixel and channel (IN l. 270-274)."""
    return (x + x * (p.scale * draws["noise"])).clamp(0, 1)


@register("impulse_noise", "noise", sample=_uniform)
def impulse_noise(x, p, draws):
    """Salt and pepper per element (skimage ``random_noise(mode='s&p')``, IN l. 263-267): each value
    is replaced with probability ``amount``, by 1 or 0 with equal odds."""
    u = draws["u"]
    out = torch.where(u < p.amount / 2, torch.ones_like(x), x)
    return torch.where((u >= p.amount / 2) & (u < p.amount), torch.zeros_like(x), out)


@functools.lru_cache(maxsize=32)
def _poisson_tables(photons: float) -> tuple[np.ndarray, np.ndarray]:
    """For the 256 input levels l, the CDF of Poisson(l / 255 * photons) over k = 0..K-1, and a
    guide table: for each of G equal bins of u, the smallest k whose CDF reaches the bin's start."""
    lam = np.arange(256) / 255.0 * photons
    kmax = int(photons + 12 * np.sqrt(photons) + 30)
    k = np.arange(kmax)
    cdf = stats.poisson.cdf(k[None, :], lam[:, None])
    cdf[:, -1] = 1.0
    g = 1024
    starts = np.arange(g) / g
    guide = np.stack([np.searchsorted(row, starts, side="left") for row in cdf])
    return cdf, guide


@register("shot_noise", "noise", sample=lambda d, h, w, p: {"u": d.uniform(3, h, w, dtype=torch.float64)})
def shot_noise(x, p, draws):
    """``Poisson(x * photons) / photons`` (IN l. 256-260), sampled exactly by inverting the CDF.

    The rate is taken at the input's 8-bit level (the reference always receives 8-bit images), which
    lets one table per level serve every pixel: a guide table gives the start and a short search
    finishes. Off-grid float inputs are rounded to the nearest level first.
    """
    cdf_np, guide_np = _poisson_tables(float(p.photons))
    cdf = torch.as_tensor(cdf_np, device=x.device)
    guide = torch.as_tensor(guide_np, device=x.device)
    kk = cdf.shape[1]
    level = round_levels_u8(x).long().reshape(-1)
    u = draws["u"].reshape(-1)
    g = guide.shape[1]
    k = guide[level, (u * g).long().clamp_(max=g - 1)]
    flat = cdf.reshape(-1)
    base = level * kk
    # Advance k while CDF(k) < u; after the guide start, almost every element needs 0 or 1 step.
    idx = torch.arange(k.numel(), device=x.device)
    while idx.numel():
        need = flat[base[idx] + k[idx]] < u[idx]
        idx = idx[need]
        k[idx] += 1
    return (k.to(x.dtype) / p.photons).reshape(x.shape).clamp(0, 1)

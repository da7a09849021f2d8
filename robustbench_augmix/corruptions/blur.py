"""Blur corruptions: defocus, glass, motion, zoom, gaussian."""

from __future__ import annotations

import torch

from ._ops import (
    clipped_zoom,
    conv2d_same,
    disk_kernel,
    floor_levels,
    gaussian_filter,
    motion_blur_batch,
    zoom_factors,
)
from ._registry import register


@register("defocus_blur")
def defocus_blur(x, p, draws):
    """Correlate with the anti-aliased ``disk(radius, alias_blur)`` (IN l. 314-325), BORDER_REFLECT_101."""
    return conv2d_same(x, disk_kernel(float(p.radius), float(p.alias_blur)), "reflect101").clamp(0, 1)


@register("gaussian_blur")
def gaussian_blur(x, p, draws):
    """skimage ``gaussian(x, sigma)``: edge-replicated borders, truncate 4 (IN l. 289-293); a ``truncate``
    parameter overrides it (the -P sequences use 6 or 7)."""
    return gaussian_filter(x, float(p.sigma), "edge", truncate=float(p.get("truncate", 4.0))).clamp(0, 1)


def _glass_region(h: int, w: int, delta: int) -> tuple[range, range]:
    # The reference loops h over range(S - delta, delta, -1): rows delta+1 .. S-delta, descending.
    return range(delta + 1, h - delta + 1), range(delta + 1, w - delta + 1)


def _sample_glass(d, h, w, p):
    delta, iters = int(p.max_delta), int(p.iterations)
    rows, cols = _glass_region(h, w, delta)
    # np.random.randint(-delta, delta, size=(2,)) per visited pixel: (dx, dy) in [-delta, delta - 1].
    return {"offsets": d.integers(-delta, delta, iters, len(rows), len(cols), 2)}


def glass_shuffle(x: torch.Tensor, offsets: torch.Tensor, delta: int) -> torch.Tensor:
    """One pass of the reference's local pixel shuffle, vectorised.

    The reference visits rows ``S-delta .. delta+1`` and, in each, columns ``S-delta .. delta+1``
    (both descending) and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with (h', w') = (h + dy,
    w + dx). On numpy views that statement *copies* x[h', w'] into x[h, w] and leaves x[h', w'] as
    it is. So a pixel takes the value its source holds at that moment: the already-updated value if
    the source was visited earlier in this pass (it lies later in raster order), else the original.
    Following those links to the first source not yet visited gives every pixel's value at once;
    the chains are resolved by pointer jumping.

    Args:
        x: (N, C, H, W).
        offsets: (N, R, Cc, 2) int64 (dx, dy) for the region's rows and columns in ascending order.
    """
    n, c, h, w = x.shape
    rows, cols = _glass_region(h, w, delta)
    dev = x.device
    rr = torch.arange(rows.start, rows.stop, device=dev).view(1, -1, 1)
    cc = torch.arange(cols.start, cols.stop, device=dev).view(1, 1, -1)
    dx, dy = offsets[..., 0].to(dev), offsets[..., 1].to(dev)
    sr, sc = rr + dy, cc + dx
    p = (rr * w + cc).expand(n, -1, -1)
    q = sr * w + sc
    in_region = (sr >= rows.start) & (sr < rows.stop) & (sc >= cols.start) & (sc < cols.stop)
    linked = in_region & (q > p)
    ident = torch.arange(h * w, device=dev).expand(n, -1)
    nxt = ident.clone()
    nxt.scatter_(1, p.reshape(n, -1), q.reshape(n, -1))
    jump = ident.clone()
    jump.scatter_(1, p.reshape(n, -1), torch.where(linked, q, p).reshape(n, -1))
    while True:
        nj = jump.gather(1, jump)
        if torch.equal(nj, jump):
            break
        jump = nj
    src = nxt.gather(1, jump)
    flat = x.reshape(n, c, h * w)
    return flat.gather(2, src.unsqueeze(1).expand(n, c, -1)).reshape(n, c, h, w)


@register("glass_blur", sample=_sample_glass)
def glass_blur(x, p, draws):
    """Gaussian blur, floor to 8 bits, ``iterations`` local shuffles, Gaussian blur (IN l. 296-311).

    The loop bounds use the image's own size where the reference hard-codes the suite's (224/32/64).
    """
    sigma, delta = float(p.sigma), int(p.max_delta)
    y = floor_levels(gaussian_filter(x, sigma, "edge"))
    for it in range(int(p.iterations)):
        y = glass_shuffle(y, draws["offsets"][:, it], delta)
    return gaussian_filter(y, sigma, "edge").clamp(0, 1)


@register("motion_blur", sample=lambda d, h, w, p: {"angle": d.scalars(-45, 45)})
def motion_blur(x, p, draws):
    """ImageMagick ``-motion-blur radius x sigma + angle`` with angle ~ U(-45, 45) (IN l. 328-343),
    written out at 8 bits as ImageMagick does (it floors). An ``angle`` parameter fixes the angle for the
    batch (a -P frame's)."""
    angle = torch.full((len(x),), float(p["angle"]), dtype=torch.float64) if "angle" in p else draws["angle"]
    return floor_levels(motion_blur_batch(x, float(p.radius), float(p.sigma), angle))


@register("zoom_blur")
def zoom_blur(x, p, draws):
    """Mean of the image and its centre zooms by every factor in ``np.arange(start, stop, step)``
    (IN l. 346-359); 1.0 is among the factors, so the image itself counts twice."""
    zs = zoom_factors(p.start, p.stop, p.step)
    out = torch.zeros_like(x)
    for z in zs:
        out += clipped_zoom(x, float(z))
    return ((x + out) / (len(zs) + 1)).clamp(0, 1)

"""Weather corruptions: snow, frost, fog, spatter."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import _frost
from ._ops import clipped_zoom, floor_levels, gray, motion_blur_batch, plasma_fractal
from ._registry import register


def _sample_snow(d, h, w, p):
    # Reference order: the normal field, then the angle (IN l. 410-418).
    return {"flakes": d.normal(1, h, w), "angle": d.scalars(-135, -45)}


@register("snow", "weather", sample=_sample_snow)
def snow(x, p, draws):
    """Snow (IN l. 406-431): a thresholded, zoomed normal field, motion-blurred at 8 bits by an
    angle ~ U(-135, -45), added twice (once rotated 180 degrees) to a brightened, greyed image."""
    layer = p.loc + p.scale * draws["flakes"].to(x.dtype)
    layer = clipped_zoom(layer, float(p.zoom))
    layer = torch.where(layer < p.threshold, torch.zeros_like(layer), layer)
    layer = floor_levels(layer)  # PIL 'L' image of np.uint8(clip(.) * 255), saved as PNG
    layer = floor_levels(motion_blur_batch(layer, float(p.blur_radius), float(p.blur_sigma), draws["angle"]))
    b = p.blend
    x = b * x + (1 - b) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, dims=(-2, -1))).clamp(0, 1)


def _frost_textures(p, h, w):
    # At the suite's native size the table's texture scale applies as is; at other sizes the
    # texture is scaled with the image so that frost looks the same relative to the picture.
    scale = float(p.texture_scale) * max(h, w) / p.image_size
    return _frost.scaled_textures(round(scale, 6), h, w)


def _sample_frost(d, h, w, p):
    tex = _frost_textures(p, h, w)
    idx = d.choices(5)  # np.random.randint(5): frost6 never chosen
    starts = []
    for i, g in enumerate(d.cpu):
        fh, fw = tex[int(idx[i])].shape[:2]
        # np.random.randint(0, fh - S): the start is in [0, fh - S - 1]
        ys = int(torch.randint(max(fh - h, 1), (1,), generator=g))
        xs = int(torch.randint(max(fw - w, 1), (1,), generator=g))
        starts.append((ys, xs))
    return {"texture": idx, "start": torch.tensor(starts, dtype=torch.int64)}


@register("frost", "weather", sample=_sample_frost)
def frost(x, p, draws):
    """``clip(a * x + b * crop(frost texture))`` on the 0-255 scale (IN l. 390-403)."""
    n, _, h, w = x.shape
    tex = _frost_textures(p, h, w)
    crops = np.stack([
        tex[int(t)][ys : ys + h, xs : xs + w]
        for t, (ys, xs) in zip(draws["texture"].tolist(), draws["start"].tolist(), strict=True)
    ])
    f = torch.from_numpy(crops).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255
    return (p.image_weight * x + p.frost_weight * f).clamp(0, 1)


def _fog_mapsize(p, h, w) -> int:
    """The table's map size at the suite's native size; at other sizes the map scales with the image
    (next power of two of ``mapsize * size / native``, and at least covering the image)."""
    side = max(h, w)
    want = max(math.ceil(p.mapsize * side / p.image_size), side)
    return 1 << (want - 1).bit_length()


def _sample_fog(d, h, w, p):
    return {"plasma": plasma_fractal(d, _fog_mapsize(p, h, w), float(p.wibble_decay))}


@register("fog", "weather", sample=_sample_fog)
def fog(x, p, draws):
    """Add ``thickness`` x a periodic plasma fractal, rescale by ``max / (max + thickness)`` with
    max the image's global maximum (IN l. 381-387)."""
    h, w = x.shape[-2:]
    t = float(p.thickness)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + t * draws["plasma"][:, None, :h, :w].to(x.dtype)
    return (y * mx / (mx + t)).clamp(0, 1)

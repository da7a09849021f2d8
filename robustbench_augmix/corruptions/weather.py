"""Weather corruptions: snow, frost, fog, spatter."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import _frost
from ._ops import clipped_zoom, floor_levels, gaussian_filter, gray, motion_blur_batch, plasma_fractal
from ._registry import register


def _sample_snow(d, h, w, p):
    # Reference order: the normal field, then the angle (IN l. 410-418).
    return {"flakes": d.normal(1, h, w), "angle": d.scalars(-135, -45)}


@register("snow", sample=_sample_snow)
def snow(x, p, draws):
    """Snow (IN l. 406-431): a thresholded, zoomed normal field, motion-blurred at 8 bits by an
    angle ~ U(-135, -45), added twice (once rotated 180 degrees) to a brightened, greyed image. An ``angle``
    parameter fixes the blur's angle for the batch (a -P frame's)."""
    layer = p.loc + p.scale * draws["flakes"].to(x.dtype)
    layer = clipped_zoom(layer, float(p.zoom))
    layer = torch.where(layer < p.threshold, torch.zeros_like(layer), layer)
    layer = floor_levels(layer)  # PIL 'L' image of np.uint8(clip(.) * 255), saved as PNG
    angle = torch.full((len(x),), float(p["angle"]), dtype=torch.float64) if "angle" in p else draws["angle"]
    layer = floor_levels(motion_blur_batch(layer, float(p.blur_radius), float(p.blur_sigma), angle))
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


@register("frost", sample=_sample_frost)
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


@register("fog", sample=_sample_fog)
def fog(x, p, draws):
    """Add ``thickness`` x a periodic plasma fractal, rescale by ``max / (max + thickness)`` with
    max the image's global maximum (IN l. 381-387)."""
    h, w = x.shape[-2:]
    t = float(p.thickness)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + draws["plasma"][:, None, :h, :w].to(x.dtype).mul_(t)
    return y.mul_(mx).div_(mx + t).clamp_(0, 1)  # (y * mx / (mx + t)).clamp(0, 1), in place


# -------------------------------------------------------------------------------------- spatter
# OpenCV's 8-bit Canny, L2 5x5 chamfer distance, histogram equalisation and box blur, as the spatter
# script calls them (cv2 defaults: Sobel with replicated borders inside Canny, REFLECT_101 elsewhere).
_EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])  # IN l. 449 (correlated, not flipped)
_TG22 = 13573  # round(tan(22.5 deg) * 2^15), OpenCV canny.cpp CANNY_SHIFT = 15
# cv2.DIST_L2 with a 5x5 mask: a = 1, b = 1.4, c = 2.1969 (OpenCV distanceTransform docs). OpenCV
# builds with IPP (the PyPI wheels) sum these in float32; the portable path would use 16-bit fixed point.
_CHAMFER_A, _CHAMFER_B, _CHAMFER_C = 1.0, 1.4, 2.1969  # axis, diagonal and knight moves
_CHAMFER_CHUNK = 4 * 224 * 224  # pixels per CPU part
_LABEL_2D = np.zeros((3, 3, 3), bool)
_LABEL_2D[1] = True  # 8-connected within an image of an (N, H, W) stack, never across images


def _sobel(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel derivatives (x, y) of a padded (N, 1, H+2, W+2) float batch: (N, 1, H, W) each, as
    ``F.conv2d`` with [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] and its transpose gives them, in slices (a
    one-channel convolution is 20x slower on the CPU)."""
    gx = f[..., 2:] - f[..., :-2]
    gy = f[..., 2:, :] - f[..., :-2, :]
    return gx[..., :-2, :] + 2 * gx[..., 1:-1, :] + gx[..., 2:, :], gy[..., :-2] + 2 * gy[..., 1:-1] + gy[..., 2:]


def _emboss(f: torch.Tensor) -> torch.Tensor:
    """Correlation of a padded (N, 1, H+2, W+2) batch with ``_EMBOSS``, in slices."""
    h, w = f.shape[-2] - 2, f.shape[-1] - 2
    out = torch.zeros_like(f[..., 1:-1, 1:-1])
    for (i, j), k in np.ndenumerate(_EMBOSS):
        if k:
            out += float(k) * f[..., i:i + h, j:j + w]
    return out


def canny_u8(img: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (aperture 3, L1 gradient) on integer-valued (N, 1, H, W) levels.

    Returns a bool edge map. Non-maximum suppression follows OpenCV's integer sector test; hysteresis
    grows the strong edges through the candidates 8-connectedly until nothing changes.
    """
    f = F.pad(img.to(torch.float32), (1, 1, 1, 1), mode="replicate")
    dx, dy = (d.to(torch.int32) for d in _sobel(f))
    h, w = dx.shape[-2:]
    x, y = dx.abs(), dy.abs()
    mag = x + y
    mp = F.pad(mag, (1, 1, 1, 1))  # neighbours are views of one zero-padded copy

    def nb(ddy, ddx):
        return mp[..., 1 + ddy : 1 + ddy + h, 1 + ddx : 1 + ddx + w]

    tg22x = x * _TG22
    y <<= 15
    horiz = y < tg22x
    vert = y > tg22x.add_(x << 16)  # tg67x = tg22x + (x << 16)
    anti = (dx ^ dy) < 0  # opposite signs: the anti-diagonal pair
    diag = torch.where(anti, (mag > nb(-1, 1)) & (mag > nb(1, -1)), (mag > nb(-1, -1)) & (mag > nb(1, 1)))
    keep = torch.where(horiz, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
                       torch.where(vert, (mag > nb(-1, 0)) & (mag >= nb(1, 0)), diag))
    keep &= mag > low
    edges = keep & (mag > high)
    if img.device.type == "cpu":
        # Growth from the strong pixels through the candidates = the 8-connected components of the
        # candidates that hold a strong pixel: scipy labels the batch in one call (a structure that does not
        # connect images), and a table of the labels that hold a strong pixel picks them.
        from scipy import ndimage

        lab, count = ndimage.label(keep[:, 0].numpy(), structure=_LABEL_2D)
        held = np.zeros(count + 1, bool)
        held[lab[edges[:, 0].numpy()]] = True  # strong pixels are candidates: never label 0
        return torch.from_numpy(held[lab]).unsqueeze(1)
    while True:
        grown = keep & (F.max_pool2d(edges.to(torch.float32), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance_l2_5(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """``min(cv2.distanceTransform(src, DIST_L2, 5), cap)`` where ``zero`` marks src == 0 (N, 1, H, W).

    Shortest chamfer paths by parallel relaxation from 0 on the edges and ``cap`` elsewhere (which is
    the capped distance at once for every pixel at least ``cap`` away); a path of cost below the cap
    has fewer than ``cap`` + 1 steps, so that many rounds suffice. Outside the image is infinitely far.
    The moves of one weight are taken together as maxima of shifted slices of the negated field; on
    the CPU the batch goes in parts of 4 images of 224 px: alone, one image at a time is fastest (the temporaries
    stay in L2: 4.1 against 6.0 ms per image for parts of 8), but side by side on two workers the Python calls
    between the operations hold the GIL, and parts of 4 were fastest there (3.5 against 4.6 ms per spatter image
    for parts of 1, 3.7 for parts of 8).
    """
    step = max(1, _CHAMFER_CHUNK // zero[0].numel())
    if zero.device.type == "cpu" and len(zero) > step:
        return torch.cat([chamfer_distance_l2_5(part, cap) for part in zero.split(step)])
    h, w = zero.shape[-2:]
    e = torch.where(zero, 0.0, -float(cap)).to(torch.float32)  # negated distances: maxima are minima
    mx = torch.maximum
    for _ in range(int(math.ceil(cap)) + 1):
        ep = F.pad(e, (2, 2, 2, 2), value=-math.inf)
        rows = mx(ep[..., 1:h + 1, :], ep[..., 3:h + 3, :])  # rows -1, +1: (N, 1, H, W + 4)
        cols = mx(ep[..., 1:w + 1], ep[..., 3:w + 3])  # cols -1, +1: (N, 1, H + 4, W)
        axis = mx(rows[..., 2:w + 2], cols[..., 2:h + 2, :])
        diag = mx(rows[..., 1:w + 1], rows[..., 3:w + 3])
        k1 = mx(ep[..., 0:w], ep[..., 4:w + 4])  # cols -2, +2, then rows -1, +1
        k1 = mx(k1[..., 1:h + 1, :], k1[..., 3:h + 3, :])
        k2 = mx(ep[..., 0:h, :], ep[..., 4:h + 4, :])  # rows -2, +2, then cols -1, +1
        k2 = mx(k2[..., 1:w + 1], k2[..., 3:w + 3])
        ne = mx(mx(e, axis.sub_(_CHAMFER_A)), diag.sub_(_CHAMFER_B))
        ne = mx(ne, mx(k1, k2).sub_(_CHAMFER_C))
        if torch.equal(ne, e):
            break
        e = ne
    return -e


def _box3(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sum over a 3x3 window with REFLECT_101 borders, separably in ``dtype``: exact for float32 input
    in float64 and for 8-bit levels in float32, so in any order."""
    xp = F.pad(x.to(dtype), (1, 1, 1, 1), mode="reflect")
    r = xp[..., :-2] + xp[..., 1:-1] + xp[..., 2:]
    return r[..., :-2, :] + r[..., 1:-1, :] + r[..., 2:, :]


def equalize_hist_u8(v: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image of integer levels (N, 1, H, W): the LUT is
    ``round((cdf(v) - cdf(v0)) * float32(255 / (total - hist[v0])))``, v0 the lowest level present."""
    n = v.shape[0]
    flat = v.reshape(n, -1).to(torch.int64)
    hist = torch.zeros(n, 256, dtype=torch.int64, device=v.device).scatter_add_(1, flat, torch.ones_like(flat))
    cdf = hist.cumsum(1)
    v0 = (hist > 0).to(torch.int64).argmax(1, keepdim=True)
    h0 = hist.gather(1, v0)
    total = flat.shape[1]
    scale = torch.tensor(255.0, dtype=torch.float32, device=v.device) / (total - h0).clamp(min=1).to(torch.float32)
    lut = ((cdf - h0).to(torch.float32) * scale).round().clamp(0, 255)
    lut = torch.where(h0 == total, v0.to(torch.float32).expand_as(lut), lut)  # one level: all pixels keep it
    return lut.gather(1, flat).reshape(v.shape)


def liquid_layer(normal: torch.Tensor, p) -> torch.Tensor:
    """The script's liquid layer from a standard normal (N, 1, H, W) field: N(loc, scale), skimage's Gaussian
    filter (edge borders), values below ``threshold`` set to 0. float64."""
    layer = p.loc + p.scale * normal.to(torch.float64)
    layer = gaussian_filter(layer, float(p.sigma), mode="edge")
    return torch.where(layer < p.threshold, torch.zeros_like(layer), layer)


def water_mask(layer: torch.Tensor, intensity: float) -> torch.Tensor:
    """The water drops of a liquid layer (IN l. 442-461): the layer's 8 bits, Canny edges, the capped chamfer
    distance, box blur, equalisation, emboss, box blur; times the layer's 8 bits, scaled to ``intensity`` at its
    maximum. (N, 1, H, W) float32."""
    l8 = torch.remainder(torch.floor(layer * 255), 256)  # astype(uint8) truncates (and wraps above 255)
    edges = canny_u8(l8, 50, 150)
    dist = chamfer_distance_l2_5(edges, 20.0)  # 255 - Canny is 0 exactly on the edges
    dist = torch.floor((_box3(dist) * (1.0 / 9)).to(torch.float32))  # blur float32, then astype(uint8)
    dist = equalize_hist_u8(dist)
    emb = _emboss(F.pad(dist.to(torch.float32), (1, 1, 1, 1), mode="reflect")).clamp(0, 255)
    dist = torch.round(_box3(emb, torch.float32) / 9)  # 8-bit box blur rounds
    m = l8.to(torch.float32) * dist
    mx = m.amax(dim=(-2, -1), keepdim=True)
    return torch.where(mx > 0, m / mx.clamp(min=1e-30), torch.zeros_like(m)) * float(intensity)


def add_water(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``clip(x + m * color)``, color (175, 238, 238) / 255 in the image's channel order (pale turquoise)."""
    color = torch.tensor([175 / 255, 238 / 255, 238 / 255], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x + m.to(x.dtype) * color).clamp(0, 1)


def _sample_spatter(d, h, w, p):
    return {"liquid": d.normal(1, h, w)}  # np.random.normal(size=(H, W)) (IN l. 438)


@register("spatter", sample=_sample_spatter)
def spatter(x, p, draws):
    """Spatter (IN l. 434-486): a blurred, thresholded normal field drawn as water (severities with
    mode 0: Canny edges -> chamfer distance -> equalised emboss, pale turquoise) or mud (mode 1)."""
    layer = liquid_layer(draws["liquid"], p)
    if int(p.mode) == 0:
        return add_water(x, water_mask(layer, float(p.intensity)))
    mud = gaussian_filter((layer > p.threshold).to(torch.float32), float(p.intensity), mode="edge")
    mud = torch.where(mud < 0.8, torch.zeros_like(mud), mud).to(x.dtype)
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * (1 - mud) + color * mud).clamp(0, 1)

"""The AugMix operations as batched tensor kernels, each reproducing Pillow's result bit for bit.

Images are float tensors ``(B, 3, H, W)`` holding the uint8 values 0..255, rounded after every operation
where Pillow rounds: the LUT ops (autocontrast, equalize, posterize, solarize), the bilinear affine ops
(Pillow's pixel-centre sampling, edge clamping and truncation, in float64) and the four ``--all-ops``
enhance ops (a blend with a degenerate image in float32, as ``ImageEnhance`` does). Every kernel takes
``(x, magnitudes, signs)``: per-image magnitudes from :data:`~robustbench_augmix.augmix.ops.OP_TABLE`'s
formulas, and +-1 signs. They are tested against Pillow in tests/test_augmix.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------ LUT operations
def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) integer-valued float, lut (B, 3, 256) → lut applied per image and channel."""
    b, c, h, w = x.shape
    idx = x.reshape(b, c, h * w).long()
    return torch.gather(lut.to(x.dtype), 2, idx).reshape(b, c, h, w)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    idx = x.reshape(b * c, h * w).long()
    hist = torch.zeros((b * c, 256), dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, idx, torch.ones_like(idx))
    return hist.reshape(b, c, 256)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0) per channel: ``int(v * 255 / (hi - lo) - lo * scale)`` in
    float64, clipped; a constant channel is left alone."""
    lo = x.amin(dim=(2, 3)).double()
    hi = x.amax(dim=(2, 3)).double()
    flat = hi <= lo
    # a true division (``255.0 / t`` would be ``t.reciprocal() * 255``, off by an ulp)
    scale = torch.full_like(hi, 255.0) / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    ramp = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = (ramp * scale[..., None] + offset[..., None]).trunc().clamp(0, 255)
    lut = torch.where(flat[..., None], ramp, lut)
    return _apply_lut(x, lut)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize`` per channel: ``step = (N - count of the last used level) // 255`` and
    ``lut[i] = (step // 2 + #pixels below i) // step``; identity when one level or ``step == 0``."""
    hist = _histogram(x)
    used = hist > 0
    last = torch.where(used, torch.arange(256, device=x.device), -1).amax(-1)
    last_count = torch.gather(hist, 2, last.clamp(min=0)[..., None])[..., 0]
    step = (hist.sum(-1) - last_count) // 255
    identity = (used.sum(-1) <= 1) | (step == 0)
    below = hist.cumsum(-1) - hist
    safe = torch.where(identity, torch.ones_like(step), step)
    lut = ((safe // 2)[..., None] + below) // safe[..., None]
    ramp = torch.arange(256, device=x.device).expand_as(lut)
    return _apply_lut(x, torch.where(identity[..., None], ramp, lut.clamp(max=255)))


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` bits (``ImageOps.posterize``)."""
    q = (2.0 ** (8 - bits.to(x.dtype))).view(-1, 1, 1, 1)
    return torch.floor(x / q) * q


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above ``threshold`` (``ImageOps.solarize``)."""
    return torch.where(x >= threshold.to(x.dtype).view(-1, 1, 1, 1), 255 - x, x)


# ----------------------------------------------------------------------------- affine operations
def _pil_affine(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``Image.transform(size, AFFINE, coeffs, BILINEAR)`` with black fill, for a batch, in Pillow's own
    arithmetic (libImaging/Geometry.c ``affine_transform`` and ``bilinear_filter32RGB``), so that values a
    hair below an integer truncate as Pillow truncates them.

    Output pixel (x, y) samples the input at ``xin = a (x+.5) + b (y+.5) + c``, ``yin = d (x+.5) + e (y+.5)
    + f``, summed left to right in float64; points outside ``[0, W) x [0, H)`` are black. Inside, with
    ``x0 = floor(xin - .5)`` and ``dx = xin - .5 - x0`` (likewise y), Pillow lerps along x on row ``y0``
    and on row ``y0 + 1`` (that row's columns clamped to the image; a missing row repeats the first), then
    along y, each lerp as ``p + (q - p) d``, and truncates.

    Args:
        x: (B, C, H, W) integer-valued float.
        coeffs: (B, 6) float64.
    """
    b, c, h, w = x.shape
    a = coeffs.to(x.device, torch.float64).reshape(-1, 6, 1, 1)
    xs = (torch.arange(w, device=x.device, dtype=torch.float64) + 0.5).view(1, 1, w)
    ys = (torch.arange(h, device=x.device, dtype=torch.float64) + 0.5).view(1, h, 1)
    xin = a[:, 0] * xs + a[:, 1] * ys + a[:, 2]  # (B, H, W), in affine_transform's order
    yin = a[:, 3] * xs + a[:, 4] * ys + a[:, 5]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xf, yf = xin - 0.5, yin - 0.5
    x0, y0 = xf.floor(), yf.floor()
    dx, dy = (xf - x0)[:, None], (yf - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    xa, xb = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    ya, yb = y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)
    second_row = ((y0 + 1 >= 0) & (y0 + 1 < h))[:, None]
    flat = x.double().reshape(b, c, h * w)

    def pick(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    p00, p01 = pick(ya, xa), pick(ya, xb)
    v1 = p00 + (p01 - p00) * dx
    p10, p11 = pick(yb, xa), pick(yb, xb)
    v2 = torch.where(second_row, p10 + (p11 - p10) * dx, v1)
    v = v1 + (v2 - v1) * dy
    return v.trunc_().mul_(inside[:, None]).to(x.dtype)


def _translate(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """An integer translate: PIL samples ``x + shift`` exactly (no interpolation), black outside."""
    n = x.shape[dim]
    pos = torch.arange(n, device=x.device)[None] + shift.to(x.device)[:, None]  # (B, n)
    ok = (pos >= 0) & (pos < n)
    view = (-1, 1, 1, n) if dim == 3 else (-1, 1, n, 1)
    idx = pos.clamp(0, n - 1).view(view).expand_as(x)
    return torch.gather(x, dim, idx) * ok.view(view).to(x.dtype)


def _rotation_coeffs(deg: float, w: int, h: int) -> list[float]:
    """The inverse matrix ``Image.rotate(deg)`` builds (about the centre, no expand)."""
    t = -math.radians(deg % 360.0)
    m = [round(math.cos(t), 15), round(math.sin(t), 15), 0.0, round(-math.sin(t), 15), round(math.cos(t), 15), 0.0]
    cx, cy = w / 2.0, h / 2.0
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m


# ----------------------------------------------------------------------------- enhance operations
def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``Image.blend(degenerate, x, factor)``: ``trunc(d + factor (x - d))`` in float32, clipped."""
    f = factor.float().view(-1, 1, 1, 1)
    d, xf = degenerate.float(), x.float()
    return (d + f * (xf - d)).clamp_(0, 255).floor_().to(x.dtype)  # floor == trunc after the clamp


def _grey(x: torch.Tensor) -> torch.Tensor:
    """RGB → L as Pillow converts: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``."""
    r, g, b = x.long().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)[:, None].to(x.dtype)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """``ImageFilter.SMOOTH`` (3x3, centre 5, divisor 13), borders copied, rounded."""
    k = torch.ones(3, 3, dtype=torch.float32, device=x.device)
    k[1, 1] = 5
    k = (k / 13).expand(x.shape[1], 1, 3, 3)
    inner = F.conv2d(x.float(), k, groups=x.shape[1]).add(0.5).floor().clamp(0, 255)
    out = x.clone()
    out[..., 1:-1, 1:-1] = inner.to(x.dtype)
    return out


def _enhance(op: str, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if op == "brightness":
        return _blend(torch.zeros_like(x), x, factor)
    if op == "color":
        return _blend(_grey(x).expand_as(x), x, factor)
    if op == "contrast":
        mean = (_grey(x).mean(dim=(1, 2, 3), dtype=torch.float64) + 0.5).floor()
        return _blend(mean.to(x.dtype).view(-1, 1, 1, 1).expand_as(x), x, factor)
    return _blend(_smooth(x), x, factor)


# ----------------------------------------------------------------------------- per-op entry points
# (x (B, 3, H, W), magnitudes (B,), signs (B,)) -> (B, 3, H, W): the batched half of the op table.
def _t(v: Sequence, x: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(list(v), dtype=dtype, device=x.device)


def autocontrast_b(x, m, s):
    return autocontrast(x)


def equalize_b(x, m, s):
    return equalize(x)


def posterize_b(x, m, s):
    return posterize(x, _t(m, x))


def solarize_b(x, m, s):
    return solarize(x, _t(m, x))


def rotate_b(x, m, s):
    w, h = x.shape[-1], x.shape[-2]
    return _pil_affine(x, torch.tensor([_rotation_coeffs(int(g) * mi, w, h) for mi, g in zip(m, s, strict=True)],
                                       dtype=torch.float64).reshape(-1, 6))


def _shear(x, m, s, axis: int):
    rows = [[1, int(g) * mi, 0, 0, 1, 0] if axis == 0 else [1, 0, 0, int(g) * mi, 1, 0]
            for mi, g in zip(m, s, strict=True)]
    return _pil_affine(x, torch.tensor(rows, dtype=torch.float64).reshape(-1, 6))


def shear_x_b(x, m, s):
    return _shear(x, m, s, 0)


def shear_y_b(x, m, s):
    return _shear(x, m, s, 1)


def translate_x_b(x, m, s):
    return _translate(x, _t([int(g) * mi for mi, g in zip(m, s, strict=True)], x, torch.int64), 3)


def translate_y_b(x, m, s):
    return _translate(x, _t([int(g) * mi for mi, g in zip(m, s, strict=True)], x, torch.int64), 2)


def _enhance_b(op: str):
    return lambda x, m, s: _enhance(op, x, _t(m, x, torch.float32))

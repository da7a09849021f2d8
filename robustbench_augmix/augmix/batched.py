"""The batched AugMix path: the same draws as the per-image path, applied to a whole batch on the
training device, with every image's chains independent (no op chain shared across the batch).

Images travel as float tensors holding the uint8 values 0..255, rounded after every operation where
Pillow rounds, so each op reproduces Pillow's result: the LUT ops (autocontrast, equalize, posterize,
solarize), the bilinear affine ops (Pillow's pixel-centre sampling, edge clamping and truncation, in
float64) and the four ``--all-ops`` enhance ops (a blend with a degenerate image in float32, as
``ImageEnhance`` does) match Pillow bit for bit on the test photographs (tests/test_augmix.py).

Batched over chains: a batch of N images with V views of width W becomes N*V*W chains; at each depth
step the chains are grouped by operation and each group goes through its kernel in one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._common import InputError
from .mixing import OPS, MixDraw
from .ops import EXTRA_OPS


def encode_draws(draws: Sequence[MixDraw], width: int, max_depth: int = 3) -> dict[str, torch.Tensor]:
    """Stack one image's V drawn views into tensors (the DataLoader's default collate stacks them over the
    batch): ``op`` (V, W, D) int64 (-1: no op), ``level`` (V, W, D) float64, ``sign`` (V, W, D) int64,
    ``ws`` (V, W) float32, ``m`` (V,) float32."""
    def stack(key, dtype, shape):
        return torch.from_numpy(np.array([getattr(d, key) for d in draws], dtype=dtype).reshape(len(draws), *shape))

    return {"op": stack("op", np.int64, (width, max_depth)), "level": stack("level", np.float64, (width, max_depth)),
            "sign": stack("sign", np.int64, (width, max_depth)), "ws": stack("ws", np.float32, (width,)),
            "m": stack("m", np.float32, ())}


# ------------------------------------------------------------------------------ LUT operations
def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) integer-valued float, lut (B, 3, 256) → lut applied per image and channel."""
    b, c, h, w = x.shape
    idx = x.reshape(b, c, h * w).long()
    return torch.gather(lut.to(x.dtype), 2, idx).reshape(b, c, h, w)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    idx = x.reshape(b * c, -1).long()
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
    """``Image.transform(size, AFFINE, coeffs, BILINEAR)`` with black fill, for a batch.

    Output pixel (x, y) samples the input at ``(a (x+.5) + b (y+.5) + c, d (x+.5) + e (y+.5) + f)``;
    points outside ``[0, W) x [0, H)`` are filled, the others are interpolated bilinearly between pixel
    centres with clamped neighbours (``grid_sample`` with border padding is the same rule) and truncated,
    all in float64 as Pillow computes them.

    Args:
        x: (B, C, H, W) integer-valued float.
        coeffs: (B, 6) float64.
    """
    b, c, h, w = x.shape
    a = coeffs.to(x.device, torch.float64)
    xs = torch.arange(w, device=x.device, dtype=torch.float64) + 0.5
    ys = torch.arange(h, device=x.device, dtype=torch.float64) + 0.5
    xin = (a[:, 0, None] * xs)[:, None, :] + (a[:, 1, None] * ys + a[:, 2, None])[:, :, None]
    yin = (a[:, 3, None] * xs)[:, None, :] + (a[:, 4, None] * ys + a[:, 5, None])[:, :, None]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    grid = torch.stack((xin * (2.0 / w) - 1, yin * (2.0 / h) - 1), -1)
    v = F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    # grid_sample weighs the four neighbours where Pillow interpolates twice; the two differ by ~1e-13,
    # which would truncate an exact integer (a flat region) one level low. The nudge is far below any
    # fraction Pillow can produce at these coordinates' precision.
    return v.add_(1e-9).floor_().mul_(inside[:, None]).to(x.dtype)  # floor == trunc: values are >= 0


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


def _affine_coeffs(op: str, level: np.ndarray, sign: np.ndarray, w: int, h: int) -> torch.Tensor:
    size = max(w, h)
    rows = []
    for lv, sg in zip(level.tolist(), sign.tolist(), strict=True):
        if op == "rotate":
            rows.append(_rotation_coeffs(sg * int(lv * 30 / 10), w, h))
            continue
        shear, shift = sg * (lv * 0.3 / 10), sg * int(lv * (size / 3) / 10)
        rows.append({"shear_x": [1, shear, 0, 0, 1, 0], "shear_y": [1, 0, 0, shear, 1, 0],
                     "translate_x": [1, 0, shift, 0, 1, 0], "translate_y": [1, 0, 0, 0, 1, shift]}[op])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)


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


# ----------------------------------------------------------------------------- dispatch and mixing
def apply_op_batch(x: torch.Tensor, op: str, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One operation on a batch, each image with its own level and sign (same results as
    :func:`~robustbench_augmix.augmix.ops.apply_op` on each image).

    Args:
        x: (B, 3, H, W) float holding integer values 0..255.
        level, sign: (B,) float64 levels and +-1 signs.
    """
    lv, sg = level.double().cpu().numpy(), sign.cpu().numpy()
    if op == "autocontrast":
        return autocontrast(x)
    if op == "equalize":
        return equalize(x)
    if op == "posterize":
        return posterize(x, torch.tensor([4 - int(v * 4 / 10) for v in lv], device=x.device))
    if op == "solarize":
        return solarize(x, torch.tensor([256 - int(v * 256 / 10) for v in lv], device=x.device))
    if op in ("translate_x", "translate_y"):
        size = max(x.shape[-2:])
        shift = torch.tensor([int(g) * int(v * (size / 3) / 10) for v, g in zip(lv, sg, strict=True)], device=x.device)
        return _translate(x, shift, 3 if op == "translate_x" else 2)
    if op in ("rotate", "shear_x", "shear_y"):
        return _pil_affine(x, _affine_coeffs(op, lv, sg, x.shape[-1], x.shape[-2]))
    if op in EXTRA_OPS:
        return _enhance(op, x, torch.tensor(lv * 1.8 / 10 + 0.1, dtype=torch.float32, device=x.device))
    raise InputError(f"unknown AugMix operation {op!r}; accepted: {', '.join(OPS)}")


def augmix_batch(x: torch.Tensor, draws: dict[str, torch.Tensor], mean: Sequence[float],
                 std: Sequence[float]) -> list[torch.Tensor]:
    """Normalised clean images and their AugMix views for a batch, on ``x``'s device.

    Args:
        x: (N, 3, H, W) uint8 images (after the base crop/flip).
        draws: :func:`encode_draws` output stacked over the batch: ``op`` (N, V, W, D) ...
        mean, std: the ``Normalize`` statistics; mixing happens after it, in float, as in the release.

    Returns:
        ``[clean, view_1, ..., view_V]``, each (N, 3, H, W) float32.
    """
    dev = x.device
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1))
    shift = -torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1) / torch.tensor(
        std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)

    def pre(t):  # ToTensor + Normalize on 0..255 values
        return t * scale + shift

    xf = x.float()
    n, v, w, d = draws["op"].shape
    if v == 0:
        return [pre(xf)]
    chains = xf[:, None, None].expand(n, v, w, *xf.shape[1:]).reshape(n * v * w, *xf.shape[1:]).clone()
    ops = draws["op"].reshape(n * v * w, d)
    level = draws["level"].reshape(n * v * w, d)
    sign = draws["sign"].reshape(n * v * w, d)
    for k in range(d):
        col = ops[:, k]
        for op_id in torch.unique(col).tolist():
            if op_id < 0:
                continue
            sel = (col == op_id).nonzero().squeeze(1)
            sel_dev = sel.to(dev)
            out = apply_op_batch(chains.index_select(0, sel_dev), OPS[op_id], level[sel, k], sign[sel, k])
            chains.index_copy_(0, sel_dev, out)
    # The release mixes after Normalize; Normalize is affine and the weights sum to one, so mixing the
    # 0..255 values first and normalising once is the same up to float rounding, and 2W times cheaper.
    ws = draws["ws"].to(dev, torch.float32).reshape(n * v, 1, w)
    mixed = torch.bmm(ws, chains.reshape(n * v, w, -1)).reshape(n, v, *xf.shape[1:])
    m = draws["m"].to(dev, torch.float32).view(n, v, 1, 1, 1)
    views = pre(torch.lerp(xf[:, None].expand_as(mixed), mixed, m).reshape(n * v, *xf.shape[1:]))
    return [pre(xf)] + list(views.reshape(n, v, *xf.shape[1:]).unbind(1))

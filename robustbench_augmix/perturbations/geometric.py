"""The -P kernels that no -C corruption provides: the geometric perturbations, per frame over a batch.

Each takes a uint8 or float (N, 3, H, W) batch and the frame's :class:`~robustbench_augmix.corruptions.Params`
and returns the frame (same shape and dtype). Registered in :data:`KERNELS` under the name a table's
``kernel`` gives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

__all__ = ["KERNELS", "affine", "affine_pil", "inverse_affine_matrix", "tilt", "tilt_matrix", "translate",
           "warp_perspective_cv2", "zoom_blur_sequence"]


def translate(x: torch.Tensor, p) -> torch.Tensor:
    """torchvision's ``affine(img, angle=0, translate=(shift, 0), scale=1, shear=0)`` on a PIL image with its
    default nearest resampling (make_cifar_p.py l.187-195): the image moves ``shift`` pixels right (left when
    negative), black where nothing lands. For an integer shift nearest sampling is an exact shift."""
    s = int(round(float(p.shift)))
    out = torch.zeros_like(x)
    w = x.shape[-1]
    if abs(s) < w:
        if s >= 0:
            out[..., s:] = x[..., : w - s]
        else:
            out[..., : w + s] = x[..., -s:]
    return out


def inverse_affine_matrix(w: int, h: int, angle: float, scale: float, shear: float = 0.0) -> tuple[float, ...]:
    """The output-to-input matrix torchvision's ``affine`` hands Pillow, as the 0.2 releases the -P scripts ran
    computed it (``_get_inverse_affine_matrix``, 2018-19): rotation by ``angle`` and shear by ``shear`` degrees,
    zoom by ``scale``, about the centre ``(w / 2 + 0.5, h / 2 + 0.5)``, no translation. The rotation and scale
    parts are those of every later release; the shear part is not (later releases changed its formula).
    Returns ``(a, b, c, d, e, f)``: input ``(a x + b y + c, d x + e y + f)`` for the output point ``(x, y)``."""
    r, sh = math.radians(angle), math.radians(shear)
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    det = math.cos(r + sh) * math.cos(r) + math.sin(r + sh) * math.sin(r)
    a, b, d, e = (1.0 / scale / det * v for v in (math.cos(r + sh), math.sin(r + sh), -math.sin(r), math.cos(r)))
    return a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy


@functools.lru_cache(maxsize=256)
def _bilinear_plan(h: int, w: int, matrix: tuple[float, ...]):
    """Where Pillow's 8-bit bilinear AFFINE samples each output pixel (Geometry.c ``affine_transform``,
    ``BILINEAR_HEAD``/``BODY``): the point ``M (x + 0.5, y + 0.5)``; outside [0, w) x [0, h) the fill (0);
    else the four pixels around it less half a pixel, indices clamped to the image, and their weights.
    Returns the four corners' flat indices into an (H W) image, ``dx``, ``dy`` and the inside mask, each (H W,)."""
    a, b, c, d, e, f = matrix
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    u, v = a * xs + b * ys + c, d * xs + e * ys + f
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v = u - 0.5, v - 0.5
    x0, y0 = u.floor(), v.floor()
    dx, dy = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    c0, c1 = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    r0, r1 = y0.clamp(0, h - 1) * w, (y0 + 1).clamp(0, h - 1) * w
    corners = torch.stack([r0 + c0, r0 + c1, r1 + c0, r1 + c1]).reshape(4, -1)
    return corners, dx.reshape(-1), dy.reshape(-1), inside.reshape(-1)


def affine_pil(x: torch.Tensor, matrix: tuple[float, ...]) -> torch.Tensor:
    """Pillow's ``Image.transform(size, AFFINE, matrix, BILINEAR)`` on every image of a uint8 (N, 3, H, W)
    batch: the bilinear value in float64, stored truncated to 8 bits as Pillow's ``(UINT8) v`` does; 0 outside."""
    n, ch, h, w = x.shape
    corners, dx, dy, inside = _bilinear_plan(h, w, tuple(float(m) for m in matrix))
    flat = x.reshape(n * ch, h * w)
    p00, p01, p10, p11 = (flat.index_select(1, corners[k].to(x.device)).double() for k in range(4))
    dx, dy = dx.to(x.device), dy.to(x.device)
    top = p00.add_(p01.sub_(p00).mul_(dx))
    bottom = p10.add_(p11.sub_(p10).mul_(dx))
    v = top.add_(bottom.sub_(top).mul_(dy))
    return v.masked_fill_(~inside.to(x.device), 0.0).to(torch.uint8).reshape(n, ch, h, w)


def affine(x: torch.Tensor, p) -> torch.Tensor:
    """torchvision 0.2's ``affine(img, angle, (0, 0), scale, shear, resample=BILINEAR)`` on the PIL image, the
    frame's ``angle``, ``scale`` or ``shear`` (0, 1, 0 when absent): the scripts' rotate, scale and shear."""
    return affine_pil(x, inverse_affine_matrix(x.shape[-1], x.shape[-2], float(p.get("angle", 0.0)),
                                               float(p.get("scale", 1.0)), float(p.get("shear", 0.0))))


# ------------------------------------------------------------------------------------------------ tilt
_INTER_BITS, _COEF_BITS = 5, 15  # OpenCV imgproc: INTER_BITS, INTER_REMAP_COEF_BITS
_TAB = 1 << _INTER_BITS


@functools.cache
def _bilinear_table() -> torch.Tensor:
    """OpenCV's fixed-point bilinear weights (imgwarp.cpp ``initInterTab2D`` for INTER_LINEAR): for each of the
    32 x 32 sub-pixel positions, the four weights ``(1 - fy)(1 - fx), (1 - fy) fx, fy (1 - fx), fy fx`` in float32,
    rounded to 15-bit integers, the rounding error taken off the smallest (sum too big) or added to the largest
    (sum too small) of them so that they sum to 2**15. (1024, 4) int32."""
    import numpy as np

    t = (np.arange(_TAB, dtype=np.float32) / np.float32(_TAB))
    lin = np.stack([np.float32(1) - t, t], 1)                            # (32, 2) float32
    out = np.zeros((_TAB * _TAB, 4), np.int64)
    for i in range(_TAB):
        for j in range(_TAB):
            v = (lin[i][:, None] * lin[j][None, :]).reshape(4)             # float32 products
            w = np.rint(v.astype(np.float64) * (1 << _COEF_BITS)).astype(np.int64)
            diff = int(w.sum()) - (1 << _COEF_BITS)
            if diff:
                mk = mx = 0                                              # the scan of initInterTab2D over 2 x 2
                for k in range(1, 4):
                    if w[k] < w[mk]:
                        mk = k
                    elif w[k] > w[mx]:
                        mx = k
                if diff < 0:
                    w[mx] -= diff
                else:
                    w[mk] -= diff
            out[i * _TAB + j] = w
    return torch.from_numpy(out).to(torch.int32)


@functools.lru_cache(maxsize=64)
def _perspective_plan(h: int, w: int, inverse: tuple[float, ...]):
    """For ``cv2.warpPerspective(..., INTER_LINEAR, BORDER_CONSTANT 0)`` with the inverse map ``inverse`` (3 x 3,
    row-major): each output pixel's source as OpenCV fixes it (imgwarp.cpp ``WarpPerspectiveInvoker``:
    ``X = round(32 X0 / W)``, integer part ``X >> 5``, sub-pixel ``X & 31``), its four neighbours' flat indices
    (-1 outside the image) and its weights. (4, H W) int64 and (H W, 4) int32."""
    m = torch.tensor(inverse, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x0 = m[0] * xs + m[1] * ys + m[2]
    y0 = m[3] * xs + m[4] * ys + m[5]
    ww = m[6] * xs + m[7] * ys + m[8]
    ww = torch.where(ww != 0, _TAB / ww, torch.zeros_like(ww))
    bx = torch.round((x0 * ww).clamp(-(2**31), 2**31 - 1)).to(torch.int64)
    by = torch.round((y0 * ww).clamp(-(2**31), 2**31 - 1)).to(torch.int64)
    sx, sy = bx >> _INTER_BITS, by >> _INTER_BITS
    frac = ((by & (_TAB - 1)) * _TAB + (bx & (_TAB - 1))).reshape(-1)
    idx = []
    for dy in (0, 1):
        for dx in (0, 1):
            cx, cy = sx + dx, sy + dy
            ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            idx.append(torch.where(ok, cy * w + cx, torch.full_like(cx, -1)).reshape(-1))
    return torch.stack(idx), _bilinear_table()[frac]


def warp_perspective_cv2(x: torch.Tensor, inverse: tuple[float, ...]) -> torch.Tensor:
    """``cv2.warpPerspective`` of every image of a uint8 (N, 3, H, W) batch, INTER_LINEAR, black border, given the
    inverse (output-to-input) matrix: the 15-bit fixed-point sum of the four neighbours (0 outside), rounded."""
    n, ch, h, w = x.shape
    idx, wt = _perspective_plan(h, w, tuple(float(v) for v in inverse))
    flat = torch.cat([x.reshape(n * ch, h * w), torch.zeros(n * ch, 1, dtype=x.dtype, device=x.device)], 1)
    acc = torch.zeros(n * ch, h * w, dtype=torch.int32, device=x.device)
    for k in range(4):
        src = torch.where(idx[k] >= 0, idx[k], h * w).to(x.device)          # -1 -> the zero column
        acc += flat.index_select(1, src).to(torch.int32) * wt[:, k].to(x.device)
    return ((acc + (1 << (_COEF_BITS - 1))) >> _COEF_BITS).clamp_(0, 255).to(torch.uint8).reshape(n, ch, h, w)


def tilt_matrix(w: int, h: int, degrees: float):
    """make_cifar_p.py's tilt homography (l.208-236): ``P2 T RX RY P1`` with phi = theta = ``degrees``, focal length
    ``sqrt(w^2 + h^2)``, the image moved that far along z. (3, 3) float64 numpy, input to output."""
    import numpy as np

    phi = theta = np.deg2rad(degrees)
    f = np.sqrt(w**2 + h**2)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0], [0, np.sin(theta), np.cos(theta), 0],
                   [0, 0, 0, 1]])
    ry = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0], [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return p2 @ t @ rx @ ry @ p1


def tilt(x: torch.Tensor, p) -> torch.Tensor:
    """make_cifar_p.py's tilt: ``cv2.warpPerspective(img, P2 T RX RY P1, (w, h))`` (OpenCV inverts the matrix)."""
    import numpy as np

    h, w = x.shape[-2:]
    inverse = np.linalg.inv(tilt_matrix(w, h, float(p.angle)))
    return warp_perspective_cv2(x, tuple(inverse.reshape(-1).tolist()))


def zoom_blur_sequence(x: torch.Tensor, spec, suite=None, seed=0, difficulty=1, idx=(),
                       crop=lambda t: t) -> torch.Tensor:
    """make_cifar_p.py's zoom blur (l.133-144): frame 0 is the image; frame i the running mean of the image and
    its zooms ``affine(img, scale=1 + 0.004 k, BILINEAR)``, k = 1..i, summed as float32 ``ToTensor`` images in
    that order, then ``ToPILImage``'s ``mul(255).byte()`` (truncation) of the sum over i + 1.

    Args:
        x: (N, 3, H, W) uint8; ``spec`` the perturbation (its frame count); ``crop`` the centre crop after the
            zoom (ImageNet-P: the zooms act on the 256-px image); seed, difficulty and indices are unused: the
            sequence is deterministic.
    Returns:
        (N, frames, 3, H, W) uint8.
    """
    h, w = x.shape[-2:]
    frames = spec.frames
    first = crop(x)
    out = torch.empty((x.shape[0], frames, *first.shape[1:]), dtype=torch.uint8, device=x.device)
    out[:, 0] = first
    avg = first.float().div(255)
    for i in range(1, frames):
        avg += crop(affine_pil(x, inverse_affine_matrix(w, h, 0.0, 1 + 0.004 * i))).float().div(255)
        out[:, i] = (avg / (i + 1)).mul(255).to(torch.uint8)
    return out



KERNELS: dict[str, Callable[[torch.Tensor, object], torch.Tensor]] = {"translate": translate, "affine": affine,
                                                                      "tilt": tilt}

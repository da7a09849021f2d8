"""Shared batched building blocks: border modes, separable filters as matrices, the reference's
helper kernels (disk, plasma fractal, clipped zoom, ImageMagick motion blur) and 8-bit rounding.

All image tensors are ``(N, C, H, W)`` float in [0, 1] unless a docstring says otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .._common import InputError

# --------------------------------------------------------------------------- 8-bit quantisation


def floor_levels(x: torch.Tensor) -> torch.Tensor:
    """Floor to the 8-bit grid, as the reference's ``np.uint8(clip(x, 0, 1) * 255)`` does.

    A margin of 1e-3 grey levels keeps values that are integers in exact arithmetic (and land a
    rounding error below them in float32) on that integer, so the result does not depend on the
    order in which a float sum was taken.
    """
    return torch.floor(x.clamp(0, 1) * 255 + 1e-3) / 255


# Elements per piece of a CPU conversion: 1 MiB of float32, so that each of its passes stays in L2. Whole
# batches at 224 px go through memory once per pass instead: 0.19 -> 0.09 ms per image for to_uint8 on
# the 2-core development VM.
_CONVERT_CHUNK = 1 << 18


def _pointwise(x: torch.Tensor, dtype: torch.dtype, fn) -> torch.Tensor:
    """``fn(x)`` as ``dtype``, for an elementwise ``fn`` that returns a new tensor; on the CPU, piece by
    piece (the same operations on each element, so the same result)."""
    if x.device.type != "cpu" or x.numel() <= _CONVERT_CHUNK:
        return fn(x).to(dtype)
    flat = x.contiguous().view(-1)
    out = torch.empty(flat.shape, dtype=dtype)
    for i in range(0, flat.numel(), _CONVERT_CHUNK):
        out[i:i + _CONVERT_CHUNK] = fn(flat[i:i + _CONVERT_CHUNK])
    return out.view(x.shape)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``floor_levels`` as uint8 levels 0..255 (same shape)."""
    return _pointwise(x, torch.uint8, lambda t: t.clamp(0, 1).mul_(255).add_(1e-3).floor_())


def round_levels_u8(x: torch.Tensor) -> torch.Tensor:
    """The nearest 8-bit level of an input image, as uint8 (recovers uint8 data exactly)."""
    return _pointwise(x, torch.uint8, lambda t: t.clamp(0, 1).mul_(255).round_())


def levels_to_float(u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 levels as ``dtype`` in [0, 1]: ``u8.to(dtype) / 255``."""
    return _pointwise(u8, dtype, lambda t: t.to(dtype, copy=True).div_(255))


# --------------------------------------------------------------------------- border modes


def border_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map (possibly out-of-range) indices into [0, n) under a border mode.

    Modes: ``reflect101`` (OpenCV's default BORDER_REFLECT_101, torch's 'reflect': ``dcb|abcd|cba``),
    ``symmetric`` (scipy's 'reflect', half-sample: ``cba|abcd|dcb``), ``edge`` (scipy 'nearest',
    skimage's default for ``gaussian``: ``aaa|abcd|ddd``). Works for any distance outside.
    """
    idx = np.asarray(idx)
    if mode == "edge" or n == 1:
        return np.clip(idx, 0, n - 1)
    if mode == "reflect101":
        period = 2 * n - 2
        m = np.mod(idx, period)
        return np.where(m >= n, period - m, m)
    if mode == "symmetric":
        period = 2 * n
        m = np.mod(idx, period)
        return np.where(m >= n, period - 1 - m, m)
    raise InputError(f"unknown border mode {mode!r}")


def correlate_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """The (n, n) float64 matrix M with ``M @ v == correlate1d(v, weights, mode)`` (centred weights)."""
    weights = np.asarray(weights, dtype=np.float64)
    r = len(weights) // 2
    rows = np.repeat(np.arange(n), len(weights))
    src = (np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :]).ravel()
    cols = border_index(src, n, mode)
    m = np.zeros((n, n), dtype=np.float64)
    np.add.at(m, (rows, cols), np.tile(weights, n))
    return m


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's kernel: radius ``int(truncate * sigma + 0.5)``, normalised."""
    if sigma <= 0:
        return np.ones(1)
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / sigma**2 * x**2)
    return w / w.sum()


@functools.lru_cache(maxsize=256)
def _gaussian_matrix(n: int, sigma: float, truncate: float, mode: str) -> np.ndarray:
    return correlate_matrix(n, gaussian_weights(sigma, truncate), mode)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "edge", truncate: float = 4.0) -> torch.Tensor:
    """skimage/scipy Gaussian filter over the last two axes (H, W) of ``x``, any leading shape.

    The filter is applied as two matrix products with the border folded into the matrices, which is
    exact for any sigma (scipy reflects repeatedly when the kernel is wider than the image).
    """
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    mh = torch.as_tensor(_gaussian_matrix(h, float(sigma), truncate, mode), dtype=x.dtype, device=x.device)
    mw = mh if w == h else torch.as_tensor(
        _gaussian_matrix(w, float(sigma), truncate, mode), dtype=x.dtype, device=x.device
    )
    # Banded products on the CPU; one dense product each elsewhere (a GPU runs one large call faster than several).
    cpu = x.device.type == "cpu"
    bh = _band_blocks(h, float(sigma), truncate, mode) if cpu else ((0, h, 0, h),)
    bw = bh if w == h else _band_blocks(w, float(sigma), truncate, mode) if cpu else ((0, w, 0, w),)
    return _banded_matmul(_banded_matmul(x, mh, bh, rows=True), mw, bw, rows=False)


@functools.lru_cache(maxsize=256)
def _band_blocks(n: int, sigma: float, truncate: float, mode: str) -> tuple[tuple[int, int, int, int], ...]:
    """Blocks ``(r0, r1, k0, k1)`` of output rows of the (n, n) Gaussian matrix and the columns they reach: blocks
    of twice the band's width (at least 32 rows), or one dense block when the band is wider than half the matrix
    (large sigmas fold the border into every row)."""
    nz = _gaussian_matrix(n, sigma, truncate, mode) != 0
    lo, hi = nz.argmax(1), n - nz[:, ::-1].argmax(1)
    step = max(32, 2 * int((hi - lo).max()))
    if step >= n:
        return ((0, n, 0, n),)
    return tuple((r0, min(r0 + step, n), int(lo[r0:r0 + step].min()), int(hi[r0:r0 + step].max()))
                 for r0 in range(0, n, step))


def _banded_matmul(x: torch.Tensor, m: torch.Tensor, blocks, rows: bool) -> torch.Tensor:
    """``m @ x`` (``rows``) or ``x @ m.T`` over the last two axes of ``x``, one product per block of output rows
    or columns with the zero columns of ``m`` left out: 2.0-2.4x faster for the narrow bands (sigma of a few
    pixels at 224 px) on the CPU, and the same bits, since the skipped terms are exact zeros (checked against the
    dense product over every cell, benchmarks/cell_hashes.py)."""
    if len(blocks) == 1:
        return torch.matmul(m, x) if rows else torch.matmul(x, m.T)
    out = torch.empty_like(x)
    for r0, r1, k0, k1 in blocks:
        if rows:
            out[..., r0:r1, :] = torch.matmul(m[r0:r1, k0:k1], x[..., k0:k1, :])
        else:
            out[..., r0:r1] = torch.matmul(x[..., k0:k1], m[r0:r1, k0:k1].T)
    return out


def pad_index(x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad the last two axes by any amount under a :func:`border_index` mode."""
    h, w = x.shape[-2:]
    fast = {"reflect101": "reflect", "edge": "replicate"}.get(mode)
    if fast and x.dim() in (3, 4) and x.dtype.is_floating_point and max(top, bottom) < h and max(left, right) < w:
        return F.pad(x, (left, right, top, bottom), mode=fast)  # one native pass, same values
    ih = torch.as_tensor(border_index(np.arange(-top, h + bottom), h, mode), device=x.device)
    iw = torch.as_tensor(border_index(np.arange(-left, w + right), w, mode), device=x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


def conv2d_same(x: torch.Tensor, kernel: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """Correlate every channel of ``x`` (N, C, H, W) with one 2-D kernel (as cv2.filter2D does).

    Zero rows and columns at the kernel's rim are trimmed first (they contribute nothing); large
    kernels go through an FFT, small ones through a direct sum (on the CPU, thread-count invariant).
    """
    k = np.asarray(kernel, dtype=np.float64)
    nz_r, nz_c = np.nonzero(np.abs(k) > 0)
    ry = max(int(np.abs(nz_r - k.shape[0] // 2).max()), 0)
    rx = max(int(np.abs(nz_c - k.shape[1] // 2).max()), 0)
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    k = k[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1]
    n, c, h, w = x.shape
    xp = pad_index(x, ry, ry, rx, rx, mode)
    if k.size <= 49:
        if x.device.type != "cpu":
            wt = torch.as_tensor(k, dtype=x.dtype, device=x.device).expand(c, 1, *k.shape)
            return F.conv2d(xp, wt, groups=c)
        # On the CPU, a sum of shifted slices in a fixed tap order, one multiply and one add each: the
        # depthwise conv2d's result changed with the thread count (defocus_blur at 64 px, severity 5).
        out = torch.zeros_like(x)
        for (i, j), v in np.ndenumerate(k.astype(np.float32)):
            if v:
                out += xp[..., i : i + h, j : j + w] * float(v)
        return out
    return _fft_correlate(xp, k)[..., : h, : w]


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes that FFT libraries handle fastest)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _fft_correlate(xp: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """Valid-mode correlation of padded images ``xp`` (..., Hp, Wp) with kernel ``k`` via rFFT.

    Returns ``(..., Hp - kh + 1, Wp - kw + 1)``, trimmed by the caller.
    """
    hp, wp = xp.shape[-2:]
    kh, kw = k.shape
    fh, fw = _fft_size(hp), _fft_size(wp)
    # Correlation == convolution with the flipped kernel; put it at the origin, wrapping around.
    kf = np.zeros((fh, fw))
    kf[:kh, :kw] = k[::-1, ::-1]
    kf = np.roll(kf, (-(kh - 1), -(kw - 1)), axis=(0, 1))
    if xp.device.type == "cpu":
        # scipy's pocketfft splits a batch of transforms over its workers and computes each the same way
        # whatever their number; torch's CPU FFT (MKL) gave results that changed with the thread count
        # (defocus_blur at 64 px, severity 5).
        import scipy.fft

        a = xp.contiguous().numpy()
        workers = torch.get_num_threads()
        f = scipy.fft.rfft2(a, s=(fh, fw), workers=workers)
        np.multiply(f, scipy.fft.rfft2(kf.astype(a.dtype)), out=f)  # numpy: one rounding per product, always
        y = scipy.fft.irfft2(f, s=(fh, fw), workers=workers, overwrite_x=True)
        return torch.from_numpy(y)[..., : hp - kh + 1, : wp - kw + 1]
    kt = torch.fft.rfft2(torch.as_tensor(kf, dtype=xp.dtype, device=xp.device))
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=(fh, fw)) * kt, s=(fh, fw))
    return y[..., : hp - kh + 1, : wp - kw + 1]


# --------------------------------------------------------------------------- reference helpers


def cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0."""
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


@functools.lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference ``disk(radius, alias_blur)``: an aliased disk, normalised, then
    ``cv2.GaussianBlur`` (3x3, or 5x5 for radius > 8) with BORDER_REFLECT_101 (IN l. 153-165)."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        r = int(radius)
        grid, ksize = np.arange(-r, r + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = correlate_matrix(len(grid), cv2_gaussian_kernel(ksize, alias_blur), "reflect101")
    return g @ disk @ g.T


def motion_taps(radius: float, sigma: float, angle_deg: float) -> list[tuple[float, int, int]]:
    """ImageMagick MotionBlurImage's taps: (weight, dy, dx) for i = 0 .. 2*ceil(radius).

    Weight ``exp(-i^2 / (2 sigma^2))`` normalised (a one-sided Gaussian); tap i samples the pixel at
    ``(y + ceil(i sin(a) - 0.5), x + ceil(i cos(a) - 0.5))``, edges replicated.
    """
    width = 2 * math.ceil(radius) + 1
    k = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2 * sigma**2))
    k /= k.sum()
    a = math.radians(angle_deg)
    # ImageMagick divides by hypot(width*sin, width*cos), i.e. normalises the direction vector.
    px, py = width * math.sin(a), width * math.cos(a)
    hyp = math.hypot(px, py)
    taps = []
    for i in range(width):
        dy = math.ceil(i * px / hyp - 0.5)
        dx = math.ceil(i * py / hyp - 0.5)
        taps.append((float(k[i]), dy, dx))
    return taps


def motion_blur_batch(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick motion blur of each image at its own angle (degrees), edge pixels replicated.

    Args:
        x: (N, C, H, W) float.
        angles: (N,) float64 on the CPU.
    Returns:
        (N, C, H, W) float, not quantised.
    """
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    taps = [motion_taps(radius, sigma, float(a)) for a in angles.tolist()]  # the weights are the same for every image
    dys, dxs = [t[1] for ts in taps for t in ts], [t[2] for ts in taps for t in ts]
    top, bottom, left, right = max(0, -min(dys)), max(0, max(dys)), max(0, -min(dxs)), max(0, max(dxs))
    # One padding for the batch, as wide as its widest image needs: replicated edges extend the same way.
    xp = pad_index(x, top, bottom, left, right, "edge")
    out = torch.zeros_like(x)
    hp, wp = xp.shape[-2:]
    if h * w > _MOTION_GATHER_MAX:
        for j, ts in enumerate(taps):  # per image: its sum stays in L2 while the taps go by
            acc = out[j]
            for k, dy, dx in ts:
                acc.add_(xp[j, :, top + dy : top + dy + h, left + dx : left + dx + w], alpha=k)
        return out
    # Small images: every tap of a group of images gathered in one call, then summed tap by tap (the same adds in
    # the same order). One slice and add per tap and image was Python work that held the GIL the other workers
    # wait for (0.30 ms per 32-px image on 2 workers, 0.22 on one thread).
    offsets = torch.tensor([[(top + dy) * wp + left + dx for _, dy, dx in ts] for ts in taps])  # (N, T)
    pixel = (torch.arange(h).view(h, 1) * wp + torch.arange(w)).view(1, 1, h * w)
    flat = xp.reshape(n, c, hp * wp)
    t_count = offsets.shape[1]
    group = max(1, _MOTION_GATHER_BYTES // (c * t_count * h * w * x.element_size()))
    for g in range(0, n, group):
        idx = (offsets[g : g + group, :, None] + pixel).view(-1, 1, t_count * h * w)
        gathered = flat[g : g + group].gather(2, idx.expand(-1, c, -1).to(x.device)).view(-1, c, t_count, h, w)
        acc = out[g : g + group]
        for i, (k, _, _) in enumerate(taps[0]):
            acc.add_(gathered[:, :, i], alpha=k)
    return out


# Images up to 64 x 64 px take the gathered path; a group's gathered taps are about 4 MiB.
_MOTION_GATHER_MAX = 64 * 64
_MOTION_GATHER_BYTES = 4 << 20


def zoom_factors(start: float, stop: float, step: float) -> np.ndarray:
    """The reference's ``np.arange(start, stop, step)`` (floating point decides the end point)."""
    return np.arange(start, stop, step)


def clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """The reference ``clipped_zoom`` (IN l. 231-241) over the last two axes of (N, C, H, W).

    Crop the centre ``ceil(h / z)``, zoom it with scipy's order-1 ``zoom`` (corner-aligned bilinear,
    output ``round(ch * z)``) and keep the centre h rows, trimming ``(out - h) // 2``. The reference
    uses h for both axes (square images); here each axis uses its own size. Only the kept output pixels
    are computed: output pixel (i, j) samples the crop at ``((th + i) s_h, (tw + j) s_w)`` with
    ``s = (crop - 1) / (out - 1)``.

    ``grid_sample`` rather than ``F.interpolate``: torch's CPU upsampling kernel splits its work at points
    that depend on the thread count, and its vector and scalar paths round differently, so its output
    changed with the number of threads (one 8-bit level on some zoom_blur pixels at 224 px).
    ``grid_sample`` splits over images only and computes every pixel the same way whatever the split.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / z), math.ceil(w / z)
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = round(ch * z), round(cw * z)
    if oh == h and ow == w and ch == h and cw == w:
        return x  # zoom 1: align-corners bilinear at the same size is the identity
    th, tw = (oh - h) // 2, (ow - w) // 2
    crop = x[..., top : top + ch, left : left + cw]

    def axis(n_crop: int, n_out: int, start: int, n: int) -> torch.Tensor:
        # crop pixel coordinates, normalised for align_corners=True: -1 and 1 are the first and last pixel
        pos = torch.arange(start, start + n, dtype=torch.float64) * ((n_crop - 1) / max(n_out - 1, 1))
        return pos * (2.0 / max(n_crop - 1, 1)) - 1.0

    gy, gx = axis(ch, oh, th, h), axis(cw, ow, tw, w)
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1).to(x.device, x.dtype)
    lead = crop.shape[:-2]
    flat = crop.reshape(-1, 1, ch, cw) if crop.dim() != 4 else crop
    y = F.grid_sample(flat, grid.expand(flat.shape[0], h, w, 2), mode="bilinear", padding_mode="border",
                      align_corners=True)
    return y.reshape(*lead, h, w)


def _add_rolled(t: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """``t + torch.roll(t, shift, dim)`` for a shift of +1 or -1, by slices: the same sums, no rolled copy."""
    out = torch.empty_like(t)
    k = t.shape[dim]
    a, b = (1, 0) if shift == 1 else (0, 1)  # out[i] = t[i] + t[i - shift] over the k - 1 inner pairs
    if k > 1:
        torch.add(t.narrow(dim, a, k - 1), t.narrow(dim, b, k - 1), out=out.narrow(dim, a, k - 1))
    w = 0 if shift == 1 else k - 1  # and the one pair that wraps around
    torch.add(t.narrow(dim, w, 1), t.narrow(dim, k - 1 - w, 1), out=out.narrow(dim, w, 1))
    return out


def plasma_fractal(draws, mapsize: int, wibble_decay: float) -> torch.Tensor:
    """The reference ``plasma_fractal`` (IN l. 182-228), one map per image: (N, mapsize, mapsize).

    Diamond-square on a periodic grid (``np.roll``), noise amplitude ``wibble`` starting at 100 and
    divided by ``wibble_decay`` per level, min-max normalised to [0, 1] per map. float64. The rolls are
    sums of slices and the noise is added in place: the same operations on the same values as
    ``t / 4 + wibble * (wibble * (2 u - 1))`` with rolled copies, without the copies.
    """
    n, m = len(draws), mapsize
    dev = draws.device
    a = torch.zeros((n, m, m), dtype=torch.float64, device=dev)
    step, wibble = m, 100.0
    if dev.type == "cpu":
        # All of an image's draws in one call, then cut per level: torch's CPU uniform fills element after element,
        # so this is the same stream as one call per level (checked in tests/test_fidelity.py) and 8 calls per
        # chunk of images instead of 192 (the Python calls held the GIL that the other workers wait for). The
        # levels draw 3 (m / step)^2 values for step = m .. 2, which sums to m^2 - 1.
        bank, used = draws.uniform(m * m - 1, dtype=torch.float64).mul_(2).sub_(1), 0  # 2 u - 1, once

    def wibbled(t: torch.Tensor, dst: torch.Tensor) -> None:
        nonlocal used
        if dev.type == "cpu":
            k = t.shape[1] * t.shape[2]
            u = bank[:, used:used + k].view(t.shape)
            used += k
        else:
            u = draws.uniform(*t.shape[1:], dtype=torch.float64).mul_(2).sub_(1)
        u.mul_(wibble).mul_(wibble)
        torch.add(t.div_(4), u, out=dst)

    while step >= 2:
        half = step // 2
        ul = a[:, 0:m:step, 0:m:step]
        dr = a[:, half:m:step, half:m:step]
        wibbled(_add_rolled(_add_rolled(ul, -1, 1), -1, 2), dr)
        wibbled(_add_rolled(dr, 1, 1).add_(_add_rolled(ul, -1, 2)), a[:, 0:m:step, half:m:step])
        wibbled(_add_rolled(dr, 1, 2).add_(_add_rolled(ul, -1, 1)), a[:, half:m:step, 0:m:step])
        step //= 2
        wibble /= wibble_decay
    a -= a.amin(dim=(1, 2), keepdim=True)
    return a.div_(a.amax(dim=(1, 2), keepdim=True))


def gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB2GRAY (0.299 R + 0.587 G + 0.114 B) of (N, 3, H, W) -> (N, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2]) + 0.114 * x[:, 2:3]

"""Digital corruptions: brightness, contrast, saturate, pixelate, JPEG, elastic transform."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._ops import gaussian_filter, levels_to_float, round_levels_u8
from ._parallel import run_parts, workers
from ._registry import register, register_levels


@register("brightness")
def brightness(x, p, draws):
    """HSV value ``V <- clip(V + shift)`` (IN l. 497-505). With hue and saturation fixed, the
    HSV round trip scales every channel by V'/V (grey V' where V = 0), which is what we compute."""
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + p.shift).clamp(0, 1)
    scaled = x * (v2 / torch.where(v > 0, v, torch.ones_like(v)))
    return torch.where(v > 0, scaled, v2.expand_as(x)).clamp(0, 1)


@register("saturate")
def saturate(x, p, draws):
    """HSV saturation ``S <- clip(S * factor + shift)`` (IN l. 508-516), in closed form.

    For hue and value fixed, a channel c becomes ``V - (V - c) * V S' / (V - min)``. Grey pixels
    have hue 0 in skimage, so a raised saturation turns them red: (V, V (1 - S'), V (1 - S')).
    """
    v = x.amax(dim=1, keepdim=True)
    mn = x.amin(dim=1, keepdim=True)
    delta = v - mn
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    s2 = (s * p.factor + p.shift).clamp(0, 1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    coloured = v - (v - x) * (v * s2 / safe)
    red = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    grey = v * (1 - s2 * red)
    return torch.where(delta > 0, coloured, grey).clamp(0, 1)


@register("contrast")
def contrast(x, p, draws):
    """``(x - m) * factor + m`` with m the per-image, per-channel mean (IN l. 489-494)."""
    xd = x.double()
    m = xd.mean(dim=(2, 3), keepdim=True)
    return ((xd - m) * p.factor + m).clamp(0, 1).to(x.dtype)


# ------------------------------------------------------------------------------------- pixelate

_PIL_BITS = 22  # Pillow's Resample.c PRECISION_BITS = 32 - 8 - 2 for 8-bit images


@functools.lru_cache(maxsize=64)
def _box_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX resampling coefficients (precompute_coeffs + normalize_coeffs_8bpc) as
    (n_out, T) source indices and integer weights in units of 2**-22."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    rows = []
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        ks = [1.0 if -0.5 < (j - center + 0.5) / fscale <= 0.5 else 0.0 for j in range(lo, hi)]
        tot = sum(ks)
        ks = [k / tot for k in ks]
        rows.append([(j, int(math.floor(0.5 + k * (1 << _PIL_BITS)))) for j, k in zip(range(lo, hi), ks, strict=True)])
    t = max(len(r) for r in rows)
    idx = np.zeros((n_out, t), dtype=np.int64)
    wt = np.zeros((n_out, t), dtype=np.int64)
    for o, r in enumerate(rows):
        for k, (j, v) in enumerate(r):
            idx[o, k], wt[o, k] = j, v
    return idx, wt


@functools.lru_cache(maxsize=64)
def _box_ranges(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillow's BOX taps as ranges: output ``o`` is ``(w[o] * sum(x[lo[o]:hi[o]]) + 2**21) >> 22``.

    BOX gives every source pixel whose centre falls in the box the same weight, so a row of taps is a
    contiguous range with one weight (checked here); the ranges of a row partition it.
    """
    idx, wt = _box_taps(n_in, n_out)
    lo, hi, w = (np.empty(n_out, dtype=np.int64) for _ in range(3))
    for o in range(n_out):
        keep = wt[o] > 0
        j, v = idx[o][keep], wt[o][keep]
        if not ((v == v[0]).all() and (np.diff(j) == 1).all()):
            raise AssertionError(f"BOX taps {n_in} -> {n_out} are not uniform ranges at {o}")
        lo[o], hi[o], w[o] = j[0], j[-1] + 1, v[0]
    return torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(w).to(torch.int32)


@functools.lru_cache(maxsize=64)
def _box_plan(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BOX down-sampling as taps and a float multiplier: output ``o`` is ``floor(m[o] * sum_t x[taps[t, o]]
    + 0.5)``, with tap index ``n_in`` standing for a zero row (boxes one pixel narrower than the widest).

    ``m = w / 2**22`` is exact in float32, and ``floor(s * m + 0.5)`` is checked here to equal Pillow's
    ``(s * w + 2**21) >> 22`` for every sum ``s`` an 8-bit box can reach, so the float path is exact.
    """
    lo, hi, w = _box_ranges(n_in, n_out)
    width = hi - lo
    taps = torch.stack([torch.where(t < width, lo + t, n_in) for t in range(int(width.max()))])
    m = w.double().div(1 << _PIL_BITS).float()
    for k in width.unique().tolist():
        wk = int(w[width == k][0])
        s = torch.arange(255 * k + 1)
        if not torch.equal((s.float() * (wk / (1 << _PIL_BITS)) + 0.5).floor().long(),
                           (s * wk + (1 << (_PIL_BITS - 1))) >> _PIL_BITS):
            raise AssertionError(f"BOX {n_in} -> {n_out}: float32 rounding differs from Pillow's for width {k}")
    return taps, m


@functools.lru_cache(maxsize=256)
def _rows(kind: str, n_in: int, n_out: int, b: int, device: torch.device) -> torch.Tensor:
    """Row indices into a ``(b * n_in [+ 1], L)`` matrix for ``b`` stacked images: the BOX taps
    (``kind="down"``, (T, b * n_out), the zero row last) or the source row of each up-sampled row."""
    if kind == "down":
        taps, _ = _box_plan(n_in, n_out)
        zero = taps == n_in
        flat = torch.arange(b).view(1, b, 1) * n_in + taps.unsqueeze(1)
        flat = torch.where(zero.unsqueeze(1), b * n_in, flat).flatten(1)
    else:
        src = torch.from_numpy(_box_taps(n_in, n_out)[0][:, 0])
        flat = (torch.arange(b).view(b, 1) * n_in + src).flatten()
    return flat.to(device)


def _box_down(src: torch.Tensor, n_out: int) -> torch.Tensor:
    """Pillow's 8-bit BOX down-sampling along dim 1 of a uint8 ``(B, n_in, L)`` view (it may be a
    transpose): uint8 ``(B, n_out, L)``. Rows are gathered whole, the fast direction for torch."""
    b, n_in, length = src.shape
    buf = torch.empty(b * n_in + 1, length, dtype=torch.uint8, device=src.device)
    buf[-1].zero_()
    buf[:-1].view(b, n_in, length).copy_(src)
    taps = _rows("down", n_in, n_out, b, src.device)
    acc = buf.index_select(0, taps[0]).float()
    for t in taps[1:]:
        acc += buf.index_select(0, t).float()
    m = _box_plan(n_in, n_out)[1].to(src.device).view(1, -1, 1)
    return acc.view(b, n_out, length).mul_(m).add_(0.5).floor_().to(torch.uint8)


def _box_up(src: torch.Tensor, n_out: int) -> torch.Tensor:
    """Pillow's BOX up-sampling along dim 1 of a uint8 ``(B, n_in, L)`` view: each output row is the
    source row whose centre is nearest (support below one pixel), so a row gather."""
    b, n_in, length = src.shape
    return src.contiguous().view(b * n_in, length).index_select(0, _rows("up", n_in, n_out, b, src.device)) \
        .view(b, n_out, length)


@register("pixelate")
def pixelate(x, p, draws):
    """The 8-bit kernel above on the image's nearest 8-bit levels: the reference pixelates a PIL image."""
    return levels_to_float(pixelate_levels(round_levels_u8(x), p), x.dtype)


_PIXELATE_CHUNK = 1 << 20  # uint8 elements per CPU chunk: the intermediates stay in the 2 x 1 MiB of L2


@register_levels("pixelate")
def pixelate_levels(u8: torch.Tensor, p) -> torch.Tensor:
    """PIL ``resize((int(W f), int(H f)), BOX)`` then back to (W, H) with BOX (IN l. 529-535) on a
    uint8 (N, 3, H, W) batch, bit for bit: horizontal pass, rounding to 8 bits, vertical pass, as
    Pillow's Resample.c. Each pass gathers whole rows of a transposed view (torch gathers rows 10x
    faster than columns), so the batch is transposed four times; on the CPU it goes in L2-sized chunks."""
    n, c, h, w = u8.shape
    sh, sw = int(h * p.factor), int(w * p.factor)
    out = torch.empty_like(u8)
    # One chunk after another, each split over torch's threads: its few row gathers run 1.2x faster so than side
    # by side on the single-threaded workers (0.165 against 0.198 ms per 224-px image, measured).
    step = max(1, _PIXELATE_CHUNK // (c * h * w)) if u8.device.type == "cpu" else max(n, 1)
    for i in range(0, n, step):
        x = u8[i:i + step].reshape(-1, h, w)               # (B, H, W)
        a = _box_down(x.mT, sw)                            # (B, sw, H)
        v = _box_down(a.mT, sh)                            # (B, sh, sw)
        u = _box_up(v.mT, w)                               # (B, W, sh)
        out[i:i + step] = _box_up(u.mT, h).view(-1, c, h, w)
    return out


def map_hwc(fn, u8: torch.Tensor) -> torch.Tensor:
    """A shape-preserving ``fn`` (uint8 (H, W, 3) array -> same) over a uint8 CPU batch (N, 3, H, W),
    on the single-threaded workers (one per torch thread); uint8 (N, 3, H, W) back."""
    if len(u8) == 0:
        return u8.clone()
    hwc = u8.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)

    def one(i: int) -> None:
        out[i] = fn(hwc[i])

    run_parts(one, range(len(hwc)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------- JPEG

def _pil_encode(a: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def _pil_roundtrip(a: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(_pil_encode(a, quality))).convert("RGB"))


def _check_image() -> np.ndarray:
    # Colour edges, smooth ramps and a size that is not a multiple of the 16-px MCU.
    yy, xx = np.mgrid[0:40, 0:56]
    return np.stack([(xx * 5) % 256, (yy * 7 + xx) % 256, ((xx // 8 + yy // 8) % 2) * 200 + 20],
                    axis=-1).astype(np.uint8)


@functools.cache
def _torchvision_codec_matches_pil() -> bool:
    """Whether torchvision's libjpeg gives PIL's bytes and pixels on this install (both are usually
    libjpeg-turbo with the same defaults: 4:2:0, baseline, islow DCT, fancy upsampling). Checked once
    per process on a small pattern at several qualities; a mismatch falls back to PIL."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except Exception:  # noqa: BLE001  (a broken or newer torchvision without them: PIL runs)
        return False
    a = _check_image()
    t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    with _quiet():
        for q in (10, 15, 20, 30, 85):
            data = encode_jpeg(t, quality=q)
            if data.numpy().tobytes() != _pil_encode(a, q):
                return False
            if not np.array_equal(decode_jpeg(data).permute(1, 2, 0).numpy(), _pil_roundtrip(a, q)):
                return False
    return True


@contextlib.contextmanager
def _quiet():
    # torchvision 0.29 deprecates its codecs in favour of TorchCodec; when they go, the check above
    # fails to import them and PIL runs. Until then the warning says nothing to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def jpeg_roundtrip_levels(u8: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode each image of a uint8 (N, 3, H, W) batch as PIL does at ``quality`` (4:2:0,
    baseline); uint8 (N, 3, H, W) back on the same device.

    The codec runs on the CPU, on the single-threaded workers (one per torch thread): torchvision's batched
    libjpeg when it reproduces PIL byte for byte, else PIL (times side by side: ``rb-bench corruptions``).
    """
    if len(u8) == 0:
        return u8.clone()
    cpu = u8.cpu().contiguous()
    if not _torchvision_codec_matches_pil():
        return map_hwc(lambda a: _pil_roundtrip(a, quality), cpu).to(u8.device)
    from torchvision.io import decode_jpeg, encode_jpeg

    # One batched call per worker: torchvision's loop over the list runs without the GIL.
    # Each thread copies its decoded images into the output itself, while they are still in its core's
    # cache: copying them afterwards on the main thread took a third of the whole (0.42 -> 0.29 ms per
    # 224-px image on 2 threads, measured). The warning filters are process-wide, so they are set here,
    # around the workers, not inside them.
    n = min(workers(), len(cpu))
    bounds = np.linspace(0, len(cpu), n + 1).astype(int).tolist()
    out = torch.empty_like(cpu)

    def run(k: int) -> None:
        lo, hi = bounds[k], bounds[k + 1]
        for i, im in enumerate(decode_jpeg(encode_jpeg(list(cpu[lo:hi]), quality=int(quality))), lo):
            out[i] = im

    with _quiet():
        run_parts(run, range(n), n)
    return out.to(u8.device)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of a (N, 3, H, W) float batch (rounded to 8 bits first); same device back."""
    return levels_to_float(jpeg_roundtrip_levels(round_levels_u8(x), quality), x.dtype)


@register("jpeg_compression")
def jpeg_compression(x, p, draws):
    """A real JPEG encode/decode at the table's quality with PIL defaults (IN l. 519-526)."""
    return jpeg_roundtrip(x, int(p.quality))


@register_levels("jpeg_compression")
def _jpeg_u8(u8: torch.Tensor, p) -> torch.Tensor:
    return jpeg_roundtrip_levels(u8, int(p.quality))


# -------------------------------------------------------------------------------------- elastic


def _sample_elastic(d, h, w, p):
    a = float(p.affine)
    # Reference order: the affine jitter (3, 2) as float32, then dx, then dy (IN l. 545-560).
    jitter = d.scalars(-a, a, 3, 2).float().double()
    return {"jitter": jitter, "dx": d.uniform(h, w, dtype=torch.float64),
            "dy": d.uniform(h, w, dtype=torch.float64)}


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 2x3 matrix mapping three (x, y) points ``src`` onto ``dst``."""
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst).T


_GRID_PART = 224 * 224  # pixels of a sampling grid built at once on the CPU: 0.4 MB of float64 coordinates


def _grid_parts(x: torch.Tensor) -> list[slice]:
    """Slices of the batch in which to build a sampling grid: one 224-px image at a time on the CPU, so that the
    float64 coordinates stay in L2 through their four in-place steps (0.57 -> 0.25 ms per image), else the batch."""
    n, _, h, w = x.shape
    step = n if x.device.type != "cpu" else max(1, _GRID_PART // (h * w))
    return [slice(i, i + step) for i in range(0, n, step)]


def warp_affine_reflect101(x: torch.Tensor, mats: np.ndarray) -> torch.Tensor:
    """cv2.warpAffine(img, M, (W, H), INTER_LINEAR, BORDER_REFLECT_101) per image.

    ``dst(x, y) = src(M^-1 (x, y))``; OpenCV rounds source coordinates to 1/32 pixel (INTER_BITS),
    which we do too. Reflection about the border pixels' centres is grid_sample's 'reflection'
    with ``align_corners=True``.
    """
    n, c, h, w = x.shape
    inv = np.stack([np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2] for m in mats])
    a = torch.as_tensor(inv, dtype=torch.float64, device=x.device).view(n, 2, 3, 1, 1)
    ys = torch.arange(h, dtype=torch.float64, device=x.device).view(h, 1)
    xs = torch.arange(w, dtype=torch.float64, device=x.device).view(1, w)
    grid = torch.empty((n, h, w, 2), dtype=x.dtype, device=x.device)
    for i in _grid_parts(x):
        for axis, size in ((0, w), (1, h)):  # source x, then source y, each (N, H, W)
            src = a[i, axis, 0] * xs + (a[i, axis, 1] * ys + a[i, axis, 2])
            grid[i, ..., axis] = src.mul_(32).round_().div_(16 * max(size - 1, 1)).sub_(1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


@register("elastic_transform", sample=_sample_elastic)
def elastic_transform(x, p, draws):
    """Elastic transform of ImageNet-C (IN l. 539-568): a random affine warp (corner points jittered
    by U(-affine, affine)), then bilinear resampling along a smooth random displacement field
    ``alpha * gaussian(U(-1, 1), sigma, mode='reflect', truncate=3)`` (scipy's 'reflect' border)."""
    n, c, h, w = x.shape
    center = np.array([h // 2, w // 2], dtype=np.float64)
    sq = min(h, w) // 3
    # The script builds both point sets in float32 (IN l. 545-552); the solve is float64.
    pts1 = np.array([center + sq, [center[0] + sq, center[1] - sq], center - sq], dtype=np.float32)
    jit = draws["jitter"].numpy().astype(np.float32)
    mats = np.stack([affine_from_points(pts1.astype(np.float64), (pts1 + jit[i]).astype(np.float64))
                     for i in range(n)])
    y = warp_affine_reflect101(x, mats)
    sigma, alpha = float(p.sigma), float(p.alpha)
    if alpha == 0:
        return y.clamp(0, 1)
    dx, dy = (gaussian_filter(draws[k].mul(2).sub_(1), sigma, "symmetric", truncate=3).mul_(alpha).float()
              for k in ("dx", "dy"))  # (gaussian(2 U - 1) * alpha).astype(float32), float64 before
    xs = torch.arange(w, device=x.device, dtype=torch.float64)
    ys = torch.arange(h, device=x.device, dtype=torch.float64).view(h, 1)
    # map_coordinates(order=1, mode='reflect') == grid_sample 'reflection' with align_corners=False: the
    # normalised source coordinate is (2 * (x + dx) + 1) / W - 1 in float64, stored in x's dtype.
    grid = torch.empty((n, h, w, 2), dtype=x.dtype, device=x.device)
    for i in _grid_parts(x):
        for axis, d, base, size in ((0, dx, xs, w), (1, dy, ys, h)):
            grid[i, ..., axis] = d[i].double().add_(base).mul_(2).add_(1).div_(size).sub_(1)
    return F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1)

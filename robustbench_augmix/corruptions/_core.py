"""The engine behind :func:`corrupt` and :func:`apply`: input checks, per-image seeds, CPU chunking.

Importing this module fills the registry (the kernel modules register themselves) and imports torch,
SciPy and Pillow; the package's ``__init__`` defers it until one of its names is used.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import torch

from .._common import InputError, RBAError
from . import blur, digital, noise, weather  # noqa: F401  (fill the registry)
from ._ops import floor_levels, levels_to_float, to_uint8
from ._parallel import run_parts
from ._parallel import workers as _workers
from ._registry import REGISTRY, Corruption
from ._rng import Draws, image_seeds
from .suites import SEVERITIES, Params, Suite, load_suite

# The smallest side every corruption of every table handles (glass blur at ImageNet-C severity 5 needs 8,
# pixelate at ImageNet-C severity 5 needs 4, elastic 3): checked by tests/test_contract.py at 8 px.
MIN_IMAGE_SIZE = 8


class UnknownCorruption(RBAError, ValueError):
    """A corruption name that the suite's table does not have."""


def check_corruption(corruption, suite: Suite) -> None:
    """Raise :class:`UnknownCorruption`, naming the closest name and every accepted one, unless ``corruption``
    is in ``suite``'s table. The one check behind :func:`corrupt`, ``rb-corrupt`` and ``rb-eval``."""
    if not isinstance(corruption, str) or corruption not in suite.corruptions:
        names = suite.names(extra=True)
        near = difflib.get_close_matches(str(corruption), names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UnknownCorruption(
            f"unknown corruption {corruption!r} for suite {suite.id!r}{hint} Accepted: {', '.join(names)}"
        )


def _check_size(hw) -> None:
    if min(hw) < MIN_IMAGE_SIZE:
        raise InputError(f"images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels, got {tuple(hw)} "
                         "(glass blur's ImageNet-C severity 5 shuffles pixels 4 apart from a 4-pixel border)")


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise InputError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


def _indices(index, n: int) -> list[int]:
    if index is None:
        return list(range(n))
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        if n != 1:
            raise InputError(f"index is a single int but the batch has {n} images; pass {n} indices")
        return [int(index)]
    idx = torch.as_tensor(index).reshape(-1)
    if idx.numel() == 0 and n == 0:  # torch reads an empty list as float
        return []
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.numel() != n:
        raise InputError(f"index must hold {n} integers (one per image), got {index!r}")
    return [int(i) for i in idx.tolist()]


def apply(x: torch.Tensor, corruption: str, severity: int, *, suite: str = "imagenet-c", seeds: Sequence[int],
          levels: bool = False) -> torch.Tensor:
    """Apply one cell to a validated batch with explicit per-image seeds: the engine's entry point, behind
    :func:`corrupt` (which validates and keys the seeds), ``rb-corrupt`` and ``rb-eval`` (no checks here).

    Args:
        x: (N, 3, H, W) float in [0, 1] on any device; with ``levels``, uint8 too.
        seeds: N per-image seeds, e.g. from :func:`image_seeds`.
        levels: return uint8 levels, quantised as the reference's ``np.uint8`` does (what ``rb-corrupt``
            stores and ``rb-eval`` scores). A corruption with an 8-bit kernel (JPEG: libjpeg on the uint8
            batch; pixelate: Pillow's integer BOX passes) then runs it on uint8 CPU data: the same result
            without the float round trip.
    Returns:
        (N, 3, H, W) float in [0, 1] of ``x``'s dtype (not rounded), or uint8 with ``levels``; on ``x``'s
        device.
    """
    s = load_suite(suite)
    return apply_params(x, corruption, s.corruptions[corruption].params(severity, s), seeds=seeds, levels=levels)


def apply_params(x: torch.Tensor, corruption: str, params: Params, *, seeds: Sequence[int],
                 levels: bool = False) -> torch.Tensor:
    """:func:`apply` with the kernel's parameters given directly (a -P frame's, say) instead of a table cell."""
    c = REGISTRY[corruption]
    u8_in = x.dtype == torch.uint8
    if levels and u8_in and c.levels is not None and x.device.type == "cpu":
        return c.levels(x.contiguous(), params)
    if x.shape[0] == 0:
        return x.to(torch.uint8) if levels else x.clone()
    n, _, h, w = x.shape
    # Channels-last input (a permuted uint8 HWC batch) makes resampling kernels several times slower.
    x = x.contiguous()
    # uint8 in, uint8 out: each chunk is converted on its way in and quantised on its way out, so the float
    # image never exists for the whole batch (two passes over memory fewer per corruption).
    pre = levels_to_float if u8_in else (lambda t: t)
    post = to_uint8 if levels else (lambda t: t)
    # A corruption with an 8-bit kernel (JPEG, pixelate) takes the whole batch: its float kernel is that kernel
    # on the rounded levels, which splits its own work (JPEG over threads, pixelate in L2-sized parts).
    cpu_whole = x.device.type != "cpu" or c.levels is not None
    workers = 1 if cpu_whole else _workers()
    step = n if cpu_whole else min(max(1, _CPU_CHUNK // x[0].numel()), -(-n // workers))
    if step >= n:
        return post(_apply_chunk(c, pre(x), params, seeds, h, w))
    # On the CPU, chunks whose temporaries stay in cache run 1.7x faster over the 15 at 224 px than one large
    # batch, whose buffers are fresh mmaps that page-fault on every pass (docs/performance.md). Every
    # image's draws come from its own generator, so the output does not depend on the split.
    out = torch.empty(x.shape, dtype=torch.uint8 if levels else x.dtype, device=x.device)

    def part(i: int) -> None:
        out[i : i + step] = post(_apply_chunk(c, pre(x[i : i + step]), params, seeds[i : i + step], h, w))

    # The parts run side by side on single-threaded workers (_parallel): no barrier per operation.
    run_parts(part, range(0, n, step), workers)
    return out


# About 1.2 M values (8 images at 224 px, 400 at 32 px) per chunk on the CPU.
_CPU_CHUNK = 1_250_000


def _apply_chunk(c: Corruption, x: torch.Tensor, params: Params, seeds: Sequence[int], h: int, w: int):
    draws = c.sample(Draws(seeds, x.device), h, w, params) if c.sample is not None else {}
    return c.apply(x, params, draws)


def corrupt(images, corruption: str | None = None, severity: int = 1, *, suite: str = "imagenet-c", seed: int = 0,
            index=None, quantize: bool = True, corruption_name: str | None = None,
            corruption_number: int | None = None):
    """Corrupt images with one (corruption, severity) cell of a suite's table.

    The reference package's call convention works too: ``corrupt(image, corruption_name="fog",
    severity=3)`` or ``corruption_number=9`` (the index in ``corruption_names(suite, extra=True)``, the
    reference's order), on uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` images.

    Args:
        images: a float tensor ``(N, 3, H, W)`` or ``(3, H, W)`` in [0, 1] (same shape back, float);
            a uint8 tensor of those shapes (uint8 back); or a uint8 numpy image ``(H, W, 3)`` or
            ``(H, W)`` as the reference package takes (uint8 ``(H, W, 3)`` back).
        corruption: a name from ``corruption_names(suite, extra=True)``.
        severity: 1..5.
        suite: ``imagenet-c`` (224 px), ``cifar10-c``/``cifar100-c`` (32 px), ``tinyimagenet-c`` (64 px).
        seed: the run's seed; with ``index`` it keys each image's randomness.
        index: an int or N ints naming the images (e.g. their dataset indices); default 0..N-1.
        quantize: floor float outputs to the 8-bit grid as the reference's ``np.uint8`` does.

    Examples:
        >>> import torch, robustbench_augmix as rba
        >>> x = torch.rand(2, 3, 32, 32)
        >>> y = rba.corrupt(x, "gaussian_noise", 3, suite="cifar10-c", seed=1)
        >>> y.shape, bool(torch.equal(y, rba.corrupt(x, "gaussian_noise", 3, suite="cifar10-c", seed=1)))
        (torch.Size([2, 3, 32, 32]), True)
    """
    s = load_suite(suite)
    corruption = _resolve_name(s, corruption, corruption_name, corruption_number)
    check_corruption(corruption, s)
    severity = _check_severity(severity)

    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputError(f"numpy images must be uint8 (H, W, 3) or (H, W), got dtype {images.dtype}; "
                             "pass a float tensor (N, 3, H, W) in [0, 1] for float data")
        if images.ndim == 3 and images.shape[2] == 1:
            images = images[:, :, 0]
        if images.ndim == 2:
            images = np.repeat(images[:, :, None], 3, axis=2)
        if images.ndim != 3 or images.shape[2] != 3:
            raise InputError(f"numpy images must have shape (H, W, 3), (H, W, 1) or (H, W), got {images.shape}")
        _check_size(images.shape[:2])
        x = torch.from_numpy(np.array(images, copy=True)).permute(2, 0, 1)[None]
        seeds = _seeds(seed, s, corruption, severity, index, 1)
        y = apply(x, corruption, severity, suite=suite, seeds=seeds, levels=True)
        return y[0].permute(1, 2, 0).numpy()

    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a torch tensor or a uint8 numpy array, got {type(images).__name__}")
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"images must have shape (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    _check_size(x.shape[-2:])
    if x.dtype == torch.uint8:
        y = apply(x, corruption, severity, suite=suite, seeds=_seeds(seed, s, corruption, severity, index, x.shape[0]),
                  levels=True)
        return y[0] if single else y
    if not x.dtype.is_floating_point:
        raise InputError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    else:
        if torch.isnan(x).any():
            raise InputError("images contain NaN values")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise InputError(f"float images must lie in [0, 1], got range [{float(x.min()):.4g}, "
                             f"{float(x.max()):.4g}]; divide uint8 data by 255")
    seeds = _seeds(seed, s, corruption, severity, index, x.shape[0])
    orig_dtype = x.dtype
    y = apply(x.float(), corruption, severity, suite=suite, seeds=seeds)
    y = (floor_levels(y) if quantize else y).to(orig_dtype)
    return y[0] if single else y


def _resolve_name(s: Suite, corruption, name, number) -> str:
    given = [v is not None for v in (corruption, name, number)]
    if sum(given) != 1:
        raise InputError("name the corruption once: corrupt(images, 'fog', 3), or the reference package's "
                         "corruption_name='fog' or corruption_number=9")
    if number is not None:
        names = s.names(extra=True)
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or not 0 <= number < len(names):
            raise InputError(f"corruption_number must be an integer in 0..{len(names) - 1} "
                             f"({', '.join(names)}), got {number!r}")
        return names[int(number)]
    return corruption if corruption is not None else name


def _seeds(seed, s: Suite, corruption: str, severity: int, index, n: int) -> list[int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    return image_seeds(int(seed), s.id, corruption, severity, _indices(index, n))

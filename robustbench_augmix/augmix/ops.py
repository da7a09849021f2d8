"""The AugMix augmentation operations on PIL images, as the paper's released code defines them
(google-research/augmix ``augmentations.py``), with their randomness drawn from an explicit generator.

Every call draws a fresh level ``l ~ U(0.1, severity)`` (l.52-53) and, for the geometric ops, a random
sign; magnitudes follow the release: posterize ``4 - int(0.4 l)`` bits, rotate ``int(3 l)`` degrees,
solarize threshold ``256 - int(25.6 l)``, shear ``0.03 l``, translate ``int(l * size / 30)`` pixels and
the enhance factors ``0.18 l + 0.1``. Unlike the release, the output canvas and the translate range
follow the image's own size (the release uses a module-global ``IMAGE_SIZE``, which crops or pads
silently when the input differs), and the fill colour is the release's black.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .._common import InputError

# The 9 default operations (augmentations.py l.141-144) and the 4 that --all-ops adds (l.146-149).
# The 4 overlap with ImageNet-C's test corruptions (colour, contrast, brightness, sharpness/blur), which is
# why the paper leaves them out by default.
DEFAULT_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
               "translate_x", "translate_y")
EXTRA_OPS = ("color", "contrast", "brightness", "sharpness")


@dataclass(frozen=True)
class OpDraw:
    """One operation call: which op, its level in [0.1, severity), and a sign for the geometric ops."""

    op: str
    level: float
    sign: int


def sample_op(rng: np.random.Generator, ops: tuple[str, ...], severity: float) -> OpDraw:
    """Draw an op uniformly (with replacement, as ``np.random.choice``), then its level, then a sign."""
    op = ops[int(rng.integers(len(ops)))]
    level = float(rng.uniform(0.1, severity))
    sign = -1 if rng.uniform() > 0.5 else 1
    return OpDraw(op, level, sign)


def magnitude(op: str, level: float, size: int) -> float | int | None:
    """The op's magnitude for ``level`` (the release's ``int_parameter`` / ``float_parameter``)."""
    if op == "posterize":
        return 4 - int(level * 4 / 10)
    if op == "rotate":
        return int(level * 30 / 10)
    if op == "solarize":
        return 256 - int(level * 256 / 10)
    if op in ("shear_x", "shear_y"):
        return level * 0.3 / 10
    if op in ("translate_x", "translate_y"):
        return int(level * (size / 3) / 10)
    if op in EXTRA_OPS:
        return level * 1.8 / 10 + 0.1
    return None


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


_APPLY: dict[str, Callable[[Image.Image, float | int | None, int], Image.Image]] = {
    "autocontrast": lambda im, m, s: ImageOps.autocontrast(im),
    "equalize": lambda im, m, s: ImageOps.equalize(im),
    "posterize": lambda im, m, s: ImageOps.posterize(im, int(m)),
    "rotate": lambda im, m, s: im.rotate(s * m, resample=Image.BILINEAR),
    "solarize": lambda im, m, s: ImageOps.solarize(im, int(m)),
    "shear_x": lambda im, m, s: _affine(im, (1, s * m, 0, 0, 1, 0)),
    "shear_y": lambda im, m, s: _affine(im, (1, 0, 0, s * m, 1, 0)),
    "translate_x": lambda im, m, s: _affine(im, (1, 0, s * m, 0, 1, 0)),
    "translate_y": lambda im, m, s: _affine(im, (1, 0, 0, 0, 1, s * m)),
    "color": lambda im, m, s: ImageEnhance.Color(im).enhance(m),
    "contrast": lambda im, m, s: ImageEnhance.Contrast(im).enhance(m),
    "brightness": lambda im, m, s: ImageEnhance.Brightness(im).enhance(m),
    "sharpness": lambda im, m, s: ImageEnhance.Sharpness(im).enhance(m),
}


def apply_op(img: Image.Image, draw: OpDraw) -> Image.Image:
    """Apply one drawn operation to an RGB PIL image (same size back)."""
    if draw.op not in _APPLY:
        raise InputError(f"unknown AugMix operation {draw.op!r}; accepted: {', '.join(_APPLY)}")
    return _APPLY[draw.op](img, magnitude(draw.op, draw.level, max(img.size)), draw.sign)

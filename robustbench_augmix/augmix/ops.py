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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .._common import InputError
from . import kernels as K

# The 9 default operations (augmentations.py l.141-144) and the 4 that --all-ops adds (l.146-149).
# The 4 overlap with ImageNet-C's test corruptions (colour, contrast, brightness, sharpness/blur), which is
# why the paper leaves them out by default.
DEFAULT_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
               "translate_x", "translate_y")
EXTRA_OPS = ("color", "contrast", "brightness", "sharpness")
OPS = DEFAULT_OPS + EXTRA_OPS  # an op's index in a drawn view (MixDraw.op)


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


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


@dataclass(frozen=True)
class Op:
    """One AugMix operation: its magnitude formula and its two kernels, which give the same pixels.

    ``magnitude(level, size)`` is the release's ``int_parameter`` / ``float_parameter`` (None: no
    parameter); ``pil(img, magnitude, sign)`` works on an RGB PIL image; ``batch(x, magnitudes, signs)`` on
    float (B, 3, H, W) holding 0..255 with per-image magnitudes (B,) and signs (B,) (:mod:`.kernels`)."""

    name: str
    magnitude: Callable[[float, int], float | int | None]
    pil: Callable[[Image.Image, float | int | None, int], Image.Image]
    batch: Callable
    extra: bool = False


def _enhance(name: str, cls) -> Op:
    # factor 0.18 l + 0.1 (augmentations.py float_parameter(level, 1.8) + 0.1)
    return Op(name, lambda lv, n: lv * 1.8 / 10 + 0.1, lambda im, m, s: cls(im).enhance(m), K._enhance_b(name),
              extra=True)


# Magnitudes: google-research/augmix augmentations.py l. 20-27 (int_parameter, float_parameter) and the op
# functions l. 54-138; the translate range is size / 3 of the image's own size (IMAGE_SIZE / 3 there).
OP_TABLE: dict[str, Op] = {op.name: op for op in (
    Op("autocontrast", lambda lv, n: None, lambda im, m, s: ImageOps.autocontrast(im), K.autocontrast_b),
    Op("equalize", lambda lv, n: None, lambda im, m, s: ImageOps.equalize(im), K.equalize_b),
    Op("posterize", lambda lv, n: 4 - int(lv * 4 / 10), lambda im, m, s: ImageOps.posterize(im, int(m)),
       K.posterize_b),
    Op("rotate", lambda lv, n: int(lv * 30 / 10), lambda im, m, s: im.rotate(s * m, resample=Image.BILINEAR),
       K.rotate_b),
    Op("solarize", lambda lv, n: 256 - int(lv * 256 / 10), lambda im, m, s: ImageOps.solarize(im, int(m)),
       K.solarize_b),
    Op("shear_x", lambda lv, n: lv * 0.3 / 10, lambda im, m, s: _affine(im, (1, s * m, 0, 0, 1, 0)), K.shear_x_b),
    Op("shear_y", lambda lv, n: lv * 0.3 / 10, lambda im, m, s: _affine(im, (1, 0, 0, s * m, 1, 0)), K.shear_y_b),
    Op("translate_x", lambda lv, n: int(lv * (n / 3) / 10), lambda im, m, s: _affine(im, (1, 0, s * m, 0, 1, 0)),
       K.translate_x_b),
    Op("translate_y", lambda lv, n: int(lv * (n / 3) / 10), lambda im, m, s: _affine(im, (1, 0, 0, 0, 1, s * m)),
       K.translate_y_b),
    _enhance("color", ImageEnhance.Color),
    _enhance("contrast", ImageEnhance.Contrast),
    _enhance("brightness", ImageEnhance.Brightness),
    _enhance("sharpness", ImageEnhance.Sharpness),
)}
assert tuple(OP_TABLE) == OPS


def _op(name: str) -> Op:
    if name not in OP_TABLE:
        raise InputError(f"unknown AugMix operation {name!r}; accepted: {', '.join(OP_TABLE)}")
    return OP_TABLE[name]


def magnitude(op: str, level: float, size: int) -> float | int | None:
    """The op's magnitude for ``level`` on an image whose longer side is ``size``."""
    return _op(op).magnitude(level, size)


def apply_op(img: Image.Image, draw: OpDraw) -> Image.Image:
    """Apply one drawn operation to an RGB PIL image (same size back)."""
    op = _op(draw.op)
    return op.pil(img, op.magnitude(draw.level, max(img.size)), draw.sign)


def apply_op_batch(x, op: str, level, sign):
    """One operation on a batch, each image with its own level and sign (same results as :func:`apply_op`
    on each image).

    Args:
        x: (B, 3, H, W) float holding integer values 0..255.
        level, sign: (B,) float64 levels and +-1 signs (tensors or sequences).
    """
    o = _op(op)
    size = max(x.shape[-2:])
    lv: Sequence[float] = np.asarray(level.cpu() if hasattr(level, "cpu") else level, dtype=np.float64).tolist()
    sg = np.asarray(sign.cpu() if hasattr(sign, "cpu") else sign).tolist()
    return o.batch(x, [o.magnitude(v, size) for v in lv], sg)

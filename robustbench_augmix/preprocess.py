"""What a model expects after corruption, and the one place it is derived from a card, a builder or a module.

A :class:`Preprocess` takes the corrupted images as float ``(N, 3, H, W)`` in [0, 1] at the suite's size and
returns the model's input: an optional resize of the shorter side, a centre crop, then ``(x - mean) / std``.
It is never chosen by the evaluation loop: :func:`resolve_preprocess` derives it from the model card, the
builder's pretrained configuration (timm), or the ``rba_preprocess`` attribute a user's factory sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ._common import RBAError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)
# The AugMix CIFAR code normalises with mean = std = 0.5 (google-research/augmix cifar.py l. 297-299).
CIFAR_AUGMIX_MEAN = CIFAR_AUGMIX_STD = (0.5, 0.5, 0.5)


class PreprocessError(RBAError, ValueError):
    """The images do not fit the model's input (e.g. smaller than its crop)."""


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side, antialiased), centre crop, normalise.

    Args:
        mean, std: per-channel normalisation.
        resize: the shorter side after resizing (None: keep the size).
        crop: the side of the centre crop (None: no crop).
        interpolation: ``bilinear`` or ``bicubic`` (``torch.nn.functional.interpolate`` modes).

    Examples:
        >>> import torch
        >>> p = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=36, crop=32)
        >>> p(torch.full((2, 3, 40, 48), 0.5)).shape
        torch.Size([2, 3, 32, 32])
        >>> float(p(torch.ones(1, 3, 32, 32)).mean())
        1.0
    """

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"

    def __call__(self, x):
        """float ``(N, 3, H, W)`` in [0, 1] -> the model's input ``(N, 3, crop or H', crop or W')``."""
        import torch
        import torch.nn.functional as F

        if self.resize is not None and min(x.shape[-2:]) != self.resize:
            h, w = x.shape[-2:]
            size = (self.resize, round(w * self.resize / h)) if h <= w else (round(h * self.resize / w), self.resize)
            x = F.interpolate(x, size=size, mode=self.interpolation, antialias=True, align_corners=False)
        if self.crop is not None and tuple(x.shape[-2:]) != (self.crop, self.crop):
            h, w = x.shape[-2:]
            if h < self.crop or w < self.crop:
                raise PreprocessError(f"images of {h}x{w} px are smaller than the model's crop {self.crop}")
            top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
            x = x[..., top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def resolve_preprocess(source: Any, *, model=None, image_size: int | None = None) -> Preprocess:
    """The :class:`Preprocess` of a model, derived from what describes it.

    Args:
        source: a zoo :class:`~robustbench_augmix.zoo.Card` (its ``[preprocess]`` normalisation), a builder
            string (``cifar:NAME``: the AugMix CIFAR statistics; ``timm:NAME``: timm's pretrained config of
            ``model``; ``torchvision:NAME``: the ImageNet statistics), or a module (its ``rba_preprocess``
            attribute, else the identity).
        model: the built module, for a ``timm:`` builder's pretrained configuration.
        image_size: the suite's image size: a builder's model is resized to its own input size only when
            that differs.
    """
    import torch

    if isinstance(source, torch.nn.Module):
        return getattr(source, "rba_preprocess", None) or Preprocess()
    if hasattr(source, "preprocess") and hasattr(source, "builder"):  # a zoo Card
        pre = source.preprocess
        return Preprocess(mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                          interpolation=pre.get("interpolation", "bilinear"))
    if not isinstance(source, str):
        raise TypeError(f"resolve_preprocess() takes a Card, a builder string or a module, not {type(source).__name__}")
    if source.startswith("cifar:"):
        return Preprocess(mean=CIFAR_AUGMIX_MEAN, std=CIFAR_AUGMIX_STD)
    mean, std, size, interp = IMAGENET_MEAN, IMAGENET_STD, image_size, "bilinear"
    if source.startswith("timm:") and model is not None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        mean, std, size = tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1])
        interp = cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear"
    if size is None or size == image_size:
        return Preprocess(mean=mean, std=std)
    return Preprocess(mean=mean, std=std, resize=size, crop=size, interpolation=interp)

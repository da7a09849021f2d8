"""The corruption registry: names -> (sampler, kernel), filled by the ``@register`` decorator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._rng import Draws
from .suites import Params

Sampler = Callable[[Draws, int, int, Params], dict[str, Any]]
Kernel = Callable[[torch.Tensor, Params, dict[str, Any]], torch.Tensor]
LevelsKernel = Callable[[torch.Tensor, Params], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``sample`` draws per-image parameters (leading dim N) from a :class:`Draws`;
    ``apply`` is deterministic given them: ``(x (N,3,H,W) float [0,1], params, draws) -> same shape``.

    ``levels``, where set, is a kernel for 8-bit data with no randomness, ``(uint8 (N,3,H,W), params)
    -> uint8``, equal to quantising ``apply``'s output: it skips two float conversions for a
    corruption that is an 8-bit operation in the reference (JPEG's libjpeg round trip, pixelate's
    Pillow resizes)."""

    name: str
    apply: Kernel
    sample: Sampler | None = None
    levels: LevelsKernel | None = None


REGISTRY: dict[str, Corruption] = {}


def register(name: str, sample: Sampler | None = None):
    """Register ``fn`` as the kernel of corruption ``name`` (its family is the module it lives in, and the
    suite tables name it)."""

    def deco(fn: Kernel) -> Kernel:
        if name in REGISTRY:
            raise ValueError(f"corruption {name!r} registered twice")
        REGISTRY[name] = Corruption(name, fn, sample)
        return fn

    return deco


def register_levels(name: str):
    """Attach the 8-bit CPU kernel of an already registered corruption."""

    def deco(fn: LevelsKernel) -> LevelsKernel:
        REGISTRY[name] = dataclasses.replace(REGISTRY[name], levels=fn)
        return fn

    return deco

"""The corruption registry: names -> (sampler, kernel), filled by the ``@register`` decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._rng import Draws
from .suites import Params

Sampler = Callable[[Draws, int, int, Params], dict[str, Any]]
Kernel = Callable[[torch.Tensor, Params, dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``sample`` draws per-image parameters (leading dim N) from a :class:`Draws`;
    ``apply`` is deterministic given them: ``(x (N,3,H,W) float [0,1], params, draws) -> same shape``."""

    name: str
    family: str
    apply: Kernel
    sample: Sampler | None = None


REGISTRY: dict[str, Corruption] = {}


def register(name: str, family: str, sample: Sampler | None = None):
    def deco(fn: Kernel) -> Kernel:
        if name in REGISTRY:
            raise ValueError(f"corruption {name!r} registered twice")
        REGISTRY[name] = Corruption(name, family, fn, sample)
        return fn

    return deco

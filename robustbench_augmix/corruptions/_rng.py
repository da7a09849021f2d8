"""Per-image randomness keyed on (seed, suite, corruption, severity, image index).

Every image gets its own ``torch.Generator`` seeded from a hash of its key, so an image's draws do
not depend on the batch it is in, the worker or process that handles it, or where a run resumed.
Small per-image parameters (angles, offsets, texture choices) are always drawn on the CPU; large
random fields are drawn on the device the batch lives on (CPU results are the reference; a CUDA
generator gives a different, equally valid stream, which may also depend on the GPU model, since its
kernels split a field over as many threads as the GPU has). So the device is part of every run's
identity (:func:`rng_device`): a run is never completed on a device that draws another stream.

Drawing the fields on the CPU and moving them would make the output device-independent, but costs far more
than the whole GPU budget: 13.5 ms of CPU time and 6 MiB to move per 224-px image over the random ones,
against 0.05 ms per image at the 20,000 images/s target (``benchmarks/rng_draws.py``, docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._common import key_hash


def image_seed(seed: int, suite: str, corruption: str, severity: int, index: int) -> int:
    """A 63-bit seed for one image, stable across platforms and Python versions."""
    return key_hash("rba/v1", seed, suite, corruption, severity, index) >> 1


def image_seeds(seed: int, suite: str, corruption: str, severity: int, index: Sequence[int]) -> list[int]:
    """:func:`image_seed` of every image index of a batch."""
    return [image_seed(seed, suite, corruption, severity, int(i)) for i in index]


def rng_device(device) -> str:
    """The device whose random stream a batch on ``device`` draws its fields from: ``"cpu"``, or
    ``"cuda:<GPU name>"`` (``"cuda:NVIDIA H200"``), or the device type for other accelerators."""
    d = torch.device(device)
    if d.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(d)}"
    return d.type


class Draws:
    """Draws random tensors with a leading per-image dimension N, one generator per image.

    Args:
        seeds: one seed per image (see :func:`image_seed`).
        device: where large fields are drawn and returned.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cpu = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self._dev: list[torch.Generator] | None = None

    def __len__(self) -> int:
        return len(self.cpu)

    @property
    def _field_gens(self) -> list[torch.Generator]:
        if self.device.type == "cpu":
            return self.cpu
        if self._dev is None:
            # A device generator per image, seeded from that image's CPU stream.
            self._dev = [
                torch.Generator(self.device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
                for g in self.cpu
            ]
        return self._dev

    def _field(self, fn, shape, dtype, **kw) -> torch.Tensor:
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.device)
        for i, g in enumerate(self._field_gens):
            fn(shape, generator=g, out=out[i], **kw)  # in place: no copy of the field
        return out

    def normal(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """Standard normal field ``(N, *shape)`` on the device."""
        return self._field(torch.randn, shape, dtype)

    def uniform(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        """U[0, 1) field ``(N, *shape)`` on the device."""
        return self._field(torch.rand, shape, dtype)

    def integers(self, low: int, high: int, *shape: int) -> torch.Tensor:
        """Integers in [low, high) ``(N, *shape)``, int64, on the device."""
        out = torch.empty((len(self), *shape), dtype=torch.int64, device=self.device)
        for i, g in enumerate(self._field_gens):
            out[i] = torch.randint(low, high, shape, generator=g, device=self.device)
        return out

    # Small parameters: always on the CPU, float64, so they are identical whatever the device.
    def scalars(self, low: float, high: float, *shape: int) -> torch.Tensor:
        """U[low, high) per image, ``(N, *shape)`` float64 on the CPU."""
        u = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in self.cpu])
        return low + (high - low) * u

    def choices(self, high: int, *shape: int) -> torch.Tensor:
        """Integers in [0, high) per image, ``(N, *shape)`` int64 on the CPU."""
        return torch.stack([torch.randint(high, shape, generator=g) for g in self.cpu])

"""The -P weather sequence whose frames are not independent: spatter, whose liquid layer runs down the image
from frame to frame (make_*_p.py's spatter block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..corruptions import Draws
from ..corruptions._ops import to_uint8
from ..corruptions.weather import add_water, liquid_layer, water_mask

__all__ = ["run_down", "spatter_sequence"]


def run_down(layer: torch.Tensor, kernel: tuple[float, ...]) -> torch.Tensor:
    """``np.convolve(column, kernel, mode='same')`` down every column of an (N, 1, H, W) layer: the new row r is
    ``sum_j kernel[j] * layer[r + (len(kernel) - 1) // 2 - j]`` (zero outside), summed in numpy's order."""
    h = layer.shape[-2]
    k = len(kernel)
    lead = (k - 1) // 2
    padded = F.pad(layer, (0, 0, k - 1 - lead, lead))                    # rows above and below the image
    out = torch.zeros_like(layer)
    for j in range(k):                                                    # numpy's full convolution, term by term
        start = (k - 1 - lead) + lead - j
        out += float(kernel[j]) * padded[..., start:start + h, :]
    return out


def spatter_sequence(images: torch.Tensor, spec, suite, seed: int, difficulty: int, idx, crop=None) -> torch.Tensor:
    """make_*_p.py's spatter: one liquid layer per sequence (a normal field keyed like frame 0's draws); frame i
    adds the water drops of the layer as it is then (the -C spatter's water mask, scaled to ``intensity``), and
    after each frame the layer runs down its columns by ``column_kernel``. (N, T, 3, H, W) uint8."""
    from ._core import sequence_seeds

    n, _, h, w = images.shape
    p = spec.params(difficulty, 0, suite)
    draws = Draws(sequence_seeds(seed, suite.id, spec.name, difficulty, 0, idx), images.device)
    layer = liquid_layer(draws.normal(1, h, w), p)
    x = images.float() / 255
    out = torch.empty((n, spec.frames, *images.shape[1:]), dtype=torch.uint8, device=images.device)
    kernel = tuple(float(v) for v in p.column_kernel)
    for i in range(spec.frames):
        out[:, i] = to_uint8(add_water(x, water_mask(layer, float(p.intensity))))
        layer = run_down(layer, kernel)
    return out

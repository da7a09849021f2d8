"""The batched AugMix path: the same draws as the per-image path, applied to a whole batch on the
training device, with every image's chains independent (no op chain shared across the batch).

Images travel as float tensors holding the uint8 values 0..255; each operation is the batched kernel of
its row of the op table (:data:`~robustbench_augmix.augmix.ops.OP_TABLE`, kernels in :mod:`.kernels`),
which reproduces Pillow's result bit for bit (tests/test_augmix.py).

Batched over chains: a batch of N images with V views of width W becomes N*V*W chains; at each depth
step the chains are grouped by operation and each group goes through its kernel in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .ops import OPS, apply_op_batch

if TYPE_CHECKING:
    from .mixing import MixDraw

__all__ = ["apply_op_batch", "augmix_batch", "encode_draws"]


def encode_draws(draws: Sequence[MixDraw], width: int, max_depth: int = 3) -> dict[str, torch.Tensor]:
    """Stack one image's V drawn views into tensors (the DataLoader's default collate stacks them over the
    batch): ``op`` (V, W, D) int64 (-1: no op), ``level`` (V, W, D) float64, ``sign`` (V, W, D) int64,
    ``ws`` (V, W) float32, ``m`` (V,) float32."""
    def stack(key, dtype, shape):
        return torch.from_numpy(np.array([getattr(d, key) for d in draws], dtype=dtype).reshape(len(draws), *shape))

    return {"op": stack("op", np.int64, (width, max_depth)), "level": stack("level", np.float64, (width, max_depth)),
            "sign": stack("sign", np.int64, (width, max_depth)), "ws": stack("ws", np.float32, (width,)),
            "m": stack("m", np.float32, ())}


def augmix_batch(x: torch.Tensor, draws: dict[str, torch.Tensor], mean: Sequence[float],
                 std: Sequence[float]) -> list[torch.Tensor]:
    """Normalised clean images and their AugMix views for a batch, on ``x``'s device.

    Args:
        x: (N, 3, H, W) uint8 images (after the base crop/flip).
        draws: :func:`encode_draws` output stacked over the batch: ``op`` (N, V, W, D) ...
        mean, std: the ``Normalize`` statistics; mixing happens after it, in float, as in the release.

    Returns:
        ``[clean, view_1, ..., view_V]``, each (N, 3, H, W) float32.
    """
    dev = x.device
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1))
    shift = -torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1) / torch.tensor(
        std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)

    def pre(t):  # ToTensor + Normalize on 0..255 values
        return t * scale + shift

    xf = x.float()
    n, v, w, d = draws["op"].shape
    if v == 0:
        return [pre(xf)]
    chains = xf[:, None, None].expand(n, v, w, *xf.shape[1:]).reshape(n * v * w, *xf.shape[1:]).clone()
    ops = draws["op"].reshape(n * v * w, d)
    level = draws["level"].reshape(n * v * w, d)
    sign = draws["sign"].reshape(n * v * w, d)
    for k in range(d):
        col = ops[:, k]
        for op_id in torch.unique(col).tolist():
            if op_id < 0:
                continue
            sel = (col == op_id).nonzero().squeeze(1)
            sel_dev = sel.to(dev)
            out = apply_op_batch(chains.index_select(0, sel_dev), OPS[op_id], level[sel, k], sign[sel, k])
            chains.index_copy_(0, sel_dev, out)
    # The release mixes after Normalize; Normalize is affine and the weights sum to one, so mixing the
    # 0..255 values first and normalising once is the same up to float rounding, and 2W times cheaper.
    ws = draws["ws"].to(dev, torch.float32).reshape(n * v, 1, w)
    mixed = torch.bmm(ws, chains.reshape(n * v, w, -1)).reshape(n, v, *xf.shape[1:])
    m = draws["m"].to(dev, torch.float32).view(n, v, 1, 1, 1)
    views = pre(torch.lerp(xf[:, None].expand_as(mixed), mixed, m).reshape(n * v, *xf.shape[1:]))
    return [pre(xf)] + list(views.reshape(n, v, *xf.shape[1:]).unbind(1))

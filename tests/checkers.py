"""Shared invariant checkers, written once and run over whole registries (as torchvision's ``check_kernel``).

``check_kernel(fn, x)`` takes a batched kernel ``fn(x, index) -> y`` whose randomness (if any) is keyed on
the image indices, and checks on the batch ``x`` (N >= 2):

- the input is not written in place;
- the dtype and device are kept (or become ``out_dtype``), the batch and spatial shape too;
- the values stay in ``value_range``;
- batched == per image: ``fn(x)[i] == fn(x[i:i+1], [i])`` (N = 1 works, and the output of an image does
  not depend on its batch);
- an empty batch gives an empty batch of the same shape;
- a non-contiguous view and a channels-last copy of the same pixels give the same output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _equal(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    if atol == 0:
        return torch.equal(a, b)
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, atol=atol, rtol=0)


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same pixels as a non-contiguous view (a slice of a wider tensor)."""
    wide = torch.zeros((*x.shape[:-1], x.shape[-1] + 3), dtype=x.dtype, device=x.device)
    wide[..., 1 : 1 + x.shape[-1]] = x
    view = wide[..., 1 : 1 + x.shape[-1]]
    assert not view.is_contiguous() and torch.equal(view, x)
    return view


def check_kernel(fn: Callable[[torch.Tensor, list[int]], torch.Tensor], x: torch.Tensor, *,
                 out_dtype: torch.dtype | None = None, value_range: tuple[float, float] | None = (0.0, 1.0),
                 atol: float = 0.0, same_shape: bool = True) -> torch.Tensor:
    """Run the checks above; returns ``fn(x)`` for further checks."""
    n = x.shape[0]
    assert n >= 2, "check_kernel needs a batch of at least 2 images"
    idx = list(range(n))
    before = x.clone()
    y = fn(x, idx)
    assert torch.equal(x, before), "the input was modified in place"
    assert y.dtype == (out_dtype or x.dtype), f"dtype {y.dtype}, expected {out_dtype or x.dtype}"
    assert y.device == x.device
    if same_shape:
        assert y.shape == x.shape, f"shape {tuple(y.shape)} from {tuple(x.shape)}"
    else:
        assert y.shape[0] == n
    if value_range is not None and y.numel():
        lo, hi = value_range
        assert float(y.min()) >= lo and float(y.max()) <= hi, (float(y.min()), float(y.max()))
    for i in (0, n - 1):
        assert _equal(fn(x[i : i + 1], [i])[0], y[i], atol), f"image {i} alone differs from its batch"
    empty = fn(x[:0], [])
    assert empty.shape == (0, *y.shape[1:]) and empty.dtype == y.dtype, tuple(empty.shape)
    assert _equal(fn(non_contiguous(x), idx), y, atol), "a non-contiguous input changed the output"
    if x.dim() == 4:
        assert _equal(fn(x.contiguous(memory_format=torch.channels_last), idx), y, atol), \
            "a channels-last input changed the output"
    return y

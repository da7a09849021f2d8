"""Shared fixtures: real photographs at each suite's native size, and the reference package."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from PIL import Image

# Determinism tests compare float kernels across batch sizes; keep the thread count as CI has it.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@functools.cache
def photographs() -> list[np.ndarray]:
    """Five real photographs (uint8 RGB): scikit-learn's and scikit-image's sample images."""
    from sklearn.datasets import load_sample_image

    pics = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    try:
        from skimage import data

        pics += [data.astronaut(), data.coffee(), data.chelsea()]
    except ImportError:  # pragma: no cover - scikit-image comes with the dev extra
        pass
    return pics


@functools.cache
def photo(i: int, size: int) -> np.ndarray:
    """Photograph i as the reference pipeline sees it: a centre square, resized (PIL bilinear)."""
    a = photographs()[i % len(photographs())]
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="session")
def reference():
    """bethgelab/imagecorruptions 1.1.2, the PyPI build of the ImageNet-C generator (shimmed)."""
    from robustbench_augmix._reference import load_reference

    try:
        return load_reference()
    except ImportError as e:
        pytest.skip(str(e))

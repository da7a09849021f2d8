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
    """bethgelab/imagecorruptions 1.1.2 (the PyPI build of the ImageNet-C generator), with the
    shims it needs on current libraries: pkg_resources (gone on Python 3.12 / new setuptools),
    skimage.filters.gaussian(multichannel=) (removed in scikit-image 0.20) and np.float_ (NumPy 2)."""
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("the reference package is not installed (pip install -e '.[dev]')")
    import skimage.filters

    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")

            def resource_filename(package, path):
                spec = importlib.util.find_spec(package)
                return os.path.join(os.path.dirname(spec.origin), path)

            shim.resource_filename = resource_filename
            sys.modules["pkg_resources"] = shim
    if not getattr(skimage.filters.gaussian, "_rba_shim", False):
        orig = skimage.filters.gaussian

        def gaussian(image, sigma=1, *args, multichannel=None, **kw):
            if multichannel:
                kw["channel_axis"] = -1
            return orig(image, sigma, *args, **kw)

        gaussian._rba_shim = True
        skimage.filters.gaussian = gaussian
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    import imagecorruptions.corruptions as ic

    ic.gaussian = skimage.filters.gaussian
    return imagecorruptions

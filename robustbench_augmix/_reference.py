"""Load the reference package ``imagecorruptions`` 1.1.2 (bethgelab; the PyPI build of the
ImageNet-C generator) on current libraries, for fidelity tests and side-by-side benchmarks.

It needs three shims: ``pkg_resources`` (gone with Python 3.12 / new setuptools),
``skimage.filters.gaussian(multichannel=...)`` (removed in scikit-image 0.20) and ``np.float_``
(removed in NumPy 2). None of this is used by the toolkit itself.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types


def load_reference():
    """Import and return the patched ``imagecorruptions`` module, or raise ImportError with the fix."""
    if importlib.util.find_spec("imagecorruptions") is None or importlib.util.find_spec("skimage") is None:
        raise ImportError("the reference package is not installed: pip install 'robustbench-augmix[reference]'")
    import numpy as np
    import skimage.filters

    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")

            def resource_filename(package, path):
                return os.path.join(os.path.dirname(importlib.util.find_spec(package).origin), path)

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
        setattr(np, "float_", np.float64)  # noqa: B010 - spelled so that NumPy-2 fixers leave it alone
    import imagecorruptions
    import imagecorruptions.corruptions as ic

    ic.gaussian = skimage.filters.gaussian
    return imagecorruptions

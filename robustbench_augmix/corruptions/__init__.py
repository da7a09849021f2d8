"""The common corruptions of ImageNet-C, CIFAR-10/100-C and Tiny-ImageNet-C as batched kernels.

``corrupt(images, "fog", 3, suite="cifar10-c", seed=0)`` applies one (corruption, severity) cell of a
suite's table to a batch. Every image's randomness is keyed on (seed, suite, corruption, severity,
index), so the output does not depend on batching, workers, processes or resumption.

The suite tables (:func:`suites`, :func:`load_suite`, :func:`corruption_names`) load without torch, so
``rb-corrupt --list`` answers at once; the kernels and everything that needs torch are imported on
first use of their names (PEP 562).
"""

from __future__ import annotations

from .._common import lazy_exports
from .suites import SEVERITIES, CorruptionSpec, Params, Suite, corruption_names, load_suite, suites

# name -> the submodule that defines it; importing ``_core`` fills the registry.
_LAZY = {
    **dict.fromkeys(("MIN_IMAGE_SIZE", "REGISTRY", "Corruption", "UnknownCorruption", "apply", "check_corruption",
                     "corrupt", "floor_levels", "levels_to_float", "to_uint8"), "_core"),
    **dict.fromkeys(("Draws", "image_seed", "image_seeds", "rng_device"), "_rng"),
    **dict.fromkeys(("FrostTexturesMissing", "set_frost_dir"), "_frost"),
}

__all__ = [
    "REGISTRY", "SEVERITIES", "Corruption", "CorruptionSpec", "FrostTexturesMissing", "Params", "Suite",
    "UnknownCorruption", "apply", "check_corruption", "corrupt", "corruption_names", "image_seed", "image_seeds",
    "load_suite", "rng_device", "set_frost_dir", "suites",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

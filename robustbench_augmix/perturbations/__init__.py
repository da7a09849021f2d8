"""The perturbation-stability benchmarks (CIFAR-10-P, CIFAR-100-P, Tiny-ImageNet-P, ImageNet-P): their tables
(:func:`psuites`, :func:`load_psuite`, :func:`perturbation_names`, no torch) and the sequence kernels
(:func:`perturb`, imported on first use). The metrics are in :mod:`robustbench_augmix.metrics`
(:func:`~robustbench_augmix.metrics.flip_probability`, :func:`~robustbench_augmix.metrics.top5_distance`,
:func:`~robustbench_augmix.metrics.mean_flip_rate`).
"""

from __future__ import annotations

from .._common import lazy_exports
from .tables import DIFFICULTIES, SPLITS, PerturbationSpec, PSuite, load_psuite, perturbation_names, psuites

_LAZY = dict.fromkeys(("NotGeneratedYet", "UnknownPerturbation", "check_perturbation", "perturb", "sequence_seeds"),
                      "_core")

__all__ = ["DIFFICULTIES", "SPLITS", "NotGeneratedYet", "PSuite", "PerturbationSpec", "UnknownPerturbation",
           "check_perturbation", "load_psuite", "perturb", "perturbation_names", "psuites", "sequence_seeds"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

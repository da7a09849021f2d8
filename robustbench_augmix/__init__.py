"""robustbench-augmix: common-corruption robustness for image classifiers.

The public API: :func:`corrupt`, :func:`corruption_names`, :func:`suites`, :func:`load_suite`,
:func:`perturb`, :func:`perturbation_names`, :func:`psuites` (the -P sequences),
:func:`set_frost_dir`, :func:`evaluate` (with :class:`Preprocess` and :class:`Results`), :func:`load_model`
(a zoo card -> model, preprocessing, provenance), :func:`resolve_model` (every way of naming a model) and
:class:`RBAError`, the base class of every error a user can cause.

The names are imported on first use (PEP 562), so ``rb-eval --help``, ``rb-zoo list`` and ``rb-train
--list`` answer without importing torch.
"""

from __future__ import annotations

from ._common import RBAError, lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "corrupt": "corruptions", "corruption_names": "corruptions", "load_suite": "corruptions",
    "set_frost_dir": "corruptions", "suites": "corruptions",
    "perturb": "perturbations", "perturbation_names": "perturbations", "psuites": "perturbations",
    "Preprocess": "preprocess", "Results": "evaluation", "evaluate": "evaluation",
    "load_model": "zoo", "resolve_model": "zoo",
}
__all__ = ["Preprocess", "RBAError", "Results", "__version__", "corrupt", "corruption_names", "evaluate",
           "load_model", "load_suite", "perturb", "perturbation_names", "psuites", "resolve_model", "set_frost_dir",
           "suites"]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

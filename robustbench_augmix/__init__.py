"""robustbench-augmix: common-corruption robustness for image classifiers.

The public API: :func:`corrupt`, :func:`corruption_names`, :func:`suites`, :func:`load_suite`,
:func:`set_frost_dir`, :func:`evaluate` (with :class:`Preprocess` and :class:`Results`), :func:`load_model`
(a zoo card -> model, preprocessing, provenance), :func:`resolve_model` (every way of naming a model) and
:class:`RBAError`, the base class of every error a user can cause.
"""

from ._common import RBAError
from .corruptions import corrupt, corruption_names, load_suite, set_frost_dir, suites
from .evaluation import Preprocess, Results, evaluate
from .zoo import load_model, resolve_model

__version__ = "0.1.0"
__all__ = ["Preprocess", "RBAError", "Results", "__version__", "corrupt", "corruption_names", "evaluate",
           "load_model", "load_suite", "resolve_model", "set_frost_dir", "suites"]

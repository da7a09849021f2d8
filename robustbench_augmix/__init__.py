"""robustbench-augmix: common-corruption robustness for image classifiers.

The public API: :func:`corrupt`, :func:`corruption_names`, :func:`suites`, :func:`load_suite`,
:func:`set_frost_dir`, :func:`evaluate` (with :class:`Preprocess` and :class:`Results`).
"""

from .corruptions import corrupt, corruption_names, load_suite, set_frost_dir, suites
from .evaluation import Preprocess, Results, evaluate

__version__ = "0.1.0"
__all__ = ["Preprocess", "Results", "__version__", "corrupt", "corruption_names", "evaluate", "load_suite",
           "set_frost_dir", "suites"]

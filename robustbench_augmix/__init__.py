"""robustbench-augmix: common-corruption robustness for image classifiers.

The public API: :func:`corrupt`, :func:`corruption_names`, :func:`suites`, :func:`load_suite`,
:func:`set_frost_dir`.
"""

from .corruptions import corrupt, corruption_names, load_suite, set_frost_dir, suites

__version__ = "0.1.0"
__all__ = ["__version__", "corrupt", "corruption_names", "load_suite", "set_frost_dir", "suites"]

"""Evaluate a classifier on a corruption suite: streaming, resumable, exact under torchrun.

The images are cut into fixed chunks (``chunk_size`` images, independent of the batch size and of the
number of processes). For each chunk and each (corruption, severity) cell the per-image outcomes
(top-1 / top-5 correct, confidence, NLL) are kept and written atomically as soon as the chunk is done;
a restarted run computes only what is missing. The modules, one job each:

- :mod:`.engine`: :class:`Config`, :class:`Evaluation` (the loop) and :func:`evaluate`;
- :mod:`.inputs`: opening the clean and pre-generated data, labels and the class mapping;
- :mod:`.cache`: the run identity (the device included) and the chunk cache;
- :mod:`.summary`: per-cell rows, aggregates, bootstrap intervals, the CE baseline;
- :mod:`.results`: the results document (:class:`Results`: JSON, CSV, table);
- :mod:`.stability`: :func:`evaluate_stability`, a model on a -P suite (flip probability, T5D, mFR).
"""

from ..preprocess import Preprocess
from .cache import SCHEMA, CacheMismatch, EvaluationError, model_fingerprint
from .engine import TRIM_EVERY, Config, Evaluation, evaluate
from .results import Results
from .stability import evaluate_stability
from .summary import CALIBRATION_REPLICATES, CLEAN, FIELDS, summarize

__all__ = ["CALIBRATION_REPLICATES", "CLEAN", "FIELDS", "SCHEMA", "TRIM_EVERY", "CacheMismatch", "Config",
           "Evaluation", "EvaluationError", "Preprocess", "Results", "evaluate", "evaluate_stability",
           "model_fingerprint", "summarize"]

"""Robustness metrics: pure functions over numpy arrays.

Notation: ``E[c, s]`` is the top-1 error of a model on corruption ``c`` at severity ``s`` (a fraction
in [0, 1]); ``E_clean`` its clean error; ``A[c, s]``, ``A_clean`` the same for the baseline model
(AlexNet for ImageNet-C unless another baseline is given).

- Corruption error, CIFAR style (AugMix paper, ``cifar.py:test_c``): ``err_c = mean_s E[c, s]`` and the
  "mean corruption error" ``mean_c err_c`` over the 15 benchmark corruptions, unnormalised.
- CE, ImageNet style (Hendrycks & Dietterich 2019, eq. 1): ``CE_c = sum_s E[c, s] / sum_s A[c, s]``;
  ``mCE = mean_c CE_c``. Relative CE: ``sum_s (E[c, s] - E_clean) / sum_s (A[c, s] - A_clean)``.
  Reported x100 by convention; the functions here return fractions.
- RMS calibration error (Hendrycks et al., arXiv 1812.04606 p.16; the Outlier Exposure code
  ``utils/calibration_tools.py:calib_err``): sort samples by confidence (max softmax), cut them into
  equal-mass bins of ``bin_size`` consecutive samples (the last bin takes the remainder), and return
  ``sqrt(sum_b (n_b / N) * (mean conf_b - mean acc_b)^2)``.
- ECE (Guo et al. 2017): 15 equal-width confidence bins ``(lo, hi]``, ``sum_b (n_b / N) |acc_b - conf_b|``.
- Bootstrap intervals resample *images* with replacement; every cell of a suite sees the same images,
  so one resample is applied to all cells at once (a paired bootstrap).
- Perturbation stability, -P (Hendrycks & Dietterich 2019, sec. 3; ``hendrycks/robustness``
  ``ImageNet-P/test.py`` l.215-273 and ``cifar-p-eval.py`` l.194-210): over the frame pairs of a sequence
  (:func:`frame_pairs`: each frame against frame 0 for the noise sequences, else consecutive frames of
  every stride-``d`` subsequence at difficulty ``d``), the flip probability FP is the share of pairs whose
  top-1 prediction differs and the top-5 distance T5D the mean of ``sum_{k=1..5} |(k - 1) - min(s(k) - 1,
  5)|``, ``s(k)`` the rank in the later frame of the class ranked ``k`` in the earlier one; both averaged
  per sequence, then over sequences. FR and the T5D ratio divide by a baseline's (AlexNet's for
  ImageNet-P); mFR and mT5D average them over the test perturbations. CIFAR papers report the plain mean
  FP instead (``cifar-p-eval.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ._common import InputError

Cell = tuple[str, int]


def error(correct: np.ndarray) -> float:
    """Error rate: ``1 - mean(correct)`` over a boolean or 0/1 array.

    Examples:
        >>> error([True, False, True, True])
        0.25
    """
    correct = np.asarray(correct)
    if correct.size == 0:
        raise InputError("error of an empty set of predictions is undefined")
    return float(1.0 - correct.mean())


def corruption_errors(cell_errors: Mapping[Cell, float]) -> dict[str, float]:
    """``err_c = mean_s E[c, s]`` for every corruption in ``cell_errors`` (keyed ``(c, s)``)."""
    by: dict[str, list[float]] = {}
    for (c, _), e in cell_errors.items():
        by.setdefault(c, []).append(float(e))
    return {c: float(np.mean(v)) for c, v in by.items()}


def mean_corruption_error(cell_errors: Mapping[Cell, float], names: Sequence[str]) -> float:
    """The AugMix paper's CIFAR metric: mean over ``names`` of the severity-averaged errors."""
    per = corruption_errors(cell_errors)
    missing = [c for c in names if c not in per]
    if missing:
        raise InputError(f"no errors for {missing}")
    return float(np.mean([per[c] for c in names]))


def corruption_error(errors: Sequence[float], baseline: Sequence[float]) -> float:
    """``CE = sum_s E_s / sum_s A_s`` over the same severities (Hendrycks & Dietterich 2019, eq. 1).

    Examples:
        >>> corruption_error([0.2, 0.4], [0.5, 0.5])  # (0.2 + 0.4) / (0.5 + 0.5)
        0.6000000000000001
    """
    e, a = np.asarray(errors, float), np.asarray(baseline, float)
    if e.shape != a.shape or e.size == 0:
        raise InputError(f"need one baseline error per severity, got {e.size} and {a.size}")
    return float(e.sum() / a.sum())


def relative_corruption_error(errors: Sequence[float], clean: float, baseline: Sequence[float],
                              baseline_clean: float) -> float:
    """``sum_s (E_s - E_clean) / sum_s (A_s - A_clean)`` (Hendrycks & Dietterich 2019, sec. 3)."""
    e, a = np.asarray(errors, float), np.asarray(baseline, float)
    if e.shape != a.shape or e.size == 0:
        raise InputError(f"need one baseline error per severity, got {e.size} and {a.size}")
    return float((e - clean).sum() / (a - baseline_clean).sum())


def mce(cell_errors: Mapping[Cell, float], baseline: Mapping[Cell, float], names: Sequence[str]) -> float:
    """Mean CE over ``names``; each CE uses the severities present in ``cell_errors``."""
    return float(np.mean([corruption_error(*_paired(cell_errors, baseline, c)) for c in names]))


def relative_mce(cell_errors: Mapping[Cell, float], clean: float, baseline: Mapping[Cell, float],
                 baseline_clean: float, names: Sequence[str]) -> float:
    """Mean relative CE over ``names``."""
    return float(np.mean([
        relative_corruption_error(e, clean, a, baseline_clean)
        for e, a in (_paired(cell_errors, baseline, c) for c in names)
    ]))


def _paired(cell_errors, baseline, c: str) -> tuple[list[float], list[float]]:
    sevs = sorted(s for (cc, s) in cell_errors if cc == c)
    if not sevs:
        raise InputError(f"no errors for {c!r}")
    missing = [s for s in sevs if (c, s) not in baseline]
    if missing:
        raise InputError(f"the baseline has no error for {c!r} at severities {missing}")
    return [cell_errors[(c, s)] for s in sevs], [baseline[(c, s)] for s in sevs]


# ------------------------------------------------------------------------------------- calibration
def confidence_order(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """The order the adaptive bins are cut in: by confidence, and among equal confidences wrong before
    right. The reference sorts by confidence alone with an unstable sort, so with ties (float32 confidence
    1.0 for many samples) its bins, and its value, depend on the input order; this order depends only on
    the (confidence, correct) pairs."""
    return np.lexsort((np.asarray(correct).astype(np.int8), conf))


def _binned_gaps(conf: np.ndarray, correct: np.ndarray, weights: np.ndarray | None, bin_size: int,
                 presorted: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Equal-mass bins over the confidence-sorted sequence in which sample ``j`` appears ``weights[j]``
    times (a bootstrap resample). Returns per-bin mass, per-bin (conf - acc) gap, total mass."""
    order = slice(None) if presorted else confidence_order(conf, correct)
    c, a = conf[order].astype(np.float64), correct[order].astype(np.float64)
    w = np.ones_like(c) if weights is None else np.asarray(weights, np.float64)[order]
    total = w.sum()
    nb = max(int(total) // bin_size, 1)
    # Bin edges in positions of the expanded sequence; the last bin takes the remainder.
    edges = np.minimum(np.arange(nb + 1, dtype=np.float64) * bin_size, total)
    edges[-1] = total
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    cum_c = np.concatenate([[0.0], np.cumsum(w * c)])
    cum_a = np.concatenate([[0.0], np.cumsum(w * a)])
    # Sample j covers positions [cum_w[j], cum_w[j+1]); a sum up to position p is the cumulative sum
    # of whole samples before p plus the covered part of the sample that straddles p.
    j = np.clip(np.searchsorted(cum_w, edges, side="right") - 1, 0, len(c) - 1)
    part = edges - cum_w[j]
    s_c = cum_c[j] + part * c[j]
    s_a = cum_a[j] + part * a[j]
    mass = np.diff(edges)
    gap = np.diff(s_c - s_a) / np.maximum(mass, 1e-300)
    return mass, gap, total


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, bin_size: int = 100,
                          reference_quirk: bool = False, weights: np.ndarray | None = None,
                          presorted: bool = False) -> float:
    """RMS calibration error with adaptive equal-mass bins.

    Args:
        confidence: (N,) max-softmax probabilities.
        correct: (N,) booleans.
        bin_size: samples per bin (the reference's ``beta = 100``).
        reference_quirk: reproduce the reference ``calib_err(..., p='2')`` exactly: it loops over
            ``range(len(bins) - 1)`` and so never counts the last (most confident) bin while still
            dividing by N; it returns 0 for ``bin_size <= N < 2 * bin_size`` and fails below. Off by
            default: the definition counts every bin. Published AugMix / Outlier-Exposure numbers
            come from the quirky code.
        weights: optional integer multiplicities (a bootstrap resample), default one per sample.
        presorted: the samples are already in :func:`confidence_order` (skips the sort in bootstrap loops).

    Returns:
        A fraction in [0, 1] (papers print it x100).
    """
    conf, corr = np.asarray(confidence, np.float64).ravel(), np.asarray(correct).ravel()
    if conf.shape != corr.shape or conf.size == 0:
        raise InputError(f"confidence and correct must be non-empty and of equal length, got {conf.size}, {corr.size}")
    mass, gap, total = _binned_gaps(conf, corr, weights, bin_size, presorted)
    if reference_quirk:
        if total < bin_size:
            raise InputError(f"the reference calib_err fails for fewer than bin_size={bin_size} samples")
        mass, gap = mass[:-1], gap[:-1]
    return float(np.sqrt(np.sum(mass / total * gap**2)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins ``(k/n, (k+1)/n]`` (Guo et al. 2017)."""
    conf, corr = np.asarray(confidence, np.float64).ravel(), np.asarray(correct, np.float64).ravel()
    if conf.shape != corr.shape or conf.size == 0:
        raise InputError("confidence and correct must be non-empty and of equal length")
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    gap = np.bincount(b, weights=conf - corr, minlength=n_bins)
    return float(np.abs(gap).sum() / conf.size)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict[str, list]:
    """The reliability diagram over the ECE's bins: per bin the sample count, mean confidence and accuracy
    (``None`` for an empty bin). ``sum_b count_b |confidence_b - accuracy_b| / N`` is the ECE."""
    conf, corr = np.asarray(confidence, np.float64).ravel(), np.asarray(correct, np.float64).ravel()
    if conf.shape != corr.shape or conf.size == 0:
        raise InputError("confidence and correct must be non-empty and of equal length")
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    mean = lambda w: [float(v / c) if c else None for v, c in zip(np.bincount(b, w, n_bins), count, strict=True)]  # noqa: E731
    return {"count": count.tolist(), "confidence": mean(conf), "accuracy": mean(corr)}


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood ``-mean_i log softmax(logits_i)[label_i]``.

    Args:
        logits: (N, K) unnormalised scores.
        labels: (N,) class indices.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), np.asarray(labels)].mean())


# ------------------------------------------------------------------------------------- bootstrap
def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) int32 multiplicities: each row resamples ``n`` images with replacement."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n), np.int32)
    for b in range(n_boot):
        out[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def bootstrap_interval(statistic: Callable[[np.ndarray], float], weights: np.ndarray,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic(w)`` over the rows ``w`` of ``weights``."""
    vals = np.array([statistic(w) for w in weights], np.float64)
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def linear_error_interval(correct: np.ndarray, coef: np.ndarray, offset: float, weights: np.ndarray,
                          level: float = 0.95) -> tuple[float, float]:
    """Interval of a statistic linear in cell errors, ``offset - sum_k coef_k * acc_k(w)``.

    Args:
        correct: (K, N) correctness of K cells on the same N images.
        coef: (K,) weight of each cell's accuracy.
        weights: (B, N) bootstrap multiplicities.
    """
    v = coef.astype(np.float64) @ np.asarray(correct, np.float64)   # (N,) per-image contribution
    vals = offset - (weights @ v) / correct.shape[1]
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------ perturbation stability
def frame_pairs(frames: int, noise: bool, difficulty: int = 1) -> np.ndarray:
    """The (earlier, later) frame index pairs a -P sequence of ``frames`` frames is scored on: (0, j) for
    j >= 1 for the noise sequences (difficulty picks their noise level, not a stride), else for each
    offset o < ``difficulty`` the consecutive frames of o, o + d, o + 2d, ... (test.py l.257-273).

    Examples:
        >>> frame_pairs(4, noise=True).tolist()
        [[0, 1], [0, 2], [0, 3]]
        >>> frame_pairs(5, noise=False, difficulty=2).tolist()
        [[0, 2], [2, 4], [1, 3]]
    """
    if frames < 2 or difficulty < 1:
        raise InputError(f"a sequence needs at least 2 frames and difficulty >= 1, got {frames} and {difficulty}")
    if noise:
        return np.stack([np.zeros(frames - 1, np.int64), np.arange(1, frames)], 1)
    pairs = [(a, a + difficulty) for o in range(difficulty) for a in range(o, frames - difficulty, difficulty)]
    if not pairs:
        raise InputError(f"difficulty {difficulty} leaves no frame pair in a {frames}-frame sequence")
    return np.asarray(pairs, np.int64)


def flip_probabilities(predictions: np.ndarray, noise: bool, difficulty: int = 1) -> np.ndarray:
    """Per sequence, the share of its :func:`frame_pairs` whose (N, T) top-1 predictions differ: (N,)."""
    p = np.asarray(predictions)
    if p.ndim != 2:
        raise InputError(f"predictions must be (sequences, frames), got shape {p.shape}")
    a, b = frame_pairs(p.shape[1], noise, difficulty).T
    return (p[:, a] != p[:, b]).mean(axis=1)


def flip_probability(predictions: np.ndarray, noise: bool, difficulty: int = 1) -> float:
    """FP: :func:`flip_probabilities` averaged over sequences.

    Examples:
        >>> flip_probability(np.array([[1, 1, 2, 2], [3, 3, 3, 3]]), noise=False)  # (1/3 + 0) / 2
        0.16666666666666666
    """
    return float(flip_probabilities(predictions, noise, difficulty).mean())


def ordinal_ranks(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The rank (1 = top) of ``classes`` in each row of ``logits``, ties broken by class index as
    ``scipy.stats.rankdata(-logits, 'ordinal')`` breaks them.

    Args:
        logits: (M, K) scores.
        classes: (M, J) class indices.
    Returns:
        (M, J) int64 ranks.
    """
    z = np.asarray(logits)
    c = np.asarray(classes)
    zc = np.take_along_axis(z, c, 1)[:, :, None]                    # (M, J, 1)
    above = (z[:, None, :] > zc).sum(-1)
    tied_before = ((z[:, None, :] == zc) & (np.arange(z.shape[1])[None, None, :] < c[:, :, None])).sum(-1)
    return 1 + above + tied_before


def top5_distances(logits: np.ndarray, noise: bool, difficulty: int = 1) -> np.ndarray:
    """Per sequence, the mean top-5 distance over its :func:`frame_pairs`, from (N, T, K) logits: (N,)."""
    z = np.asarray(logits)
    if z.ndim != 3 or z.shape[2] < 5:
        raise InputError(f"logits must be (sequences, frames, classes >= 5), got shape {z.shape}")
    n, t, k = z.shape
    a, b = frame_pairs(t, noise, difficulty).T
    earlier = z[:, a].reshape(-1, k)
    top = np.argsort(-earlier, axis=1, kind="stable")[:, :5]          # the earlier frame's ranks 1..5
    later = ordinal_ranks(z[:, b].reshape(-1, k), top)                 # their ranks in the later frame
    d = np.abs(np.arange(5)[None, :] - np.minimum(later - 1, 5)).sum(1)
    return d.reshape(n, len(a)).mean(1)


def top5_distance(logits: np.ndarray, noise: bool, difficulty: int = 1) -> float:
    """T5D: :func:`top5_distances` averaged over sequences."""
    return float(top5_distances(logits, noise, difficulty).mean())


def flip_rates(values: Mapping[str, float], baseline: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """FR_p = value_p / baseline_p for each perturbation of ``names`` (FP or T5D alike)."""
    missing = [p for p in names if p not in values or p not in baseline]
    if missing:
        raise InputError(f"no value or no baseline value for {missing}")
    zero = [p for p in names if not baseline[p] > 0]
    if zero:
        raise InputError(f"the baseline's value is not positive for {zero}: it cannot normalise them")
    return {p: float(values[p]) / float(baseline[p]) for p in names}


def mean_flip_rate(values: Mapping[str, float], baseline: Mapping[str, float], names: Sequence[str]) -> float:
    """mFR (from FPs) or mT5D (from T5Ds): the mean of :func:`flip_rates` over ``names``."""
    return float(np.mean(list(flip_rates(values, baseline, names).values())))

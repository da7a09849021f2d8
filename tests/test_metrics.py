"""Metrics against hand-computed cases, the published AlexNet row, and a re-implementation of the
reference calibration code (hendrycks/outlier-exposure ``calib_err``) written here from its description."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustbench_augmix import load_suite, metrics


def reference_calib_err(confidence, correct, beta=100):
    """The reference ``calib_err(p='2')`` loop, transcribed from its description: sorted samples, bins of
    ``beta`` consecutive samples with the remainder in the last, and a loop that stops one bin short."""
    idx = np.argsort(confidence)
    confidence, correct = confidence[idx], correct[idx]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    total, cerr = len(confidence), 0.0
    for i in range(len(bins) - 1):
        c, a = confidence[bins[i][0] : bins[i][1]], correct[bins[i][0] : bins[i][1]]
        if len(c) > 0:
            cerr += len(c) / total * (np.nanmean(c) - np.nanmean(a)) ** 2
    return math.sqrt(cerr)


def test_error_and_cifar_mean():
    assert metrics.error(np.array([1, 0, 1, 1], bool)) == pytest.approx(0.25)
    cells = {("fog", 1): 0.1, ("fog", 2): 0.3, ("snow", 1): 0.5, ("snow", 2): 0.7}
    assert metrics.corruption_errors(cells) == pytest.approx({"fog": 0.2, "snow": 0.6})
    assert metrics.mean_corruption_error(cells, ["fog", "snow"]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no errors"):
        metrics.mean_corruption_error(cells, ["fog", "zoom_blur"])


def test_ce_and_relative_ce_by_hand():
    # CE = (0.1 + 0.2) / (0.4 + 0.6); relative = ((0.1-0.05) + (0.2-0.05)) / ((0.4-0.3) + (0.6-0.3))
    assert metrics.corruption_error([0.1, 0.2], [0.4, 0.6]) == pytest.approx(0.3)
    assert metrics.relative_corruption_error([0.1, 0.2], 0.05, [0.4, 0.6], 0.3) == pytest.approx(0.2 / 0.4)
    cells = {("a", 1): 0.1, ("a", 2): 0.2, ("b", 1): 0.5, ("b", 2): 0.5}
    base = {("a", 1): 0.4, ("a", 2): 0.6, ("b", 1): 0.5, ("b", 2): 0.5}
    assert metrics.mce(cells, base, ["a", "b"]) == pytest.approx((0.3 + 1.0) / 2)
    with pytest.raises(ValueError, match="baseline has no error"):
        metrics.mce({("c", 1): 0.1}, base, ["c"])


def test_published_alexnet_row_gives_mce_100():
    s = load_suite("imagenet-c")
    base = {(c, k + 1): e for c in s.names() for k, e in enumerate(s.corruptions[c].alexnet_error)}
    clean = s.baseline["clean_error"]
    assert 100 * metrics.mce(base, base, s.names()) == pytest.approx(100.0)
    assert 100 * metrics.relative_mce(base, clean, base, clean, s.names()) == pytest.approx(100.0)
    # Halving every error halves mCE.
    half = {k: v / 2 for k, v in base.items()}
    assert 100 * metrics.mce(half, base, s.names()) == pytest.approx(50.0)


def test_rms_calibration_by_hand():
    # 100 samples at confidence 0.6 with 30 correct (gap 0.3), 100 at 0.9 with 80 correct (gap 0.1).
    conf = np.r_[np.full(100, 0.9), np.full(100, 0.6)]
    corr = np.r_[np.arange(100) < 80, np.arange(100) < 30]
    assert metrics.rms_calibration_error(conf, corr) == pytest.approx(math.sqrt(0.5 * 0.09 + 0.5 * 0.01))
    # The reference loop drops the last (most confident) bin but still divides by N.
    assert metrics.rms_calibration_error(conf, corr, reference_quirk=True) == pytest.approx(math.sqrt(0.045))
    # 150 samples: one bin; the reference returns 0 and fails below 100.
    assert metrics.rms_calibration_error(conf[50:], corr[50:], reference_quirk=True) == 0.0
    with pytest.raises(ValueError, match="fewer than"):
        metrics.rms_calibration_error(conf[:50], corr[:50], reference_quirk=True)
    # Perfect calibration within bins gives 0.
    assert metrics.rms_calibration_error(np.full(100, 0.25), np.arange(100) < 25) == pytest.approx(0.0)


@pytest.mark.parametrize("n", [200, 1000, 1234, 10_000])
def test_rms_quirk_equals_reference_code(n):
    rng = np.random.default_rng(n)
    conf = rng.uniform(0.1, 1.0, n)
    corr = rng.uniform(size=n) < conf ** 1.5
    assert metrics.rms_calibration_error(conf, corr, reference_quirk=True) == pytest.approx(
        reference_calib_err(conf, corr), abs=1e-12)
    # The correct definition adds exactly the last bin's term: (n_last / N) * gap_last^2, computed here
    # from the sorted samples (the last bin holds bin_size + N % bin_size of them).
    order = np.argsort(conf)
    n_last = 100 + n % 100
    gap = conf[order][-n_last:].mean() - corr[order][-n_last:].mean()
    quirk = reference_calib_err(conf, corr)
    assert metrics.rms_calibration_error(conf, corr) == pytest.approx(
        math.sqrt(quirk**2 + n_last / n * gap**2), abs=1e-12)


def test_rms_weights_equal_repeated_samples():
    rng = np.random.default_rng(1)
    conf, corr = rng.uniform(0.2, 1, 300), rng.uniform(size=300) < 0.6
    w = rng.integers(0, 4, 300)
    want = metrics.rms_calibration_error(np.repeat(conf, w), np.repeat(corr, w))
    assert metrics.rms_calibration_error(conf, corr, weights=w) == pytest.approx(want, abs=1e-12)
    order = np.argsort(conf)
    assert metrics.rms_calibration_error(conf[order], corr[order], weights=w[order], presorted=True) == \
        pytest.approx(want, abs=1e-12)


def test_ece_by_hand():
    # Two bins of 15: (0.6, 0.6667] holds 0.62 x2 (1 correct: gap 0.12), (0.9333, 1] holds 0.95 x2 (both: gap 0.05)
    conf = np.array([0.62, 0.62, 0.95, 0.95])
    corr = np.array([1, 0, 1, 1], bool)
    assert metrics.expected_calibration_error(conf, corr) == pytest.approx(0.5 * 0.12 + 0.5 * 0.05)
    # Bins are (lo, hi]: 1/15 exactly falls in the first bin.
    assert metrics.expected_calibration_error(np.array([1 / 15]), np.array([0])) == pytest.approx(1 / 15)
    rel = metrics.reliability_bins(conf, corr)
    assert rel["count"][9] == 2 and rel["count"][14] == 2 and sum(rel["count"]) == 4
    assert rel["confidence"][9] == pytest.approx(0.62) and rel["accuracy"][9] == 0.5 and rel["accuracy"][14] == 1
    assert rel["confidence"][0] is None


def test_nll_by_hand():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    assert metrics.nll(logits, np.array([0, 2])) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)


def test_bootstrap_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(2)
    correct = rng.uniform(size=(3, 500)) < np.array([[0.9], [0.6], [0.3]])
    w1, w2 = metrics.bootstrap_weights(500, 300, seed=7), metrics.bootstrap_weights(500, 300, seed=7)
    assert np.array_equal(w1, w2) and (w1.sum(axis=1) == 500).all()
    coef = np.full(3, 1 / 3)
    lo, hi = metrics.linear_error_interval(correct, coef, 1.0, w1)
    est = 1 - correct.mean()
    assert lo < est < hi and hi - lo < 0.1
    # The linear shortcut equals the generic bootstrap of the same statistic.
    glo, ghi = metrics.bootstrap_interval(lambda w: 1 - (correct.mean(axis=0) * w).sum() / 500, w1)
    assert (lo, hi) == pytest.approx((glo, ghi))


# ------------------------------------------------------------------------------ perturbation stability
def test_flip_probability_on_hand_made_sequences():
    """Sequence 0 changes its prediction at frames 2 and 5, sequence 1 never (test.py's rules by hand)."""
    from robustbench_augmix.metrics import flip_probability

    p = np.array([[0, 0, 1, 1, 1, 0], [2, 2, 2, 2, 2, 2]])
    assert flip_probability(p, noise=False) == pytest.approx((2 / 5 + 0) / 2)          # consecutive frames
    assert flip_probability(p, noise=True) == pytest.approx((3 / 5 + 0) / 2)           # frames 2, 3, 4 != frame 0
    # difficulty 2: pairs (0, 2), (2, 4), (1, 3), (3, 5) -> flips at (0, 2), (1, 3), (3, 5)
    assert flip_probability(p, noise=False, difficulty=2) == pytest.approx((3 / 4 + 0) / 2)
    with pytest.raises(ValueError, match="at least 2 frames"):
        flip_probability(p[:, :1], noise=False)


def _t5d_paper(r_ref: np.ndarray, r_new: np.ndarray) -> float:
    """Hendrycks & Dietterich's definition, written from the paper: with s(i) the new rank of the class
    ranked i before, sum_{i=1..5} sum_{j=min(i, s(i))+1}^{max(i, s(i))} 1(1 <= j - 1 <= 5)."""
    inv = np.argsort(r_ref)                                  # class at each earlier rank (0-based)
    total = 0
    for i in range(1, 6):
        s = int(r_new[inv[i - 1]])
        total += sum(1 for j in range(min(i, s) + 1, max(i, s) + 1) if 1 <= j - 1 <= 5)
    return total


@pytest.mark.parametrize("noise,difficulty", [(False, 1), (False, 2), (False, 3), (True, 1)])
def test_top5_distance_matches_the_papers_definition_with_scipy_ranks(noise, difficulty):
    """Against an independent computation: scipy's ordinal ranks (ties by class index, as test.py takes them)
    and the paper's double sum, on integer logits full of ties."""
    from scipy.stats import rankdata

    from robustbench_augmix.metrics import frame_pairs, top5_distance, top5_distances

    z = np.random.default_rng(difficulty).integers(0, 6, size=(5, 9, 12)).astype(np.float32)
    want = []
    for seq in z:
        ranks = [rankdata(-f, method="ordinal") for f in seq]
        want.append(np.mean([_t5d_paper(ranks[a], ranks[b]) for a, b in frame_pairs(9, noise, difficulty)]))
    np.testing.assert_allclose(top5_distances(z, noise, difficulty), want, rtol=0, atol=1e-12)
    assert top5_distance(z, noise, difficulty) == pytest.approx(np.mean(want))


def test_top5_distance_by_hand():
    """The top two classes swap (distance 2); then the top class falls to rank 7 (it counts min(7 - 1, 5) = 5
    against 0, and each of ranks 2-5 moves up one: 4 more, 9); unchanged: 0. Against frame 0 (the noise
    rule), frame 2 has class 1 at rank 7 (|1 - 5| = 4) and classes 2-4 one rank up (3): 7."""
    from robustbench_augmix.metrics import top5_distances

    f0 = np.arange(10, 0, -1, dtype=np.float64)              # class k has rank k + 1
    f1 = f0.copy()
    f1[[0, 1]] = f1[[1, 0]]                                   # classes 0 and 1 swap
    f2 = f1.copy()
    f2[1] = 3.5                                               # class 1 (top in f1) drops below class 6 -> rank 7
    z = np.stack([f0, f1, f2, f2])[None]
    assert top5_distances(z, noise=False).tolist() == [pytest.approx((2 + 9 + 0) / 3)]
    assert top5_distances(z, noise=True).tolist() == [pytest.approx((2 + 7 + 7) / 3)]


def test_mean_flip_rate_normalises_by_the_baseline():
    """The baseline's own values give 100 % (mFR = 1); FR is per perturbation; missing or zero baselines are
    refused with their names."""
    from robustbench_augmix.metrics import flip_rates, mean_flip_rate

    alexnet = {"gaussian_noise": 0.2, "rotate": 0.1}
    assert mean_flip_rate(alexnet, alexnet, list(alexnet)) == 1.0
    assert flip_rates({"gaussian_noise": 0.1, "rotate": 0.05}, alexnet, list(alexnet)) == {
        "gaussian_noise": 0.5, "rotate": 0.5}
    assert mean_flip_rate({"gaussian_noise": 0.1, "rotate": 0.1}, alexnet, list(alexnet)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="rotate"):
        flip_rates({"gaussian_noise": 0.1}, alexnet, list(alexnet))
    with pytest.raises(ValueError, match="not positive"):
        flip_rates(alexnet, {**alexnet, "rotate": 0.0}, list(alexnet))

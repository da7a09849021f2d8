"""Numbers from per-image outcomes: each cell's row, the aggregates (mean corruption error, mCE, relative
mCE, calibration) and their bootstrap intervals, and the baseline that normalises CE.

Outcomes are ``{(corruption, severity): {field: (N,) array}}`` over the same N images in every cell, with
the fields :data:`FIELDS`; ``("clean", 0)`` is the clean cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import metrics
from ..corruptions.suites import SEVERITIES, Suite
from .cache import EvaluationError

CLEAN: tuple[str, int] = ("clean", 0)
FIELDS = ("correct", "correct5", "confidence", "nll")
# The calibration error is not linear in the per-image outcomes: each replicate re-bins the pooled
# corrupted set (750k samples for CIFAR-10-C), so its interval uses the first 200 replicates only.
CALIBRATION_REPLICATES = 200


def cell_rows(outcomes: Mapping, cells: Sequence[tuple[str, int]], quirk: bool) -> list[dict]:
    """One results row per cell: counts, errors, NLL, calibration and reliability bins."""
    rows = []
    for (c, s) in cells:
        o = outcomes[(c, s)]
        rows.append({
            "corruption": c, "severity": s, "n": len(o["correct"]), "correct": int(o["correct"].sum()),
            "correct5": int(o["correct5"].sum()), "error": metrics.error(o["correct"]),
            "top5_error": metrics.error(o["correct5"]), "nll": float(o["nll"].astype(np.float64).mean()),
            "rms_calibration_error": _rms(o, quirk),
            "ece": metrics.expected_calibration_error(o["confidence"], o["correct"]),
            "reliability": metrics.reliability_bins(o["confidence"], o["correct"]),
        })
    return rows


def load_baseline(path: str | None, suite: Suite) -> dict | None:
    """The per-cell errors that normalise CE: another run's results file, else the suite table's baseline
    (AlexNet for ImageNet-C), else None."""
    if path:
        from .results import Results

        p = Path(path).expanduser()
        try:
            other = Results.load(p)
            errors = other.cell_errors()
            return {"name": other["model"]["id"], "source": str(p), "suite": other["suite"]["id"],
                    "table_hash": other["suite"]["table_hash"], "clean_error": errors.get(CLEAN),
                    "errors": {f"{c}/{s}": e for (c, s), e in errors.items() if c != "clean"}}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EvaluationError(f"--baseline {p} is not a results file written by rb-eval ({e})") from None
    b = suite.baseline
    if b is None:
        return None
    return {"name": b["name"], "source": b["source"], "suite": suite.id, "table_hash": suite.table_hash,
            "clean_error": b.get("clean_error"),
            "errors": {f"{c}/{s}": spec.alexnet_error[s - 1] for c, spec in suite.corruptions.items()
                       if spec.alexnet_error for s in SEVERITIES}}


def _rms(o: Mapping, quirk: bool) -> float | None:
    try:
        return metrics.rms_calibration_error(o["confidence"], o["correct"], reference_quirk=quirk)
    except ValueError:  # the reference definition is undefined below 100 samples
        return None


def summarize(outcomes: Mapping, suite: Suite, corruptions: Sequence[str], severities: Sequence[int],
              baseline: Mapping | None, *, n_boot: int, seed: int, reference_quirk: bool = False
              ) -> tuple[dict, dict]:
    """Aggregates and bootstrap intervals from per-image outcomes ``{(c, s): {field: (N,)}}``."""
    err = {cell: metrics.error(o["correct"]) for cell, o in outcomes.items()}
    bench = [c for c in corruptions if c in suite.names()]
    corr_cells = [(c, s) for c in bench for s in severities]
    agg: dict = {}
    intervals: dict = {}
    w = metrics.bootstrap_weights(len(next(iter(outcomes.values()))["correct"]), n_boot, seed) if n_boot else None

    def interval(name, correct_rows, coef, offset):
        if w is not None:
            intervals[name] = list(metrics.linear_error_interval(np.stack(correct_rows), np.asarray(coef), offset, w))

    if CLEAN in outcomes:
        o = outcomes[CLEAN]
        agg["clean_error"] = err[CLEAN]
        agg["clean_top5_error"] = metrics.error(o["correct5"])
        agg["clean_nll"] = float(o["nll"].astype(np.float64).mean())
        agg["clean_rms_calibration_error"] = _rms(o, reference_quirk)
        agg["clean_ece"] = metrics.expected_calibration_error(o["confidence"], o["correct"])
        interval("clean_error", [o["correct"]], [1.0], 1.0)
        if w is not None and agg["clean_rms_calibration_error"] is not None:
            intervals["clean_rms_calibration_error"] = _rms_interval([o], w[:CALIBRATION_REPLICATES], reference_quirk)
    per = metrics.corruption_errors({cell: e for cell, e in err.items() if cell != CLEAN})
    agg["corruption_error"] = per
    if bench:
        agg["mean_corruption_error"] = metrics.mean_corruption_error({k: err[k] for k in corr_cells}, bench)
        agg["mean_corruption_error_over"] = bench
        coef = [1.0 / (len(bench) * len(severities))] * len(corr_cells)
        interval("mean_corruption_error", [outcomes[k]["correct"] for k in corr_cells], coef, 1.0)
        pooled = [outcomes[k] for k in corr_cells]
        conf = np.concatenate([o["confidence"] for o in pooled])
        corr = np.concatenate([o["correct"] for o in pooled])
        agg["rms_calibration_error"] = metrics.rms_calibration_error(conf, corr, reference_quirk=reference_quirk)
        agg["ece"] = metrics.expected_calibration_error(conf, corr)
        agg["nll"] = float(np.concatenate([o["nll"] for o in pooled]).astype(np.float64).mean())
        if w is not None:
            intervals["rms_calibration_error"] = _rms_interval(pooled, w[:CALIBRATION_REPLICATES], reference_quirk)
    if baseline is not None and bench:
        base = {(k.split("/")[0], int(k.split("/")[1])): v for k, v in baseline["errors"].items()}
        have = [c for c in bench if all((c, s) in base for s in severities)]
        if have:
            cells_h = {k: err[k] for k in corr_cells if k[0] in have}
            agg["ce"] = {c: metrics.corruption_error([err[(c, s)] for s in severities],
                                                     [base[(c, s)] for s in severities]) for c in have}
            agg["mce"] = metrics.mce(cells_h, base, have)
            agg["mce_over"] = have
            # mCE = sum_cs k_cs * E_cs with k_cs = 1 / (C * sum_s A_cs): linear in the cell accuracies.
            ks = [1.0 / (len(have) * sum(base[(c, t)] for t in severities)) for c in have for s in severities]
            rows = [outcomes[(c, s)]["correct"] for c in have for s in severities]
            interval("mce", rows, ks, float(sum(ks)))
            bc = baseline.get("clean_error")
            flat = [c for c in have if sum(base[(c, t)] - bc for t in severities) == 0] if bc is not None else []
            if flat:
                agg["relative_mce_undefined"] = f"the baseline's error on {flat} equals its clean error"
            elif CLEAN in outcomes and bc is not None:
                agg["relative_ce"] = {c: metrics.relative_corruption_error(
                    [err[(c, s)] for s in severities], err[CLEAN], [base[(c, s)] for s in severities], bc)
                    for c in have}
                agg["relative_mce"] = metrics.relative_mce(cells_h, err[CLEAN], base, bc, have)
                # relative mCE = sum_cs r_c (E_cs - E_clean) with r_c = 1 / (C * sum_s (A_cs - A_clean)).
                rs = [1.0 / (len(have) * sum(base[(c, t)] - bc for t in severities)) for c in have]
                coef = [r for r in rs for _ in severities] + [-sum(rs) * len(severities)]
                rows_r = rows + [outcomes[CLEAN]["correct"]]
                interval("relative_mce", rows_r, coef, float(sum(coef)))
    return agg, intervals


def _rms_interval(parts: Sequence[Mapping], w: np.ndarray, quirk: bool, level: float = 0.95) -> list[float] | None:
    """Bootstrap interval of the RMS calibration error pooled over cells that share the images."""
    conf = np.concatenate([o["confidence"] for o in parts]).astype(np.float64)
    corr = np.concatenate([o["correct"] for o in parts]).astype(np.float64)
    order = metrics.confidence_order(conf, corr)
    conf, corr = conf[order], corr[order]
    n = len(parts[0]["correct"])
    image = np.tile(np.arange(n), len(parts))[order]
    vals = []
    for wb in w:
        try:
            vals.append(metrics.rms_calibration_error(conf, corr, weights=wb[image], reference_quirk=quirk,
                                                      presorted=True))
        except ValueError:
            return None
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]

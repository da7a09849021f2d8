"""Plots from ``rb-eval`` result files (matplotlib, Agg backend; PNG files).

- :func:`error_vs_severity`: one panel per corruption, error against severity, a line per model.
- :func:`corruption_bars`: per-corruption CE (or error when the suite has no baseline), bars per model.
- :func:`calibration_vs_severity`: RMS calibration error against severity (0 = clean), averaged over
  the corruptions, a line per model (the AugMix paper's calibration figure).
- :func:`reliability`: reliability diagrams, clean vs all corrupted cells pooled, one panel per model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .._common import InputError

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _name(doc: dict) -> str:
    return doc["model"]["id"]


def _cells(doc: dict) -> dict[tuple[str, int], dict]:
    return {(c["corruption"], c["severity"]): c for c in doc["cells"]}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _corruptions(docs: Sequence[dict]) -> list[str]:
    seen = dict.fromkeys(c["corruption"] for d in docs for c in d["cells"] if c["corruption"] != "clean")
    return list(seen)


def error_vs_severity(docs: Sequence[dict], path: str | Path) -> Path:
    """Top-1 error (%) against severity per corruption; the clean error drawn at severity 0."""
    plt = _plt()
    names = _corruptions(docs)
    cols = min(5, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax, c in zip(axes.flat, names, strict=False):
        for k, d in enumerate(docs):
            cells = _cells(d)
            pts = sorted((s, 100 * cell["error"]) for (cc, s), cell in cells.items() if cc == c)
            if ("clean", 0) in cells:
                pts = [(0, 100 * cells[("clean", 0)]["error"])] + pts
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, lw=1.4, color=PALETTE[k % len(PALETTE)],
                    label=_name(d))
        ax.set_title(c.replace("_", " "), fontsize=9)
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("error (%)")
    for ax in axes[-1, :]:
        ax.set_xlabel("severity (0 = clean)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(docs)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.02 * math.ceil(len(docs) / 4)))
    fig.tight_layout()
    return _save(fig, Path(path))


def corruption_bars(docs: Sequence[dict], path: str | Path) -> Path:
    """Per-corruption CE (%) when every result has an mCE, else the corruption error (%), bars per model."""
    plt = _plt()
    use_ce = all("ce" in d["aggregates"] for d in docs)
    key = "ce" if use_ce else "corruption_error"
    names = [c for c in _corruptions(docs) if any(c in d["aggregates"].get(key, {}) for d in docs)]
    width = 0.8 / max(1, len(docs))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names) * max(1, len(docs)) ** 0.5 + 2), 3.6))
    for k, d in enumerate(docs):
        vals = [100 * d["aggregates"][key].get(c, float("nan")) for c in names]
        ax.bar([i + (k - (len(docs) - 1) / 2) * width for i in range(len(names))], vals, width,
               color=PALETTE[k % len(PALETTE)], label=_name(d))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([c.replace("_", " ") for c in names], rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("CE (%, AlexNet = 100)" if use_ce else "corruption error (%)")
    if use_ce:
        ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, Path(path))


def calibration_vs_severity(docs: Sequence[dict], path: str | Path) -> Path:
    """RMS calibration error (%) against severity, the mean over corruptions at each severity."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for k, d in enumerate(docs):
        by_s: dict[int, list[float]] = {}
        for c in d["cells"]:
            if c.get("rms_calibration_error") is not None:
                by_s.setdefault(c["severity"], []).append(100 * c["rms_calibration_error"])
        xs = sorted(by_s)
        ax.plot(xs, [sum(by_s[s]) / len(by_s[s]) for s in xs], "o-", color=PALETTE[k % len(PALETTE)], label=_name(d))
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("RMS calibration error (%)")
    ax.set_xticks(range(0, 6))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, Path(path))


def _pooled(cells: Sequence[dict]) -> tuple[list[float], list[float], list[int]]:
    """Pool reliability bins over cells: count-weighted mean confidence and accuracy per bin."""
    n_bins = len(cells[0]["reliability"]["count"])
    cnt = [0] * n_bins
    conf = [0.0] * n_bins
    acc = [0.0] * n_bins
    for c in cells:
        r = c["reliability"]
        for b in range(n_bins):
            if r["count"][b]:
                cnt[b] += r["count"][b]
                conf[b] += r["count"][b] * r["confidence"][b]
                acc[b] += r["count"][b] * r["accuracy"][b]
    return ([v / n if n else float("nan") for v, n in zip(conf, cnt, strict=True)],
            [v / n if n else float("nan") for v, n in zip(acc, cnt, strict=True)], cnt)


MIN_BIN, MIN_BIN_SHARE = 10, 0.002


def merge_small_bins(conf: Sequence[float], acc: Sequence[float], cnt: Sequence[int], min_n: float
                     ) -> list[tuple[float, float, int]]:
    """Adjacent bins merged (count-weighted) from low to high confidence until each holds ``min_n``
    images; a short remainder joins the last merged bin. A bin of a handful of images is noise (0 or
    100 % accuracy), not calibration, but dropping it can drop a whole curve: a clean set of a few hundred
    images spread over 15 bins. Returns ``[(confidence, accuracy, count)]``."""
    out: list[list[float]] = []
    run = [0.0, 0.0, 0]
    for c, a, n in zip(conf, acc, cnt, strict=True):
        if not n:
            continue
        run = [run[0] + n * c, run[1] + n * a, run[2] + n]
        if run[2] >= min_n:
            out.append(run)
            run = [0.0, 0.0, 0]
    if run[2]:
        if out:
            out[-1] = [out[-1][0] + run[0], out[-1][1] + run[1], out[-1][2] + run[2]]
        else:
            out.append(run)
    return [(sc / n, sa / n, int(n)) for sc, sa, n in out]


def reliability(docs: Sequence[dict], path: str | Path) -> Path:
    """Reliability diagrams (accuracy against confidence, 15 bins), clean vs every corrupted cell pooled, a
    panel per model in the model's colour (as in every other plot): clean solid with filled markers,
    drawn on top; corrupted dashed with open markers. Bins of fewer than ``max(MIN_BIN, MIN_BIN_SHARE * N)``
    images are merged with their neighbours (:func:`merge_small_bins`)."""
    plt = _plt()
    colour = {id(d): PALETTE[k % len(PALETTE)] for k, d in enumerate(docs)}
    docs = [d for d in docs if d["cells"] and "reliability" in d["cells"][0]]
    if not docs:
        raise InputError("these results carry no reliability bins (written by an older rb-eval); re-run rb-eval")
    cols = min(4, len(docs))
    rows = math.ceil(len(docs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, d in zip(axes.flat, docs, strict=False):
        clean = [c for c in d["cells"] if c["corruption"] == "clean"]
        corr = [c for c in d["cells"] if c["corruption"] != "clean"]
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
        for cells, label, style in ((corr, "corrupted", dict(ls="--", marker="s", mfc="white", zorder=2)),
                                    (clean, "clean", dict(ls="-", marker="o", zorder=3))):
            if cells:
                conf, acc, cnt = _pooled(cells)
                pts = merge_small_bins(conf, acc, cnt, max(MIN_BIN, MIN_BIN_SHARE * sum(cnt)))
                # not clipped: an untrained or overconfident model puts its bins at confidence 1.0
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ms=4, lw=1.4, color=colour[id(d)], **style,
                        label=f"{label} ({sum(cnt)} images)", clip_on=False)
        ax.set_title(_name(d), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize=7, frameon=False, loc="upper left")  # clean first
    for ax in axes.flat[len(docs):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, Path(path))


PLOTS = {"error_vs_severity": error_vs_severity, "corruption_bars": corruption_bars,
         "calibration_vs_severity": calibration_vs_severity, "reliability": reliability}


def write_plots(docs: Sequence[dict], folder: str | Path) -> dict[str, Path]:
    """Every plot of :data:`PLOTS` as ``<folder>/<name>.png`` (reliability diagrams only for results
    that carry their bins)."""
    folder = Path(folder)
    has_bins = any(d["cells"] and "reliability" in d["cells"][0] for d in docs)
    return {name: fn(docs, folder / f"{name}.png") for name, fn in PLOTS.items()
            if name != "reliability" or has_bins}

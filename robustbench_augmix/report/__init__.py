"""Leaderboards from ``rb-eval`` result files: the RobustBench-style board and the paper-style
per-corruption table, as rich tables, Markdown, CSV or LaTeX.

Results are ranked together only when they share a protocol: the suite and its table hash, the data
source (generated on the fly or official files), the storage JPEG setting, the geometry of the model's
input (a resize or crop of the corrupted images, e.g. ``rb-eval --input-size``), and completeness (no
``--limit``, all 15 corruptions x 5 severities, clean included). Otherwise :class:`MixedProtocols` is
raised unless ``allow_mixed=True``, and the rows are then marked.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._common import InputError, RBAError


class MixedProtocols(RBAError, ValueError):
    """Results of different protocols were asked to be ranked together."""


def _geometry(doc: dict) -> tuple:
    """The resize and crop that the corrupted images went through before the model, or ``()`` when they
    reached it at the suite's size. Normalisation (mean, std) is the model's own business and does not
    enter: it does not change what the model sees."""
    pre, size = doc.get("preprocess") or {}, doc["suite"]["image_size"]
    resize, crop = pre.get("resize"), pre.get("crop")
    side = size if resize in (None, size) else resize      # Preprocess resizes only when the side differs
    if side == size and crop in (None, size):
        return ()
    return (side if side != size else None, crop if crop not in (None, side) else None,
            pre.get("interpolation") if side != size else None)


def protocol_key(doc: dict) -> tuple:
    """What must agree for two results to be ranked together."""
    d, s, p = doc["data"], doc["suite"], doc["protocol"]
    subset = () if p.get("complete") else (tuple(p["corruptions"]), tuple(p["severities"]), d.get("limit"),
                                           d.get("n_images"))
    return (s["id"], s["table_hash"], d["source"], d.get("storage_jpeg"), _geometry(doc), bool(p.get("complete")),
            subset)


def _describe(key: tuple) -> str:
    suite, table, source, jpeg, geometry, complete, subset = key
    part = ""
    if geometry:
        resize, crop, interp = geometry
        part += (f", corrupted images resized to {resize} px ({interp})" if resize else "") \
            + (f", centre-cropped to {crop} px" if crop else "")
    if not complete:
        corr, sev, limit, n = subset
        lim = ", --limit" if limit else ""
        part += f", PARTIAL ({len(corr)} corruptions x severities {list(sev)}, {n} images{lim})"
    return f"{suite} (table {table[:10]}), {source} data" + (f", storage JPEG q{jpeg}" if jpeg else "") + part


# What every result file must hold for a board: (section, keys).
REQUIRED = (("model", ("id",)), ("suite", ("id", "table_hash", "image_size")), ("data", ("source",)),
            ("protocol", ("complete", "corruptions", "severities")), ("aggregates", ()), ("cells", ()))


def _no_constants(name: str):
    raise InputError(f"it holds a bare {name}, which a result of a working model never has (rb-eval now refuses "
                     "non-finite scores); re-run rb-eval on that model")


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Read rb-eval result files, strictly: a file that is not one, lacks a key a board needs, or holds
    NaN / Infinity is refused with its name (so a broken model never ranks first)."""
    docs = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text(), parse_constant=_no_constants)
            if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("robustbench-augmix/results/"):
                raise InputError("not a robustbench-augmix results file")
            missing = [f"{sec}.{k}" if k else sec for sec, keys in REQUIRED for k in (keys or ("",))
                       if sec not in doc or (k and not isinstance(doc[sec], dict)) or (k and k not in doc[sec])]
            if missing:
                raise InputError(f"it lacks {', '.join(missing)}")
            doc["_path"] = str(p)
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read it as an rb-eval result ({e})") from None
        docs.append(doc)
    if not docs:
        raise InputError("no result files given")
    return docs


@dataclass
class Board:
    protocol: str
    rows: list[dict]
    corruptions: list[str]
    mixed: bool = False
    notes: list[str] = field(default_factory=list)


def _reported(model: Mapping) -> dict:
    """The published numbers of the result's model card: the card file the run used when it is still there
    (a ``card.toml`` from ``rb-train`` carries those of the zoo card its recipe reproduces), else the zoo card
    of that id."""
    from ..zoo import get_card

    for name in (model.get("card"), model["id"]):
        if name and (not str(name).endswith(".toml") or Path(name).is_file()):
            try:
                return dict(get_card(str(name)).reported)
            except ValueError:
                continue
    return {}


def _dataset(doc: Mapping) -> str | None:
    """The dataset a result's model was trained and scored on: its card's (a digits model scored with the
    CIFAR-10-C tables is a digits result), else the suite's."""
    from ..corruptions import load_suite
    from ..zoo import get_card

    card = doc["model"].get("card")
    if card and (not str(card).endswith(".toml") or Path(card).is_file()):
        try:
            return get_card(str(card)).dataset
        except ValueError:
            return None
    return doc["suite"].get("dataset") or load_suite(doc["suite"]["id"]).dataset


def _reported_rows(suite_id: str, metric: str, measured: set[str]) -> list[dict]:
    """Rows for the zoo's cards on this suite's dataset that report the board's metric and were not
    measured here: the paper's numbers (on its released -C files), marked as reported."""
    from ..zoo import cards

    rows = []
    for card in cards(dataset=suite_id.removesuffix("-c")):
        rep = card.reported
        if card.id in measured or metric not in rep:
            continue
        rows.append({
            "model": card.id, "architecture": card.builder,
            **{k: rep.get(k) for k in ("clean_error", "mean_corruption_error", "mce", "relative_mce",
                                       "rms_calibration_error")},
            "params": card.params, "source": "reported", "protocol": f"reported: {rep['citation']}",
            "file": f"zoo card {card.id}", "per_corruption": {},
        })
    return rows


def leaderboard(results: Sequence[dict], allow_mixed: bool = False, reported: bool = False) -> Board:
    """Rank results by mCE when every result has one, else by mean corruption error (lower first).

    With ``reported=True``, the zoo's cards on the suite's dataset that report that metric and have no
    result here join the ranking as ``source="reported"`` rows, carrying the paper's numbers (measured
    by its authors on the released files, so comparable only as far as our generation matches them).
    """
    keys = {protocol_key(d) for d in results}
    if len(keys) > 1 and not allow_mixed:
        raise MixedProtocols(
            "these results were measured under different protocols and are not comparable:\n  "
            + "\n  ".join(sorted(_describe(k) for k in keys))
            + "\nRank each group separately, or pass --allow-mixed to see them together (rows are then marked)."
        )
    use_mce = all("mce" in d["aggregates"] for d in results)
    metric = "mce" if use_mce else "mean_corruption_error"
    rows = []
    for d in results:
        a = d["aggregates"]
        rep = _reported(d["model"])
        row = {
            "model": d["model"]["id"], "architecture": d["model"].get("builder", d["model"].get("factory", "-")),
            "clean_error": _pct(a.get("clean_error")), "mean_corruption_error": _pct(a.get("mean_corruption_error")),
            "mce": _pct(a.get("mce")), "relative_mce": _pct(a.get("relative_mce")),
            "rms_calibration_error": _pct(a.get("rms_calibration_error")),
            "params": d["model"].get("params"),
            "source": "measured", "protocol": _describe(protocol_key(d)), "file": d["_path"],
            "per_corruption": {c: _pct(v) for c, v in a.get("ce" if use_mce else "corruption_error", {}).items()},
            # the 95 % bootstrap intervals the file carries (percent), and what they and the draws rest on
            "intervals": {k: [_pct(lo), _pct(hi)] for k, v in (d.get("intervals") or {}).items()
                          if v is not None for lo, hi in [v]},
            "seed": d["data"].get("seed"), "n_images": d["data"].get("n_images"),
            "replicates": (d["protocol"].get("bootstrap") or {}).get("replicates"),
        }
        for k in ("clean_error", "mce", "mean_corruption_error"):
            if k in rep and row[k] is not None:
                row[f"reported_{k}"] = rep[k]
                row[f"delta_{k}"] = round(row[k] - rep[k], 2)
        rows.append(row)
    notes = []
    if reported:
        from ..corruptions import load_suite

        want = load_suite(results[0]["suite"]["id"]).dataset
        other = sorted({str(ds) for ds in map(_dataset, results) if ds != want})
        # Reported numbers join only a board of the same dataset (and the -C protocol of their paper).
        extra = [] if other else _reported_rows(results[0]["suite"]["id"], metric, {r["model"] for r in rows})
        rows += extra
        if other:
            notes.append(f"reported rows left out: these results are {', '.join(other)} models, the papers' "
                         f"numbers are of {want} models")
        elif extra:
            notes.append(f"{len(extra)} reported row(s): the papers' numbers from the zoo cards, not measured here")
    rows.sort(key=lambda r: (r[metric] is None, r[metric] if r[metric] is not None else 0.0))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    from ..corruptions import load_suite

    table_order = {n: i for i, n in enumerate(load_suite(results[0]["suite"]["id"]).names(extra=True))}
    corr = sorted(dict.fromkeys(c for r in rows for c in r["per_corruption"]), key=lambda c: table_order.get(c, 99))
    return Board(protocol=" | ".join(sorted(_describe(k) for k in keys)), rows=rows, corruptions=corr,
                 mixed=len(keys) > 1, notes=notes)


def _pct(v):
    return None if v is None else round(100 * float(v), 2)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


COLUMNS = [("rank", "rank"), ("model", "model"), ("architecture", "architecture"), ("clean_error", "clean err"),
           ("mean_corruption_error", "corr. err"), ("mce", "mCE"), ("relative_mce", "rel. mCE"),
           ("rms_calibration_error", "RMS calib."), ("params", "params (M)"), ("source", "source"),
           ("delta", "vs reported")]


def _cells(r: dict) -> list[str]:
    out = []
    for key, _ in COLUMNS:
        if key == "delta":
            parts = [f"{k.removeprefix('delta_')} {r[k]:+.2f}" for k in r if k.startswith("delta_")]
            out.append(", ".join(parts) or "-")
        elif key == "params":
            out.append("-" if r.get(key) is None else f"{r[key] / 1e6:.2f}")
        elif isinstance(r.get(key), float):
            out.append(_fmt(r[key]))
        else:
            out.append("-" if r.get(key) is None else str(r[key]))
    return out


def kept_columns(cells: Sequence[Sequence[str]], width: int | None = None, wide: bool = False) -> list[int]:
    """Indices of :data:`COLUMNS` worth showing: those with a value in some row (mCE is empty on every
    CIFAR board, say), and below 110 columns (``width``) not the descriptive ones, unless ``wide``."""
    keep = [i for i, (key, _) in enumerate(COLUMNS)
            if key in ("rank", "model") or any(c[i] not in ("-", "") for c in cells)]
    if not wide and width is not None and width < 110:
        keep = [i for i in keep if COLUMNS[i][0] not in _NARROW_DROP]
    return keep


def to_markdown(board: Board, per_corruption: bool = False) -> str:
    lines = [f"Protocol: {board.protocol}" + (" (MIXED: not comparable)" if board.mixed else ""),
             *(f"Note: {n}" for n in board.notes), ""]
    if per_corruption:
        head = ["model", *board.corruptions, "mean"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in board.rows if r.get("source") != "reported"):  # cards carry no per-corruption numbers
            vals = [r["per_corruption"].get(c) for c in board.corruptions]
            have = [v for v in vals if v is not None]
            mean = sum(have) / len(have) if have else None
            lines.append("| " + " | ".join([r["model"], *map(_fmt, vals), _fmt(mean)]) + " |")
        return "\n".join(lines)
    lines += ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in board.rows]
    return "\n".join(lines)


def to_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _ in COLUMNS[:-1]] + ["protocol", "file"] + board.corruptions)
    for r in board.rows:
        w.writerow([r.get(k) for k, _ in COLUMNS[:-1]] + [r["protocol"], r["file"]]
                   + [r["per_corruption"].get(c) for c in board.corruptions])
    return buf.getvalue()


def to_latex(board: Board) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    cols = COLUMNS[:-1]
    out = [r"\begin{tabular}{" + "l" * 3 + "r" * (len(cols) - 3) + "}", r"\toprule",
           " & ".join(esc(h) for _, h in cols) + r" \\", r"\midrule"]
    out += [" & ".join(esc(c) for c in _cells(r)[:-1]) + r" \\" for r in board.rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out)


# Dropped first when the terminal is narrow (they describe the model; the numbers are the board).
_NARROW_DROP = ("architecture", "params", "source")


def to_rich(board: Board, width: int | None = None, wide: bool = False):
    """A rich table of the board. Columns empty in every row (mCE on a CIFAR board, say) are left out;
    below 110 columns (``width``, e.g. the console's; pipes count as 80) the architecture, parameter
    count and source columns are too, unless ``wide``; numbers never wrap, model names fold."""
    from rich.markup import escape
    from rich.table import Table

    cells = [_cells(r) for r in board.rows]
    keep = kept_columns(cells, width, wide)
    t = Table(title="robustness leaderboard (errors in %, lower is better)",
              caption=escape(f"protocol: {board.protocol}") + ("  [red]MIXED[/]" if board.mixed else "")
              + "".join(f"\nnote: {escape(n)}" for n in board.notes))
    longest = max((len(c[1]) for c in cells), default=5)
    for i in keep:
        key, h = COLUMNS[i]
        text = key in ("model", "architecture", "source", "delta")
        # model names stay whole up to 36 characters (longer ones fold); the delta text folds first
        t.add_column(h, justify="left" if text else "right", no_wrap=not text, overflow="fold",
                     min_width=min(longest, 36) if key == "model" else None, ratio=2 if key == "delta" else None)
    for c in cells:
        t.add_row(*(escape(c[i]) for i in keep))
    return t

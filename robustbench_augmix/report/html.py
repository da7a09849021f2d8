"""A single self-contained HTML report: the leaderboard and per-corruption tables (sortable by clicking a
column head, a few lines of inline JavaScript), the protocol, and the plots embedded as base64 PNGs.
No CDN, no external file: it opens offline."""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import COLUMNS, Board, _cells, _fmt, kept_columns

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
 padding:0 1rem;color:#1d2330;background:#fff}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;
 padding-bottom:.3rem}
.protocol{color:#555;font-size:.9rem}.mixed{color:#b00020;font-weight:600}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #e6e8ef;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}td:last-child:not(.num){white-space:normal;min-width:12rem}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f5fa;cursor:pointer;user-select:none;position:sticky;top:0}
th:hover{background:#e4e9f5}th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
tr:hover td{background:#fafbff}.scroll{overflow-x:auto}
table.compact{font-size:.78rem}table.compact th,table.compact td{padding:.3rem .28rem}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.85rem}
.note{color:#555;font-size:.85rem}.ci{display:block;color:#667;font-size:.75rem}
"""

# Click a header to sort by it (numbers numerically, '-' last); click again to reverse.
JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(t.tBodies[0].rows);
    rows.sort(function(a,b){
      var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');
      var nx=parseFloat(x),ny=parseFloat(y);
      if(x==='')return 1; if(y==='')return -1;
      var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
      return asc?c:-c;});
    rows.forEach(function(r){t.tBodies[0].appendChild(r)});
  })});
});
"""

CAPTIONS = {
    "error_vs_severity": "Top-1 error against severity for each corruption (severity 0: clean).",
    "corruption_bars": "Per-corruption error (or CE normalised by the baseline) for each model.",
    "calibration_vs_severity": "RMS calibration error against severity, mean over corruptions (0: clean).",
    "reliability": "Reliability diagrams: accuracy against confidence in 15 bins, each model in its colour of the "
                   "other plots: clean solid (filled markers), every corrupted cell pooled dashed (open markers); "
                   "bins of fewer than 10 images, or 0.2 % of them, are merged with their neighbours.",
}


def _table(head: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[bool], compact: bool = False) -> str:
    e = html.escape
    # The per-corruption table is compact so its 17 columns, the mean last, fit 1280 px without scrolling.
    out = [f'<div class="scroll"><table class="sortable{" compact" if compact else ""}"><thead><tr>']
    # underscores become spaces so long corruption names wrap instead of widening the table
    out += [f'<th class="{"num" if n else ""}">{e(h.replace("_", " "))}</th>'
            for h, n in zip(head, numeric, strict=True)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for (shown, value, *ci), n in zip(row, numeric, strict=True):
            v = "" if value is None else str(value)
            sub = f'<span class="ci">{e(ci[0])}</span>' if ci and ci[0] else ""
            out.append(f'<td class="{"num" if n else ""}" data-v="{e(v)}">{e(shown)}{sub}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render(board: Board, docs: Sequence[dict], plots: dict[str, Path] | None = None,
           title: str = "Robustness report", sections: Sequence[tuple[str, str, Sequence[str],
                                                                       Sequence[Sequence[str]]]] = ()) -> str:
    """The report as one HTML string (plots: name -> PNG path, embedded as data URIs; ``sections``: tables
    ``(heading, note, head, rows)`` placed before the leaderboard, e.g. rb-demo's comparison over seeds)."""
    e = html.escape
    cells = [_cells(r) for r in board.rows]
    keep = kept_columns(cells)                       # no always-empty column (mCE on a CIFAR board)
    numeric = [COLUMNS[i][0] not in ("model", "architecture", "source", "delta") for i in keep]
    rows = []
    for r, shown in zip(board.rows, cells, strict=True):
        row = []
        for i in keep:
            k = COLUMNS[i][0]
            ci = r.get("intervals", {}).get(k)
            row.append((shown[i], r.get(k) if k != "delta" else shown[i],
                        f"{ci[0]:.2f}\u2013{ci[1]:.2f}" if ci else ""))
        rows.append(row)
    per_c = []
    for r in board.rows:
        if r.get("source") == "reported":
            continue  # the cards carry no per-corruption numbers
        vals = [r["per_corruption"].get(c) for c in board.corruptions]
        have = [v for v in vals if v is not None]
        mean = sum(have) / len(have) if have else None
        per_c.append([(r["model"], r["model"])] + [(_fmt(v), v) for v in vals] + [(_fmt(mean), mean)])
    metric = "CE (%)" if all("ce" in d["aggregates"] for d in docs) else "error (%)"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class='protocol'>Protocol: {e(board.protocol)}"
        + (" <span class='mixed'>MIXED: rows measured under different protocols are not comparable</span>"
           if board.mixed else "") + "</p>",
        *(f"<h2>{e(h)}</h2><p class='note'>{e(note)}</p>"
          + _table(head, [[(c, c) for c in r] for r in body], [i > 0 for i in range(len(head))])
          for h, note, head, body in sections),
        "<h2>Leaderboard</h2>",
        "<p class='note'>Errors in %, lower is better. Click a column head to sort. 'vs reported': measured minus "
        "the number the model's paper reports (from its zoo card).</p>",
        f"<p class='note'>{e(_uncertainty(board))}</p>",
        *(f"<p class='note'>Note: {e(n)}</p>" for n in board.notes),
        _table([COLUMNS[i][1] for i in keep], rows, numeric),
        f"<h2>Per corruption: {e(metric)}</h2>",
        _table(["model", *board.corruptions, "mean"], per_c, [False] + [True] * (len(board.corruptions) + 1),
               compact=True),
    ]
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, path in plots.items():
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(CAPTIONS.get(name, name))}</figcaption></figure>")
    parts.append("<h2>Result files</h2><ul class='note'>")
    parts += [f"<li>{e(d['model']['id'])}: {e(d.get('_path', '-'))} ({e(d.get('created', ''))}; corruption seed "
              f"{e(str(d['data'].get('seed')))}, {e(str(d['data'].get('n_images')))} images)</li>" for d in docs]
    parts.append(f"</ul><script>{JS}</script></body></html>")
    return "\n".join(parts)


def _uncertainty(board: Board) -> str:
    """What the small second line under a number is, and what it rests on."""
    measured = [r for r in board.rows if r.get("source") == "measured"]
    seeds = sorted({r.get("seed") for r in measured}, key=str)
    reps = sorted({r.get("replicates") for r in measured if r.get("replicates")})
    text = (f"Each measured row is one draw of the corruptions ({len(seeds)} corruption seed"
            f"{'s' if len(seeds) != 1 else ''} on this board: {', '.join(map(str, seeds))}). ")
    if any(r.get("intervals") for r in measured):
        text += (f"Below a number: its 95 % bootstrap interval over the images ({'/'.join(map(str, reps))} "
                 "replicates, images resampled jointly across cells); it covers the choice of test images, "
                 "not that of the corruption seed.")
    else:
        text += "These results carry no bootstrap intervals (rb-eval --bootstrap 0)."
    return text


def ordered(board: Board, docs: Sequence[dict]) -> list[dict]:
    """``docs`` in the board's rank order, so every plot gives the same model the same colour."""
    rank = {r["file"]: r["rank"] for r in board.rows}
    return sorted(docs, key=lambda d: rank.get(d.get("_path"), len(rank) + 1))


def write_html(board: Board, docs: Sequence[dict], path: str | Path, plots: dict[str, Path] | None = None,
               title: str = "Robustness report", sections: Sequence = ()) -> Path:
    """Write the report; with ``plots=None`` the plots are drawn into a temporary folder and embedded."""
    from ..generate import atomic_write
    from .plots import write_plots

    path = Path(path)
    docs = ordered(board, docs)
    if plots is None:
        with tempfile.TemporaryDirectory() as tmp:
            text = render(board, docs, write_plots(docs, tmp), title, sections)
    else:
        text = render(board, docs, plots, title, sections)
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path

"""rb-bench: throughput on this hardware, ours against the reference, side by side in one run."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table


def _table(rows, md: bool):
    sizes = sorted({r["size"] for r in rows}, reverse=True)
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    get = {(r["corruption"], r["size"]): r for r in rows}
    head = ["corruption"] + [f"{k} @{s}" for s in sizes for k in ("ref ms/img", "ours ms/img", "speed-up")]
    body = []
    for n in names:
        line = [n + (" (extra)" if get[(n, sizes[0])]["extra"] else "")]
        for s in sizes:
            r = get[(n, s)]
            ref = r["reference_ms"]
            line += [f"{ref:.3f}" if ref is not None else "-", f"{r['ours_ms']:.3f}",
                     f"{ref / r['ours_ms']:.1f}x" if ref is not None else "-"]
        body.append(line)
    foot = ["15 benchmark corruptions (sum)"]
    for s in sizes:
        sel = [get[(n, s)] for n in names if not get[(n, s)]["extra"]]
        o = sum(r["ours_ms"] for r in sel)
        if all(r["reference_ms"] is not None for r in sel):
            t = sum(r["reference_ms"] for r in sel)
            foot += [f"{t:.2f}", f"{o:.2f}", f"{t / o:.1f}x"]
        else:
            foot += ["-", f"{o:.2f}", "-"]
    body.append(foot)
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(out)
    t = Table(title="corruption throughput: ms per image (lower is better); speed-up = reference / ours")
    for h in head:
        t.add_column(h, justify="right" if h != "corruption" else "left")
    for line in body:
        t.add_row(*line)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rb-bench", description=__doc__)
    ap.add_argument("what", choices=["corruptions"], nargs="?", default="corruptions")
    ap.add_argument("--sizes", default="224,32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--corruptions", default=None, help="comma-separated subset")
    ap.add_argument("--no-reference", action="store_true", help="time ours only (no imagecorruptions needed)")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--json", help="write the raw rows here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    err = Console(stderr=True)
    from ..bench import bench_corruptions

    try:
        rows = bench_corruptions(sizes=[int(s) for s in args.sizes.split(",")], device=args.device,
                                 names=args.corruptions.split(",") if args.corruptions else None,
                                 batch=args.batch, reference=not args.no_reference, min_time=args.min_time,
                                 log=lambda r: err.print(f"[dim]{r['corruption']} @{r['size']}: ours "
                                                         f"{r['ours_ms']:.3f} ms, ref {r['reference_ms']}[/]"))
    except ImportError as e:
        err.print(f"[red]rb-bench:[/] {e} (or pass --no-reference)")
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    out = _table(rows, args.markdown)
    if args.markdown:
        print(out)
    else:
        Console().print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
